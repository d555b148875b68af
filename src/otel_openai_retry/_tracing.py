"""Spans for one logical call: the CLIENT span the caller awaited and one INTERNAL span per attempt.

An attempt span covers the HTTP request only. When the attempt fails and another follows, the span
stays open just long enough to receive ``retry.sleep_s`` (the sleep is chosen after the failure),
then ends at the moment the request failed, so the sleep shows as the gap between attempt spans.
"""

from __future__ import annotations

import time
from typing import Any

from openai import BaseModel
from openai._legacy_response import LegacyAPIResponse
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from ._attributes import RequestInfo, response_attributes
from ._decisions import Verdict, error_type
from ._internal import guarded
from ._loop import CallSummary, RetryDetails

__all__ = ["CallSpans"]


class CallSpans:
    """A :class:`~otel_openai_retry._loop.CallObserver` that records spans."""

    __slots__ = (
        "_attempt",
        "_attempt_end_ns",
        "_attempt_parent",
        "_token",
        "_tracer",
        "recording",
        "span",
    )

    def __init__(self, tracer: Tracer, info: RequestInfo) -> None:
        self._tracer = tracer
        self.span: Span = tracer.start_span(
            info.span_name, kind=SpanKind.CLIENT, attributes=info.attributes
        )
        self.recording = self.span.is_recording()
        self._attempt_parent = trace.set_span_in_context(self.span)
        self._attempt: Span | None = None
        self._attempt_end_ns: int | None = None
        self._token: object | None = None

    @guarded
    def attempt_started(self, attempt: int) -> None:
        attributes: dict[str, AttributeValue] = {"retry.attempt": attempt}
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        span = self._tracer.start_span(
            f"attempt {attempt}",
            context=self._attempt_parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
        )
        self._attempt = span
        # Current while the request runs, so an HTTP client span nests beneath the attempt.
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def _detach(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    @guarded
    def response_received(self, status_code: int) -> None:
        """The SDK accepted an HTTP response for the current attempt."""
        if self._attempt is not None and self.recording:
            self._attempt.set_attribute("http.response.status_code", status_code)

    @guarded
    def attempt_succeeded(self, attempt: int, result: Any) -> None:
        self._detach()
        span, self._attempt = self._attempt, None
        if span is not None:
            span.end()
        if self.recording:
            parsed = _parsed(result)
            if parsed is not None:
                self.span.set_attributes(response_attributes(parsed))

    @guarded
    def attempt_failed(self, attempt: int, exc: BaseException, verdict: Verdict) -> None:
        self._detach()
        self._attempt_end_ns = time.time_ns()
        span = self._attempt
        if span is None or not self.recording:
            return
        if verdict.status_code is not None:
            span.set_attribute("http.response.status_code", verdict.status_code)
        if verdict.retry_after is not None:
            span.set_attribute("retry.retry_after_s", verdict.retry_after)
        _record_error(span, exc)

    @guarded
    def retrying(self, details: RetryDetails) -> None:
        span, self._attempt = self._attempt, None
        if span is not None:
            span.set_attribute("retry.sleep_s", details.sleep)
            span.end(end_time=self._attempt_end_ns)

    @guarded
    def finished(self, summary: CallSummary, exc: BaseException | None) -> None:
        self._detach()
        span, self._attempt = self._attempt, None
        if span is not None:  # the last attempt failed and nothing followed it
            span.end(end_time=self._attempt_end_ns)
        logical = self.span
        if self.recording:
            logical.set_attributes(
                {
                    "retry.attempts": summary.attempts,
                    "retry.total_sleep_s": summary.total_sleep,
                    "retry.outcome": summary.outcome.value,
                }
            )
            if exc is not None:
                _record_error(logical, exc)
        logical.end()


def _record_error(span: Span, exc: BaseException) -> None:
    kind = error_type(exc)
    span.set_attribute("error.type", kind)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, kind))


def _parsed(result: object) -> object | None:
    """The parsed model behind an SDK result, without consuming anything the caller will read."""
    if isinstance(result, BaseModel):
        return result
    if isinstance(result, LegacyAPIResponse) and not getattr(result, "_stream", False):
        # parse() caches, so the caller's own parse() gets this same object for free.
        parsed: object = result.parse()
        return parsed
    return None
