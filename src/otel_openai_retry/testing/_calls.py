"""The finished spans of the library, read as a user reads them in Jaeger: logical calls, each
with its attempts in order. What the verdicts reason about."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan

from .._semconv import ATTEMPT, ATTEMPTS

__all__ = ["SCOPE", "CallSpans", "group_calls", "orphan_attempts"]

SCOPE = "otel_openai_retry"
"""The instrumentation scope of every span the library makes."""


@dataclass(frozen=True)
class CallSpans:
    """One logical span and its attempt spans, in the order they started."""

    span: ReadableSpan
    attempts: list[ReadableSpan]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attempt_count(self) -> int:
        """``openai_retry.attempts``: every attempt sent, with or without a span."""
        value = (self.span.attributes or {}).get(ATTEMPTS)
        return value if isinstance(value, int) else len(self.attempts)


def _ours(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    return scope is not None and scope.name == SCOPE


def _is_attempt(span: ReadableSpan) -> bool:
    return ATTEMPT in (span.attributes or {})


def group_calls(spans: Sequence[ReadableSpan]) -> list[CallSpans]:
    """The calls that have ended, in the order they started."""
    ours = [span for span in spans if _ours(span)]
    attempts: dict[int, list[ReadableSpan]] = {}
    for span in ours:
        if _is_attempt(span) and span.parent is not None:
            attempts.setdefault(span.parent.span_id, []).append(span)
    calls = []
    for span in ours:
        if _is_attempt(span) or span.context is None:
            continue
        children = sorted(attempts.get(span.context.span_id, []), key=lambda s: s.start_time or 0)
        calls.append(CallSpans(span, children))
    return sorted(calls, key=lambda call: call.span.start_time or 0)


def orphan_attempts(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """Attempt spans whose call has not ended: a stream neither read to its end nor closed."""
    ended = {span.context.span_id for span in spans if _ours(span) and span.context is not None}
    return [
        span
        for span in spans
        if _ours(span)
        and _is_attempt(span)
        and (span.parent is None or span.parent.span_id not in ended)
    ]
