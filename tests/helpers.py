"""Reading the span tree the way a user reads it in Jaeger."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel_openai_retry import OpenAIRetryInstrumentor

API_KEY = "sk-test-4f9c2d7e1b8a3c6d5e0f"
"""A recognisable key, so tests can prove it never reaches telemetry."""

Instrument = Callable[..., OpenAIRetryInstrumentor]


@dataclass(frozen=True)
class Call:
    """One logical span and its attempt children, in order."""

    span: ReadableSpan
    attempts: list[ReadableSpan]

    def attr(self, name: str) -> object:
        assert self.span.attributes is not None
        return self.span.attributes.get(name)


def calls(spans: Sequence[ReadableSpan]) -> list[Call]:
    """Group finished spans into logical calls, checking the tree is well formed."""
    logical = [s for s in spans if s.kind is SpanKind.CLIENT and s.name.split(" ")[0] != "attempt"]
    result = []
    for span in sorted(logical, key=lambda s: s.start_time or 0):
        ctx = span.get_span_context()
        assert ctx is not None
        children = [s for s in spans if s.parent is not None and s.parent.span_id == ctx.span_id]
        for child in children:
            assert child.kind is SpanKind.INTERNAL
            assert child.context is not None and child.context.trace_id == ctx.trace_id
        children.sort(key=lambda s: s.start_time or 0)
        assert [c.name for c in children] == [f"attempt {i}" for i in range(1, len(children) + 1)]
        result.append(Call(span, children))
    attempt_total = sum(len(c.attempts) for c in result)
    assert attempt_total + len(result) == len(spans), "every span belongs to one logical call"
    return result


def one_call(spans: Sequence[ReadableSpan]) -> Call:
    found = calls(spans)
    assert len(found) == 1, [c.span.name for c in found]
    return found[0]


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})
