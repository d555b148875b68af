"""The telemetry SDK alone: one call's telemetry captured, then replayed with nothing of ours.

What an instrumentation costs can never fall below what the OpenTelemetry SDK costs to export the
same spans and measurements. To measure that floor, one call goes through our wrapper with
in-memory exporters, and what it exported (span names, kinds, parentage and attributes, and each
measurement) is replayed after every later call by the cheapest use of the API: every attribute
given at span start, no context attached. With ``with_attributes=False`` the same spans and
measurements carry no attributes at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, SpanKind, TracerProvider, set_span_in_context
from opentelemetry.util.types import AttributeValue

from otel_openai_retry import RetryPolicy
from otel_openai_retry._call_state import Strategies
from otel_openai_retry._endpoints import Endpoints
from otel_openai_retry._metrics import Instruments
from otel_openai_retry._patch import _async_request_wrapper
from otel_openai_retry._runtime import Runtime
from otel_openai_retry._telemetry import Telemetry

__all__ = ["Exported", "RequestWrapper", "capture", "our_request_wrapper", "replayer"]

RequestWrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Awaitable[Any]]
"""A wrapt-style wrapper of ``AsyncAPIClient.request``: (wrapped, instance, args, kwargs)."""


@dataclass(frozen=True)
class Exported:
    """The telemetry one call exported: spans (parents first) and measurements."""

    spans: list[tuple[str, SpanKind, dict[str, AttributeValue], int | None]]
    """Name, kind, attributes, and the index of the parent span in this list."""
    measurements: list[tuple[str, str, float, dict[str, AttributeValue]]]
    """Instrument name, ``"counter"`` or ``"histogram"``, value, attributes."""


def our_request_wrapper(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> RequestWrapper:
    """Our async ``request`` wrapper with these providers and the default policy."""
    policy = RetryPolicy()
    telemetry = Telemetry(
        tracer_provider.get_tracer("bench"), Instruments(meter_provider.get_meter("bench")), False
    )
    return _async_request_wrapper(Runtime(Strategies(policy), telemetry, Endpoints(policy)))


async def capture(one_call: Callable[[RequestWrapper], Awaitable[Any]]) -> Exported:
    """What ``one_call(wrapper)`` exports when it calls our wrapper once."""
    exporter = InMemorySpanExporter()
    tracer_provider = SdkTracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    await one_call(our_request_wrapper(tracer_provider, SdkMeterProvider(metric_readers=[reader])))
    finished = _parents_first(list(exporter.get_finished_spans()))
    ids = [span.context.span_id if span.context is not None else None for span in finished]
    spans = [
        (
            span.name,
            span.kind,
            dict(span.attributes or {}),
            ids.index(span.parent.span_id)
            if span.parent is not None and span.parent.span_id in ids
            else None,
        )
        for span in finished
    ]
    measurements = []
    metrics = reader.get_metrics_data()
    for resource_metrics in metrics.resource_metrics if metrics is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, NumberDataPoint):
                        kind, value = "counter", float(point.value)
                    elif isinstance(point, HistogramDataPoint) and point.count == 1:
                        kind, value = "histogram", point.sum
                    else:
                        raise AssertionError(f"unexpected point for {metric.name}: {point}")
                    measurements.append((metric.name, kind, value, dict(point.attributes or {})))
    return Exported(spans, measurements)


def _parents_first(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """Every span after its parent (export order is children first; start times can tie)."""
    ordered: list[ReadableSpan] = []
    while spans:
        waiting = {span.context.span_id for span in spans if span.context is not None}
        ready = [span for span in spans if not span.parent or span.parent.span_id not in waiting]
        if not ready:
            raise AssertionError("the captured spans' parentage is a cycle")
        ordered += ready
        spans = [span for span in spans if span not in ready]
    return ordered


def replayer(
    exported: Exported,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    with_attributes: bool = True,
) -> Callable[[], None]:
    """A function making the SDK calls that export ``exported`` again (see above)."""
    tracer = tracer_provider.get_tracer("bench-replay")
    meter = meter_provider.get_meter("bench-replay")
    instruments: dict[str, Any] = {}
    for name, kind, _, _ in exported.measurements:
        if name not in instruments:
            create = meter.create_counter if kind == "counter" else meter.create_histogram
            instruments[name] = create(name)
    spans = [
        (name, kind, attributes if with_attributes else None, parent)
        for name, kind, attributes, parent in exported.spans
    ]
    measurements = [
        (
            instruments[name].add if kind == "counter" else instruments[name].record,
            value,
            attributes if with_attributes else None,
        )
        for name, kind, value, attributes in exported.measurements
    ]

    def replay() -> None:
        started: list[Span] = []
        for name, kind, attributes, parent in spans:
            context = None if parent is None else set_span_in_context(started[parent])
            started.append(
                tracer.start_span(name, context=context, kind=kind, attributes=attributes)
            )
        for span in reversed(started):
            span.end()
        for record, value, attributes in measurements:
            record(value, attributes)

    return replay
