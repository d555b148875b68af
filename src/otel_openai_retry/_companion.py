"""Companion mode: another instrumentation's inference span already covers the call.

The GenAI conventions (semantic-conventions-genai, "Handling existing inference spans") ask an
instrumentation that finds an inference span active for the call to make no second span and
record no second GenAI metric, and allow it to enrich the existing span. So, beneath a peer's
span, ours adds only what the peer cannot know: one span per attempt, the retry summary on the
peer's span while it still records, and our own ``openai_retry.*`` metrics. The peer ends its
span, records the GenAI metrics and says how the call failed.

Which peers are recognised is kept here: a context key whose value a peer sets for the span of
the inference it is making (:data:`PEER_CONTEXT_KEYS`, the conventions' way), or, for peers that
set none, the instrumentation scope of the span current when the SDK's ``request`` runs
(:data:`PEER_SCOPES`). A peer that suppresses other instrumentations beneath its span
(:data:`SUPPRESSING_PEER_SCOPES`) is recognised before the suppression is honoured: what it
silences is what only we can tell it, and suppression the user set it honours itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from ._attempt_spans import AttemptSpans
from ._attributes import RequestInfo
from ._decisions import Verdict, error_type
from ._error_recording import SentHeaders
from ._hooks import RetryDetails
from ._internal import guarded
from ._observers import CallSummary
from ._spans import set_attributes
from ._telemetry import Telemetry

__all__ = [
    "PEER_CONTEXT_KEYS",
    "PEER_SCOPES",
    "SUPPRESSING_PEER_SCOPES",
    "CompanionTelemetry",
    "peer_span",
]

PEER_CONTEXT_KEYS = (
    "opentelemetry.genai.client.inference.context",
    "opentelemetry.genai.client.embedding.context",
    "opentelemetry.genai.client.fetch_response.context",
    "opentelemetry.genai.client.retrieval.context",
)
"""``opentelemetry-util-genai`` (the official OpenAI instrumentation, ``genai-openai``): one key
per kind of operation, set while its span for that operation is current."""


def _instrumentor_on(module_name: str) -> Callable[[], bool]:
    """Whether the ``OpenAIInstrumentor`` of ``module_name`` (if imported) is instrumented now."""

    def instrumented() -> bool:
        module = sys.modules.get(module_name)
        instrumentor = getattr(module, "OpenAIInstrumentor", None) if module else None
        instance = getattr(instrumentor, "_instance", None)  # a BaseInstrumentor is a singleton
        return getattr(instance, "is_instrumented_by_opentelemetry", False) is True

    return instrumented


def _logfire_on() -> bool:
    """``logfire.instrument_openai()`` marks each client class it instruments."""
    openai = sys.modules.get("openai")
    classes = (getattr(openai, "OpenAI", None), getattr(openai, "AsyncOpenAI", None))
    return any(getattr(cls, "_is_instrumented_by_logfire", False) is True for cls in classes)


def _any_on(*checks: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: any(check() for check in checks)


_OPENAI_V2_ON = _instrumentor_on("opentelemetry.instrumentation.openai_v2")

PEER_SCOPES: dict[str, Callable[[], bool]] = {
    # The official openai-v2: its own scope for some operations, and for chat the scope of the
    # util-genai handler it calls (releases of util-genai before the context keys); the
    # genai-openai instrumentation uses the same handler and sets the keys besides.
    "opentelemetry.instrumentation.openai_v2": _OPENAI_V2_ON,
    "opentelemetry.util.genai.handler": _any_on(
        _OPENAI_V2_ON, _instrumentor_on("opentelemetry.instrumentation.genai.openai")
    ),
    # OpenLLMetry (Traceloop's opentelemetry-instrumentation-openai)
    "opentelemetry.instrumentation.openai.v1": _instrumentor_on(
        "opentelemetry.instrumentation.openai"
    ),
    # OpenInference (Arize's openinference-instrumentation-openai)
    "openinference.instrumentation.openai": _instrumentor_on(
        "openinference.instrumentation.openai"
    ),
    # Logfire (logfire.instrument_openai())
    "logfire.openai": _logfire_on,
}
"""Instrumentation scope of a peer whose span is current while the SDK runs (it sets no key) →
whether that peer is instrumented now, to tell its span from others when sampling dropped it."""

SUPPRESSING_PEER_SCOPES = frozenset({"logfire.openai"})
"""Peers that suppress every other instrumentation while their span is current (Logfire's
default ``suppress_other_instrumentation=True``). Each skips its span when the user suppressed
instrumentation, so its span being current means the suppression is its own."""


def peer_span(genai: bool, suppressed: bool = False) -> Span | None:
    """The current span, when a recognised peer has made it for the call being made; ``genai``:
    the call has GenAI meaning (scope-recognised peers instrument only those); ``suppressed``:
    instrumentation is suppressed now, so only a peer that suppresses others can be current."""
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    scopes = SUPPRESSING_PEER_SCOPES if suppressed else PEER_SCOPES
    if not suppressed:
        for key in PEER_CONTEXT_KEYS:
            if otel_context.get_value(key) is not None:
                return span
    if not genai:
        return None
    scope = getattr(span, "instrumentation_scope", None)
    if scope is not None:
        return span if getattr(scope, "name", None) in scopes else None
    # A span sampling dropped says nothing of who made it; a peer that is instrumented then
    # still records its GenAI metrics, so ours must not record them a second time.
    if span.is_recording():
        return None
    return span if any(PEER_SCOPES[name]() for name in scopes) else None


class CompanionTelemetry:
    """The first observer of a call beneath a peer's inference span (see the module)."""

    __slots__ = ("_attempts", "_instruments", "_metric_attributes", "_outer")

    def __init__(
        self,
        telemetry: Telemetry,
        info: RequestInfo,
        outer: Span,
        sent_headers: SentHeaders | None = None,
    ) -> None:
        self._outer = outer
        self._instruments = telemetry.instruments
        self._metric_attributes = info.metric_attributes
        # Attempts nest under the peer's span: it is current while the SDK runs.
        self._attempts = AttemptSpans(
            telemetry.tracer,
            trace.set_span_in_context(outer),
            telemetry.every_attempt,
            sent_headers,
        )

    def paced(self, result: str, waited: float) -> None:
        self._instruments.paced(self._metric_attributes, result, waited)

    def attempt_started(self, attempt: int, throttle: float) -> None:
        self._attempts.started(attempt, throttle)

    @guarded
    def response_received(self, response: Any, stream: bool) -> None:
        """Called from the SDK's response handling, not by the call state: guarded here."""
        self._attempts.answered(response.status_code)

    def attempt_succeeded(self, attempt: int, result: Any) -> None:
        self._attempts.succeeded()

    def attempt_failed(self, attempt: int, exc: BaseException, verdict: Verdict) -> None:
        kind = error_type(exc)
        self._instruments.failed_attempt(self._metric_attributes, kind, verdict.status_code)
        self._attempts.failed(exc, kind, verdict)

    def retrying(self, details: RetryDetails, retry_state: object) -> None:
        self._attempts.retrying(details.sleep)

    def finished(self, summary: CallSummary, exc: BaseException | None) -> None:
        self._attempts.finished()
        self._instruments.retries(
            self._metric_attributes,
            max(0, summary.attempts - 1),
            summary.total_sleep + summary.total_throttle,
        )
        if self._outer.is_recording():
            set_attributes(self._outer, summary.attributes())
