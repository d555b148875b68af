"""Starting and ending spans so that a failing span processor costs only its own record.

A span processor, exporter or sampler that raises must not lose the user's call or the rest of
its telemetry: a failing ``on_start`` gives a non-recording span, a failing ``on_end`` still lets
the metrics be recorded and the other spans end.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from ._error_recording import SentHeaders, error_description
from ._internal import report_internal_error

__all__ = ["end_span", "record_error", "set_attributes", "start_span"]


def start_span(
    tracer: Tracer,
    name: str,
    kind: SpanKind,
    attributes: dict[str, AttributeValue],
    context: Context | None = None,
    start_time: int | None = None,
) -> Span:
    try:
        return tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, start_time=start_time
        )
    except Exception:  # e.g. a span processor's on_start: the call goes on, unrecorded
        report_internal_error("span start")
        return INVALID_SPAN


def end_span(span: Span, end_time: int | None = None) -> None:
    try:
        span.end(end_time=end_time)
    except Exception:  # e.g. a span processor's on_end
        report_internal_error("span end")


def set_attributes(span: Span, attributes: dict[str, AttributeValue]) -> None:
    try:
        span.set_attributes(attributes)
    except Exception:
        report_internal_error("span attributes")


def record_error(
    span: Span, exc: BaseException | None, kind: str, sent_headers: SentHeaders | None = None
) -> None:
    """``error.type`` and status ERROR with a description that holds no header value and no
    content (see ``_error_recording``); no exception event, no message, no stack trace."""
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, error_description(exc, kind, sent_headers)))
