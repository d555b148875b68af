"""``RetryTelemetry``: the library instrumented for one test, its telemetry kept in memory.

What the plugin's ``openai_retry_telemetry`` fixture yields, and usable without pytest::

    with RetryTelemetry(RetryPolicy(initial_wait=0, max_wait=0)).instrumented() as telemetry:
        ...  # OpenAI calls
        spans = telemetry.spans()
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .._instrumentor import OpenAIRetryInstrumentor
from .._policy import ENABLED_ENV_VAR, RetryPolicy
from .._sleeps import is_testing, set_testing

__all__ = ["RetryTelemetry"]


class RetryTelemetry:
    """In-memory spans and metrics of the instrumented OpenAI SDK, for one test.

    Attributes:
        policy: The retry policy the library was instrumented with.
        exporter: Every finished span (``exporter.get_finished_spans()``).
        metric_reader: Every metric, read on demand (``metric_reader.get_metrics_data()``).
        tracer_provider: The provider the instrumentation was given; its spans are not global.
        meter_provider: Likewise for metrics.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])

    @contextmanager
    def instrumented(self) -> Iterator[RetryTelemetry]:
        """Instrument with this object's providers and policy, waits made instant
        (:func:`~otel_openai_retry.testing.set_testing`); all undone on exit.

        An application that instrumented already (``import otel_openai_retry.auto``) is taken
        over for the duration and instrumented again on exit as the auto import does: with the
        global providers and the policy from ``OTEL_OPENAI_RETRY_*``.
        """
        instrumentor = OpenAIRetryInstrumentor()
        taken_over = bool(instrumentor.is_instrumented_by_opentelemetry)
        if taken_over:
            instrumentor.uninstrument()
        was_instant = is_testing()
        # The master switch would make this a no-op, and the test's verdicts meaningless.
        switch = os.environ.pop(ENABLED_ENV_VAR, None)
        try:
            instrumentor.instrument(
                tracer_provider=self.tracer_provider,
                meter_provider=self.meter_provider,
                policy=self.policy,
            )
        finally:
            if switch is not None:
                os.environ[ENABLED_ENV_VAR] = switch
        set_testing(True)
        try:
            yield self
        finally:
            set_testing(was_instant)
            instrumentor.uninstrument()
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()
            if taken_over:
                instrumentor.instrument()

    def spans(self) -> list[ReadableSpan]:
        """Every span finished so far, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def metric_points(self, name: str) -> list[Any]:
        """Every data point of the metric ``name`` now (``[]`` if it was never recorded)."""
        return [point for metric, point in self.all_metric_points() if metric == name]

    def all_metric_points(self) -> list[tuple[str, Any]]:
        """Every data point of every metric now, each with its metric's name."""
        data = self.metric_reader.get_metrics_data()
        if data is None:
            return []
        return [
            (metric.name, point)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.data.data_points
        ]

    def __repr__(self) -> str:
        return f"<RetryTelemetry {len(self.exporter.get_finished_spans())} spans>"
