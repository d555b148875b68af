"""Spans and metrics for one logical call: the loop's observer.

The logical span (CLIENT) is what the caller awaited; each attempt gets an INTERNAL child span
that covers the HTTP request only. When an attempt fails and another follows, its span stays open
just long enough to receive ``retry.sleep_s`` (the sleep is chosen after the failure), then ends
at the moment the request failed, so the sleep shows as the gap between attempt spans.

For a stream, the call returns before the work is done: the logical span is handed to a
:class:`~otel_openai_retry._streams.StreamWatch`, which ends it when the stream ends.

A span processor, exporter or meter that raises must cost only its own record: every span start,
span end and measurement is guarded on its own (``_start_span``, ``_end_span``, and inside
:class:`~otel_openai_retry._metrics.Instruments`), so a failing ``on_end`` still lets the metrics
be recorded and the logical span end, and a failing ``on_start`` gives a non-recording span
rather than losing the retry policy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from openai import BaseModel
from openai._legacy_response import LegacyAPIResponse
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from ._attributes import RequestInfo, ResponseFields, response_fields
from ._content import input_messages, output_messages, text_output
from ._decisions import Outcome, Verdict, error_type
from ._error_recording import error_description
from ._hooks import RetryDetails
from ._internal import guarded, report_internal_error
from ._metrics import Instruments
from ._observers import CallSummary
from ._streams import StreamWatch

__all__ = ["CallTelemetry", "Telemetry"]


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What every call's telemetry shares, fixed at instrument time."""

    tracer: Tracer
    instruments: Instruments
    capture_content: bool


_ATTEMPT_NAMES = tuple(f"attempt {n}" for n in range(1, 17))


def _start_span(
    tracer: Tracer,
    name: str,
    kind: SpanKind,
    attributes: dict[str, AttributeValue],
    context: Context | None = None,
) -> Span:
    try:
        return tracer.start_span(name, context=context, kind=kind, attributes=attributes)
    except Exception:  # e.g. a span processor's on_start: the call goes on, unrecorded
        report_internal_error("span start")
        return INVALID_SPAN


def _end_span(span: Span, end_time: int | None = None) -> None:
    try:
        span.end(end_time=end_time)
    except Exception:  # e.g. a span processor's on_end
        report_internal_error("span end")


class CallTelemetry:
    """The first observer of every call (see ``_observers``): its spans and metrics."""

    __slots__ = (
        "_attempt",
        "_attempt_end_ns",
        "_attempt_parent",
        "_attempt_started",
        "_instruments",
        "_metric_attributes",
        "_result_attributes",
        "_started",
        "_telemetry",
        "_token",
        "_watch",
        "recording",
        "span",
    )

    def __init__(self, telemetry: Telemetry, info: RequestInfo, body: object) -> None:
        self._telemetry = telemetry
        self._instruments = telemetry.instruments
        self._metric_attributes = info.metric_attributes
        self._started = time.monotonic()
        self.span: Span = _start_span(
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
        if telemetry.capture_content and self.recording:
            self._capture_input(info.operation, body)

    @guarded
    def _capture_input(self, operation: str | None, body: object) -> None:
        messages = input_messages(operation, body)
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
        span = _start_span(
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
                self, self._attempt_started, self._telemetry.capture_content, sse=stream
            )
            watch.install(response)
            self._watch = watch

    @guarded
    def attempt_succeeded(self, attempt: int, result: Any) -> None:
        self._detach()
        self._instruments.attempt(self._metric_attributes, None)
        span, self._attempt = self._attempt, None
        if span is not None:
            _end_span(span)
        watch = self._watch
        if watch is None:
            parsed = _parsed(result)
            if parsed is not None:
                self._record_result(parsed)
        elif not watch.sse:  # the caller parses the body later: see that parse
            watch.observe_parse(result)

    def _record_result(self, parsed: object) -> None:
        """Tokens now; the response's attributes go on the logical span when the call ends."""
        fields = response_fields(parsed)
        self._instruments.tokens(self._metric_attributes, fields.input_tokens, fields.output_tokens)
        if self.recording:
            attributes = fields.attributes()
            if self._telemetry.capture_content:
                messages = output_messages(parsed)
                if messages is not None:
                    attributes["gen_ai.output.messages"] = messages
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
        _record_error(span, exc, kind)

    @guarded
    def retrying(self, details: RetryDetails, retry_state: object) -> None:
        self._instruments.sleep(self._metric_attributes, details.sleep)
        span, self._attempt = self._attempt, None
        if span is not None:
            if span.is_recording():
                span.set_attribute("retry.sleep_s", details.sleep)
            _end_span(span, self._attempt_end_ns)

    # -- the end of the call ----------------------------------------------------------------

    @guarded
    def finished(self, summary: CallSummary, exc: BaseException | None) -> None:
        """The retry loop is done; the span ends now, or with the stream it returned."""
        watch, self._watch = self._watch, None
        try:
            self._detach()
            span, self._attempt = self._attempt, None
            if span is not None:  # the last attempt failed and nothing followed it
                _end_span(span, self._attempt_end_ns)
            if self.recording:
                attributes = self._result_attributes or {}
                attributes["retry.attempts"] = summary.attempts
                attributes["retry.total_sleep_s"] = summary.total_sleep
                attributes["retry.outcome"] = summary.outcome.value
                self._result_attributes = None
                self._set_attributes(attributes)
        finally:
            if exc is None and watch is not None:
                watch.arm()  # the stream ends the span, now if it already has, or later
            else:
                self._end(exc, error_type(exc) if exc is not None else None)

    def _set_attributes(self, attributes: dict[str, AttributeValue]) -> None:
        try:
            self.span.set_attributes(attributes)
        except Exception:
            report_internal_error("span attributes")

    def _end(self, exc: BaseException | None, kind: str | None) -> None:
        self._instruments.operation(self._metric_attributes, time.monotonic() - self._started, kind)
        logical = self.span
        if kind is not None and self.recording:
            try:
                _record_error(logical, exc, kind)
            except Exception:
                report_internal_error("span error")
        _end_span(logical)

    @guarded
    def stream_ended(self, watch: StreamWatch) -> None:
        """Called once by the watch when the stream returned to the caller is over.

        The span ends here whatever the summary does: a chunk no reader expected costs at most
        the summary's attributes, never the span.
        """
        try:
            if watch.parsed is not None:  # a lazily read body, parsed by the caller
                self._record_result(watch.parsed)
                attributes = self._result_attributes
                self._result_attributes = None
                if attributes:
                    self._set_attributes(attributes)
            else:
                self._summarise_stream(watch)
        finally:
            error = watch.error
            kind = watch.error_type or (error_type(error) if error is not None else None)
            if kind is not None and self.recording:
                # The loop said success when it returned the stream; the stream then failed.
                self._set_attributes({"retry.outcome": Outcome.ERROR.value})
            self._end(error, kind)

    def _summarise_stream(self, watch: StreamWatch) -> None:
        summary = watch.summary
        instruments = self._instruments
        if watch.time_to_first_chunk is not None:
            instruments.time_to_first_chunk(self._metric_attributes, watch.time_to_first_chunk)
        instruments.tokens(self._metric_attributes, summary.input_tokens, summary.output_tokens)
        if self.recording:
            attributes = ResponseFields(
                summary.response_id,
                summary.response_model,
                tuple(summary.reasons[i] for i in sorted(summary.reasons)),
                summary.input_tokens,
                summary.output_tokens,
            ).attributes()
            if watch.time_to_first_chunk is not None:
                attributes["gen_ai.response.time_to_first_chunk"] = watch.time_to_first_chunk
            if summary.texts is not None:
                output = text_output(
                    {i: "".join(parts) for i, parts in summary.texts.items()}, summary.reasons
                )
                if output is not None:
                    attributes["gen_ai.output.messages"] = output
            self._set_attributes(attributes)


def _record_error(span: Span, exc: BaseException | None, kind: str) -> None:
    """``error.type`` and status ERROR with a description that holds no header value and no
    content (see ``_error_recording``); no exception event, no message, no stack trace."""
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, error_description(exc, kind)))


def _parsed(result: object) -> object | None:
    """The parsed model behind an SDK result, without consuming anything the caller will read.

    A raw response's ``parse()`` also runs the caller's strict validation (``parse()`` with a
    ``response_format`` model, ``LengthFinishReasonError``, ...). Its failure is the caller's, not
    an internal error of ours: it is not logged or raised here, nothing is cached, so their own
    ``parse()`` raises it again; the span still gets the body's ids and usage, read as JSON.
    """
    if isinstance(result, BaseModel):
        return result
    if isinstance(result, LegacyAPIResponse) and not getattr(result, "_stream", False):
        try:
            # parse() caches, so the caller's own parse() gets this same object for free.
            parsed: object = result.parse()
        except Exception:
            return _body_json(result)
        return parsed
    return None


def _body_json(result: LegacyAPIResponse[Any]) -> object | None:
    try:
        body: object = result.http_response.json()
    except Exception:  # not JSON either: the caller's parse() will say so
        return None
    return body
