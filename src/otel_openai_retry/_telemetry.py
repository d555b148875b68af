"""Spans and metrics for one logical call: the loop's first observer.

The logical span (CLIENT) is what the caller awaited; each attempt gets an INTERNAL child span
that covers the HTTP request only. When an attempt fails and another follows, its span stays open
just long enough to receive ``retry.sleep_s`` (the sleep is chosen after the failure), then ends
at the moment the request failed, so the sleep shows as the gap between attempt spans.

For a stream, the call returns before the work is done: the logical span is handed to a
:class:`~otel_openai_retry._streams.StreamWatch`, which calls back when the stream ends. A plain
call and a stream end through the same result path (:meth:`CallTelemetry._record_result`).

Every span start, span end and measurement is guarded on its own (``_spans``, and inside
:class:`~otel_openai_retry._metrics.Instruments`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from ._attributes import RequestInfo
from ._decisions import Outcome, Verdict, error_type
from ._error_recording import SentHeaders
from ._hooks import RetryDetails
from ._internal import guarded, report_internal_error
from ._metrics import Instruments
from ._observers import CallSummary
from ._operations import Operation, ResponseFields
from ._results import parsed_body
from ._spans import end_span, record_error, set_attributes, start_span
from ._stream_hooks import install, observe_parse
from ._streams import StreamEnd, StreamWatch

__all__ = ["CallTelemetry", "Telemetry"]


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What every call's telemetry shares, fixed at instrument time."""

    tracer: Tracer
    instruments: Instruments
    capture_content: bool


_ATTEMPT_NAMES = tuple(f"attempt {n}" for n in range(1, 17))


class CallTelemetry:
    """The first observer of every call (see ``_observers``): its spans and metrics."""

    __slots__ = (
        "_attempt",
        "_attempt_end_ns",
        "_attempt_parent",
        "_attempt_started",
        "_instruments",
        "_metric_attributes",
        "_operation",
        "_result_attributes",
        "_sent_headers",
        "_started",
        "_telemetry",
        "_token",
        "_watch",
        "recording",
        "span",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        info: RequestInfo,
        body: object,
        sent_headers: SentHeaders | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._sent_headers = sent_headers
        self._instruments = telemetry.instruments
        self._metric_attributes = info.metric_attributes
        self._operation = info.operation
        self._started = time.monotonic()
        self.span: Span = start_span(
            telemetry.tracer, info.span_name, SpanKind.CLIENT, info.attributes
        )
        self.recording = self.span.is_recording()
        # Attempts nest under the logical span; if it could not be started, under whatever the
        # caller's context holds, so they stay in the caller's trace rather than start new ones.
        self._attempt_parent: Context | None = (
            trace.set_span_in_context(self.span) if self.span.get_span_context().is_valid else None
        )
        self._attempt: Span | None = None
        self._attempt_end_ns: int | None = None
        self._attempt_started = self._started
        self._result_attributes: dict[str, AttributeValue] | None = None
        self._token: object | None = None
        self._watch: StreamWatch | None = None
        if telemetry.capture_content and self.recording and info.operation is not None:
            self._capture_input(info.operation, body)

    @guarded
    def _capture_input(self, operation: Operation, body: object) -> None:
        if isinstance(body, dict):
            messages = operation.input_messages(body)
            if messages is not None:
                self.span.set_attribute("gen_ai.input.messages", messages)

    # -- attempts --------------------------------------------------------------------------

    @guarded
    def attempt_started(self, attempt: int, throttle: float) -> None:
        self._attempt_started = time.monotonic()
        attributes: dict[str, AttributeValue] = {"retry.attempt": attempt}
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        if throttle > 0:
            attributes["retry.throttle_s"] = throttle
        name = (
            _ATTEMPT_NAMES[attempt - 1] if attempt <= len(_ATTEMPT_NAMES) else f"attempt {attempt}"
        )
        span = start_span(
            self._telemetry.tracer, name, SpanKind.INTERNAL, attributes, self._attempt_parent
        )
        self._attempt = span
        # Current while the request runs, so an HTTP client span nests beneath the attempt.
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def _detach(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    @guarded
    def response_received(self, response: Any, stream: bool) -> None:
        """The SDK accepted the HTTP response of the current attempt.

        A body still unread (``stream=True``, or ``with_streaming_response`` without it) is the
        caller's to read after the call returns: the call's span ends with that body.
        """
        attempt = self._attempt
        if attempt is not None and attempt.is_recording():
            attempt.set_attribute("http.response.status_code", response.status_code)
        if stream or not response.is_closed:
            watch = StreamWatch(
                self.stream_ended,
                self._operation,
                self._telemetry.capture_content,
                self._attempt_started,
                sse=stream,
            )
            install(watch, response)
            self._watch = watch

    @guarded
    def attempt_succeeded(self, attempt: int, result: Any) -> None:
        self._detach()
        self._instruments.attempt(self._metric_attributes, None)
        span, self._attempt = self._attempt, None
        if span is not None:
            end_span(span)
        watch = self._watch
        operation = self._operation
        if watch is not None:
            observe_parse(watch, result)  # a body the caller parses later: see that parse
        elif operation is not None:
            parsed = parsed_body(result)
            if parsed is not None:
                capture = self._telemetry.capture_content and self.recording
                output = operation.output_messages(parsed) if capture else None
                self._record_result(operation.response_fields(parsed), output)

    def _record_result(self, fields: ResponseFields, output_messages: str | None) -> None:
        """Tokens now; the response's attributes go on the logical span when the call ends."""
        self._instruments.tokens(self._metric_attributes, fields.input_tokens, fields.output_tokens)
        if self.recording:
            attributes = fields.attributes()
            if output_messages is not None:
                attributes["gen_ai.output.messages"] = output_messages
            self._result_attributes = attributes

    @guarded
    def attempt_failed(self, attempt: int, exc: BaseException, verdict: Verdict) -> None:
        self._detach()
        self._attempt_end_ns = time.time_ns()
        self._watch = None  # a response that failed after all is not the call's stream
        kind = error_type(exc)
        self._instruments.attempt(self._metric_attributes, kind)
        span = self._attempt
        if span is None or not span.is_recording():
            return
        if verdict.status_code is not None:
            span.set_attribute("http.response.status_code", verdict.status_code)
        if verdict.retry_after is not None and math.isfinite(verdict.retry_after):
            span.set_attribute("retry.retry_after_s", verdict.retry_after)
        record_error(span, exc, kind, self._sent_headers)

    @guarded
    def retrying(self, details: RetryDetails, retry_state: object) -> None:
        self._instruments.sleep(self._metric_attributes, details.sleep)
        span, self._attempt = self._attempt, None
        if span is not None:
            if span.is_recording():
                span.set_attribute("retry.sleep_s", details.sleep)
            end_span(span, self._attempt_end_ns)

    # -- the end of the call ----------------------------------------------------------------

    @guarded
    def finished(self, summary: CallSummary, exc: BaseException | None) -> None:
        """The retry loop is done; the span ends now, or with the stream it returned."""
        watch, self._watch = self._watch, None
        try:
            self._detach()
            span, self._attempt = self._attempt, None
            if span is not None:  # the last attempt failed and nothing followed it
                end_span(span, self._attempt_end_ns)
            if self.recording:
                attributes = self._result_attributes or {}
                attributes["retry.attempts"] = summary.attempts
                attributes["retry.total_sleep_s"] = summary.total_sleep
                attributes["retry.outcome"] = summary.outcome.value
                self._result_attributes = None
                set_attributes(self.span, attributes)
        finally:
            if exc is None and watch is not None:
                watch.arm()  # the stream ends the span, now if it already has, or later
            else:
                self._end(exc, error_type(exc) if exc is not None else None)

    def _end(self, exc: BaseException | None, kind: str | None) -> None:
        self._instruments.operation(self._metric_attributes, time.monotonic() - self._started, kind)
        logical = self.span
        if kind is not None and self.recording:
            try:
                record_error(logical, exc, kind, self._sent_headers)
            except Exception:
                report_internal_error("span error")
        end_span(logical)

    @guarded
    def stream_ended(self, end: StreamEnd) -> None:
        """Called once by the watch when the stream returned to the caller is over."""
        try:
            if end.fields is not None:
                if end.time_to_first_chunk is not None:
                    self._instruments.time_to_first_chunk(
                        self._metric_attributes, end.time_to_first_chunk
                    )
                self._record_result(end.fields, end.output_messages)
                attributes, self._result_attributes = self._result_attributes, None
                if attributes is not None:
                    if end.time_to_first_chunk is not None:
                        attributes["gen_ai.response.time_to_first_chunk"] = end.time_to_first_chunk
                    set_attributes(self.span, attributes)
        finally:
            if end.error_type is not None and self.recording:
                # The loop said success when it returned the stream; the stream then failed.
                set_attributes(self.span, {"retry.outcome": Outcome.ERROR.value})
            self._end(end.error, end.error_type)
