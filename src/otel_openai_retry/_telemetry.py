"""Spans and metrics for one logical call: the loop's first observer.

The logical span (CLIENT) is what the caller awaited; its attempts are the children that
``_attempt_spans`` makes. For a stream, the call returns before the work is done: the logical
span is handed to a :class:`~otel_openai_retry._streams.StreamWatch`, which calls back when the
stream ends. A plain call and a stream end through the same result path
(:meth:`CallTelemetry._record_result`).

Beneath another instrumentation's inference span (``_companion``), that span is the call's: ours
makes none, puts the attempts beneath it and only the retry summary on it (the peer sets its own
attributes, status and end), and records the GenAI measurements the peer does not.

Every span start, span end and measurement is guarded on its own (``_spans``, and inside
:class:`~otel_openai_retry._metrics.Instruments`); the call state guards each observer method it
calls, so only the entry points it does not call (the response, the stream's end) guard
themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from ._attempt_spans import AttemptSpans
from ._attributes import RequestInfo
from ._call_tokens import total_tokens
from ._decisions import Outcome, Verdict, error_type
from ._error_recording import SentHeaders
from ._hooks import RetryDetails
from ._internal import guarded, report_internal_error
from ._metrics import Instruments
from ._observers import CallSummary
from ._operations import Operation, ResponseFields
from ._results import parsed_body
from ._semconv import OUTCOME
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
    every_attempt: bool = True
    """``OTEL_OPENAI_RETRY_ATTEMPT_SPANS=all``; else a span per attempt only for retried calls."""


class CallTelemetry:
    """The first observer of every call (see ``_observers``): its spans and metrics."""

    __slots__ = (
        "_attempt_started",
        "_attempts",
        "_charge",
        "_delay",
        "_inference",
        "_instruments",
        "_metric_attributes",
        "_operation",
        "_own",
        "_result_attributes",
        "_retries",
        "_sent_headers",
        "_started",
        "_telemetry",
        "_usage_recorded",
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
        peer: Span | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._sent_headers = sent_headers
        self._instruments = telemetry.instruments
        self._metric_attributes = info.metric_attributes
        operation = self._operation = info.operation
        self._inference = operation is not None and operation.inference
        self._started = time.monotonic()
        self._own = peer is None
        self.span: Span = (
            start_span(telemetry.tracer, info.span_name, SpanKind.CLIENT, info.attributes)
            if peer is None
            else peer
        )
        self.recording = self.span.is_recording()
        # Attempts nest under the logical span; if it could not be started, under whatever the
        # caller's context holds, so they stay in the caller's trace rather than start new ones.
        self._attempts = AttemptSpans(
            telemetry.tracer,
            trace.set_span_in_context(self.span) if self.span.get_span_context().is_valid else None,
            telemetry.every_attempt,
            sent_headers,
        )
        self._attempt_started = self._started
        self._result_attributes: dict[str, AttributeValue] | None = None
        self._watch: StreamWatch | None = None
        self._charge: Callable[[int], None] | None = None
        self._usage_recorded = False
        self._retries = 0
        self._delay = 0.0
        if telemetry.capture_content and self._own and self.recording and operation is not None:
            self._capture_input(operation, body)

    @guarded
    def _capture_input(self, operation: Operation, body: object) -> None:
        if isinstance(body, dict):
            messages = operation.input_messages(body)
            if messages is not None:
                self.span.set_attribute("gen_ai.input.messages", messages)

    # -- attempts --------------------------------------------------------------------------

    def paced(self, result: str, waited: float) -> None:
        self._instruments.paced(self._metric_attributes, result, waited)

    def attempt_started(self, attempt: int, throttle: float) -> None:
        self._attempt_started = time.monotonic()
        self._attempts.started(attempt, throttle)

    def response_received(self, response: Any, stream: bool) -> None:
        """The SDK accepted the HTTP response of the current attempt.

        A body still unread (``stream=True``, or ``with_streaming_response`` without it) is the
        caller's to read after the call returns: the call's span ends with that body. Guarded
        as ``@guarded`` would, without its extra call per attempt.
        """
        try:
            self._attempts.answered(response.status_code)
            if stream or not response.is_closed:
                watch = StreamWatch(
                    self.stream_ended,
                    self._operation,
                    self._telemetry.capture_content and self._own,
                    self._attempt_started,
                    sse=stream,
                )
                install(watch, response)
                self._watch = watch
        except Exception:
            report_internal_error("CallTelemetry.response_received")

    def attempt_succeeded(self, attempt: int, result: Any) -> None:
        self._attempts.succeeded()
        watch = self._watch
        operation = self._operation
        if watch is not None:
            observe_parse(watch, result)  # a body the caller parses later: see that parse
        elif operation is not None:
            parsed = parsed_body(result)
            if parsed is not None:
                capture = self._telemetry.capture_content and self.recording and self._own
                output = operation.output_messages(parsed) if capture else None
                self._record_result(operation.response_fields(parsed), output)

    def _record_result(self, fields: ResponseFields, output_messages: str | None) -> None:
        """Tokens now; the response's attributes go on the logical span when the call ends."""
        self._instruments.usage(self._metric_attributes, fields, self._inference)
        self._usage_recorded = fields.input_tokens is not None or fields.output_tokens is not None
        if self.recording and self._own:
            attributes = fields.attributes()
            if output_messages is not None:
                attributes["gen_ai.output.messages"] = output_messages
            self._result_attributes = attributes

    def attempt_failed(self, attempt: int, exc: BaseException, verdict: Verdict) -> None:
        self._watch = None  # a response that failed after all is not the call's stream
        kind = error_type(exc)
        self._instruments.failed_attempt(self._metric_attributes, kind, verdict.status_code)
        self._attempts.failed(exc, kind, verdict)

    def retrying(self, details: RetryDetails, retry_state: object) -> None:
        self._attempts.retrying(details.sleep)

    # -- the end of the call ----------------------------------------------------------------

    def finished(self, summary: CallSummary, exc: BaseException | None) -> None:
        """The retry loop is done; the span ends now, or with the stream it returned."""
        watch, self._watch = self._watch, None
        self._retries = max(0, summary.attempts - 1)
        self._delay = summary.total_sleep + summary.total_throttle
        try:
            self._attempts.finished()
            if self.recording and self.span.is_recording():
                attributes = self._result_attributes or {}
                attributes.update(summary.attributes())
                self._result_attributes = None
                set_attributes(self.span, attributes)
        finally:
            if exc is None and watch is not None:
                watch.arm()  # the stream ends the span, now if it already has, or later
            else:
                self._end(exc, error_type(exc) if exc is not None else None)

    def _end(self, exc: BaseException | None, kind: str | None) -> None:
        instruments = self._instruments
        attributes = self._metric_attributes
        instruments.call_ended(attributes, time.monotonic() - self._started, kind, self._inference)
        instruments.retries(attributes, self._retries, self._delay)
        if kind is not None and self._inference and not self._usage_recorded:
            instruments.no_usage(attributes)
        if not self._own:
            return  # the peer says how its call ended, and ends its span
        logical = self.span
        if kind is not None and self.recording:
            try:
                record_error(logical, exc, kind, self._sent_headers)
            except Exception:
                report_internal_error("span error")
        end_span(logical)

    def charge_usage(self, charge: Callable[[int], None]) -> None:
        """Hand ``charge`` the tokens the stream returned to the caller says it used, once it
        is over (the pacer's estimate is corrected by them)."""
        self._charge = charge

    @guarded
    def stream_ended(self, end: StreamEnd) -> None:
        """Called once by the watch when the stream returned to the caller is over."""
        try:
            charge, self._charge = self._charge, None
            fields = end.fields
            used = (
                None if fields is None else total_tokens(fields.input_tokens, fields.output_tokens)
            )
            if charge is not None and used is not None:
                charge(used)
            if end.fields is not None:
                ttfc = end.time_to_first_chunk
                if ttfc is not None:
                    self._instruments.time_to_first_chunk(
                        self._metric_attributes, ttfc, self._inference
                    )
                self._record_result(end.fields, end.output_messages)
                attributes, self._result_attributes = self._result_attributes, None
                if attributes is not None:
                    if ttfc is not None:
                        attributes["gen_ai.response.time_to_first_chunk"] = ttfc
                    set_attributes(self.span, attributes)
        finally:
            if end.error_type is not None and self.span.is_recording():
                # The loop said success when it returned the stream; the stream then failed.
                set_attributes(self.span, {OUTCOME: Outcome.ERROR.value})
            self._end(end.error, end.error_type)
