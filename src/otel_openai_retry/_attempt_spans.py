"""The attempt spans of one logical call, each a child of the call's span.

An attempt span covers its HTTP request only; when another attempt follows, the span stays open
just long enough to receive ``openai_retry.sleep`` (the sleep is chosen after the failure), then
ends at the moment the request failed, so the sleep shows as the gap between attempt spans.

With ``OTEL_OPENAI_RETRY_ATTEMPT_SPANS=retried`` the first attempt gets no span while it runs:
most calls succeed at once, and their attempt span would only repeat the call's. Only when a
retry follows is its span made, with its true start and end times, so a retried call still
shows every attempt. While the request runs, the current span is the attempt's (or, for an
attempt without one yet, the call's), so an HTTP client span nests beneath it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from ._decisions import Verdict
from ._error_recording import SentHeaders, sent_values
from ._semconv import ATTEMPT, HEADER_ATTRIBUTE_PREFIX, RETRY_AFTER, SLEEP, THROTTLE
from ._spans import end_span, record_error, start_span

__all__ = ["AttemptSpans", "header_attributes"]

_ATTEMPT_NAMES = tuple(f"attempt {n}" for n in range(1, 17))

_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")
_HEADER_PREFIX = "x-ratelimit-"
_MAX_HEADER_VALUE = 256
"""Longer values of an allow-listed header are cut: they are hints, not payloads."""
_ECHO_MIN = 8
"""Parts of an allow-listed value this long or longer are checked against what the request
sent (a key echoed by a proxy); a rate-limit hint (``6m0s``, ``100``, ``0.5``) is shorter."""


def header_attributes(
    headers: object, sent: Callable[[], tuple[str, ...] | None] | None = None
) -> dict[str, AttributeValue]:
    """``http.response.header.<name>`` for the allow-listed rate-limit headers only: never any
    other header's value (a proxy may echo credentials in one), nor an allow-listed one that
    echoes what the request ``sent`` (its header values, URL and body; when they cannot be read,
    no value long enough to hold a key)."""
    found: dict[str, AttributeValue] = {}
    if not isinstance(headers, Mapping) and not hasattr(headers, "items"):
        return found
    sent_texts: tuple[str, ...] | None = ()
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        lowered = name.lower()
        if lowered in _HEADERS or lowered.startswith(_HEADER_PREFIX):
            kept = value[:_MAX_HEADER_VALUE]
            long = [part for part in kept.split() if len(part) >= _ECHO_MIN]
            if long and sent is not None:
                if sent_texts == ():
                    sent_texts = sent()
                if sent_texts is None or any(p in t for p in long for t in sent_texts):
                    continue
            found[HEADER_ATTRIBUTE_PREFIX + lowered] = (kept,)
    return found


class _Unmade:
    """A first attempt whose span waits to see whether a retry follows."""

    __slots__ = ("attributes", "error", "started_ns")

    def __init__(self, started_ns: int, attributes: dict[str, AttributeValue]) -> None:
        self.started_ns = started_ns
        self.attributes = attributes
        self.error: tuple[BaseException, str] | None = None


class AttemptSpans:
    __slots__ = (
        "_all",
        "_end_ns",
        "_parent",
        "_sent_headers",
        "_span",
        "_token",
        "_tracer",
        "_unmade",
    )

    def __init__(
        self,
        tracer: Tracer,
        parent: Context | None,
        every_attempt: bool,
        sent_headers: SentHeaders | None,
    ) -> None:
        self._tracer = tracer
        self._parent = parent
        self._all = every_attempt
        self._sent_headers = sent_headers
        self._span: Span | None = None
        self._unmade: _Unmade | None = None
        self._end_ns: int | None = None
        self._token: object | None = None

    def started(self, attempt: int, throttle: float) -> None:
        attributes: dict[str, AttributeValue] = {ATTEMPT: attempt}
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        if throttle > 0:
            attributes[THROTTLE] = throttle
        if attempt == 1 and not self._all:
            self._unmade = _Unmade(time.time_ns(), attributes)
            if self._parent is not None:
                self._token = otel_context.attach(self._parent)
            return
        name = (
            _ATTEMPT_NAMES[attempt - 1] if attempt <= len(_ATTEMPT_NAMES) else f"attempt {attempt}"
        )
        span = start_span(self._tracer, name, SpanKind.INTERNAL, attributes, self._parent)
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def detach(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def answered(self, status_code: int) -> None:
        span = self._span
        if span is not None:
            if span.is_recording():
                span.set_attribute("http.response.status_code", status_code)
        elif self._unmade is not None:
            self._unmade.attributes["http.response.status_code"] = status_code

    def succeeded(self) -> None:
        token, self._token = self._token, None  # ``detach``, inline on every call's path
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        self._unmade = None
        span, self._span = self._span, None
        if span is not None:
            end_span(span)

    def failed(self, exc: BaseException, kind: str, verdict: Verdict) -> None:
        self.detach()
        self._end_ns = time.time_ns()
        unmade = self._unmade
        span = self._span
        if unmade is None and (span is None or not span.is_recording()):
            return
        attributes: dict[str, AttributeValue] = {}
        if verdict.status_code is not None:
            attributes["http.response.status_code"] = verdict.status_code
        if verdict.retry_after is not None and math.isfinite(verdict.retry_after):
            attributes[RETRY_AFTER] = verdict.retry_after
        response = getattr(exc, "response", None)
        if response is not None:
            sent_headers = self._sent_headers
            attributes.update(
                header_attributes(
                    getattr(response, "headers", None),
                    lambda: sent_values(exc, sent_headers),
                )
            )
        if unmade is not None:
            unmade.attributes.update(attributes)
            unmade.error = (exc, kind)
        elif span is not None:
            span.set_attributes(attributes)
            record_error(span, exc, kind, self._sent_headers)

    def retrying(self, sleep: float) -> None:
        """Another attempt follows, after ``sleep``: the failed attempt's span ends now."""
        unmade, self._unmade = self._unmade, None
        if unmade is not None:
            unmade.attributes[SLEEP] = sleep
            made = start_span(
                self._tracer,
                _ATTEMPT_NAMES[0],
                SpanKind.INTERNAL,
                unmade.attributes,
                self._parent,
                start_time=unmade.started_ns,
            )
            if unmade.error is not None and made.is_recording():
                record_error(made, *unmade.error, self._sent_headers)
            end_span(made, self._end_ns)
            return
        span, self._span = self._span, None
        if span is not None:
            if span.is_recording():
                span.set_attribute(SLEEP, sleep)
            end_span(span, self._end_ns)

    def finished(self) -> None:
        """The call is over: the last attempt, if it failed, ends at its failure."""
        if self._token is not None:
            self.detach()
        self._unmade = None  # a single attempt: the call's span says it all
        span, self._span = self._span, None
        if span is not None:
            end_span(span, self._end_ns)
