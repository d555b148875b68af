"""The collector is down or hung: calls are unchanged, shutdown is bounded.

OTLP exporters (HTTP and gRPC) are pointed at a closed port (refused at once) and at a port that
accepts and never answers (every export waits for its timeout). Calls must return what they
return with a healthy collector, as fast, with nothing raised into user code; the spans still
reach every other processor; and shutting the providers down waits at most for the exporter's
timeout — once for an export already in flight, once for the final flush (that is how the SDK's
batch processor and periodic reader work: each export is bounded by the exporter's timeout).

``benchmarks/collector_down.py`` gives the latency figures; this test checks the behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import OpenAIRetryInstrumentor
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from ..helpers import FAST, async_client, calls, last_json_line, run_python, sync_client
from .collectors import Blackhole, closed_port

EXPORT_TIMEOUT_S = 0.5
CALLS_EACH = 6
"""Per client kind (sync, async): 500 then a dropped connection then success, and one 400."""
SHUTDOWN_BOUND_S = 2 * EXPORT_TIMEOUT_S + 0.5
"""An export in flight (bounded by the timeout), the final flush (bounded too), and slack."""


def otlp_exporters(protocol: str, port: int, timeout: float) -> tuple[SpanExporter, MetricExporter]:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        endpoint = f"127.0.0.1:{port}"
        return (
            GrpcSpanExporter(endpoint=endpoint, insecure=True, timeout=timeout),
            GrpcMetricExporter(endpoint=endpoint, insecure=True, timeout=timeout),
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    base = f"http://127.0.0.1:{port}"
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=timeout),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=timeout),
    )


@dataclass(frozen=True)
class Export:
    """One call of an exporter's ``export``: on which thread, and how long it took."""

    thread: int
    started: float
    ended: float

    @property
    def duration(self) -> float:
        return self.ended - self.started


class Exports:
    """The exports made through :class:`WatchedSpanExporter` and :class:`WatchedMetricExporter`:
    where and when the telemetry SDK exported, measured in the run itself."""

    def __init__(self) -> None:
        self.made: list[Export] = []
        self._lock = threading.Lock()

    def record(self, started: float) -> None:
        with self._lock:
            self.made.append(Export(threading.get_ident(), started, time.monotonic()))


class WatchedSpanExporter(SpanExporter):
    """The real OTLP span exporter, timed and located (which thread) at every export."""

    def __init__(self, inner: SpanExporter, exports: Exports) -> None:
        self._inner = inner
        self._exports = exports

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        started = time.monotonic()
        try:
            return self._inner.export(spans)
        finally:
            self._exports.record(started)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class WatchedMetricExporter(MetricExporter):
    """The real OTLP metric exporter, timed and located (which thread) at every export."""

    def __init__(self, inner: MetricExporter, exports: Exports) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._exports = exports

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        started = time.monotonic()
        try:
            return self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        finally:
            self._exports.record(started)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "collector down"}
]


def sync_workload(server: FakeOpenAIServer) -> list[float]:
    client = sync_client(server)
    latencies = []
    for _ in range(CALLS_EACH):
        server.script(Fault.server_error(500), Fault.drop())
        started = time.monotonic()
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        latencies.append(time.monotonic() - started)
        assert reply.choices[0].message.content == "Echo: collector down"
    server.script(Fault.status(400))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.close()
    return latencies


async def async_workload(server: FakeOpenAIServer) -> list[float]:
    latencies = []
    async with async_client(server) as client:
        for _ in range(CALLS_EACH):
            server.script(Fault.server_error(500), Fault.drop())
            started = time.monotonic()
            reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            latencies.append(time.monotonic() - started)
            assert reply.choices[0].message.content == "Echo: collector down"
        server.script(Fault.status(400))
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    return latencies


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.parametrize("collector", ["refused", "hung"])
def test_collector_down_changes_nothing_for_the_caller(
    protocol: str, collector: str, server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with contextlib.ExitStack() as stack:
        hole = stack.enter_context(Blackhole()) if collector == "hung" else None
        port = hole.port if hole is not None else closed_port()
        span_otlp, metric_otlp = otlp_exporters(protocol, port, EXPORT_TIMEOUT_S)
        exports = Exports()
        span_exporter = WatchedSpanExporter(span_otlp, exports)
        metric_exporter = WatchedMetricExporter(metric_otlp, exports)
        memory = InMemorySpanExporter()
        tracer_provider = TracerProvider(shutdown_on_exit=False)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(span_exporter, schedule_delay_millis=50)
        )
        tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
        reader = PeriodicExportingMetricReader(
            metric_exporter,
            export_interval_millis=100,
            export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
        )
        meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        instrumentor = OpenAIRetryInstrumentor()
        instrumentor.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, policy=FAST
        )
        try:
            latencies = sync_workload(server)
            latencies += asyncio.run(async_workload(server))
        finally:
            instrumentor.uninstrument()

        # Unchanged behaviour: every retry made, every span produced, nothing slowed down.
        expected_requests = 2 * (CALLS_EACH * 3 + 1)
        assert server.request_count == expected_requests
        found = calls(memory.get_finished_spans())
        assert len(found) == 2 * (CALLS_EACH + 1)
        assert sum(len(c.attempts) for c in found) == expected_requests
        caller = threading.get_ident()

        started = time.monotonic()
        tracer_provider.shutdown()
        tracer_shutdown = time.monotonic() - started
        started = time.monotonic()
        meter_provider.shutdown()
        meter_shutdown = time.monotonic() - started

    # No call waited for an export: none ran on the callers' thread, and (a hung collector
    # holds every export for its timeout) no call lasted as long as one.
    assert exports.made, "the exporters were used"
    assert all(export.thread != caller for export in exports.made)
    if hole is not None:
        assert max(latencies) < min(export.duration for export in exports.made), exports.made
    assert tracer_shutdown <= SHUTDOWN_BOUND_S, tracer_shutdown
    assert meter_shutdown <= SHUTDOWN_BOUND_S, meter_shutdown
    # The exporters did try (a hung collector got connections; a refused one got its failures
    # logged: a hung export may still be waiting out its timeout when shutdown returns), and the
    # library itself reported nothing.
    if hole is not None:
        assert hole.connections >= 1
    else:
        exporters = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]
        assert exporters, "the exporters should have logged their failed exports"
    assert not [r for r in caplog.records if r.name.startswith("otel_openai_retry")]


AUTO_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import openai
    import otel_openai_retry.auto
    from otel_openai_retry.testing import FakeOpenAIServer, Fault

    with FakeOpenAIServer() as server:
        client = openai.OpenAI(api_key="sk-collector-down", base_url=server.base_url)
        replies, started = [], time.monotonic()
        for _ in range(5):
            server.script(Fault.server_error(500), Fault.drop())
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            replies.append(reply.choices[0].message.content)
        calls_s = time.monotonic() - started
        requests = server.request_count
    print(json.dumps({
        "replies": replies, "requests": requests, "calls_s": calls_s, "done_at": time.time()
    }), flush=True)
    """
)
AUTO_EXPORT_TIMEOUT_S = 1.0


@pytest.mark.parametrize("collector", ["refused", "hung"])
def test_auto_import_with_the_collector_down_exits_promptly(collector: str) -> None:
    """The one-line setup, its default OTLP/HTTP exporters, and the SDK's exit-time flush."""
    with contextlib.ExitStack() as stack:
        hole = stack.enter_context(Blackhole()) if collector == "hung" else None
        port = hole.port if hole is not None else closed_port()
        done = run_python(
            "-c",
            AUTO_SCRIPT,
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                # seconds, in the Python SDK
                "OTEL_EXPORTER_OTLP_TIMEOUT": str(AUTO_EXPORT_TIMEOUT_S),
                "OTEL_BSP_SCHEDULE_DELAY": "50",
                "OTEL_METRIC_EXPORT_INTERVAL": "100",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_OPENAI_RETRY_INITIAL_WAIT": "0.005",
                "OTEL_OPENAI_RETRY_MAX_WAIT": "0.02",
            },
        )
        exited_at = time.time()
    result = last_json_line(done)
    assert result["replies"] == ["Echo: hi"] * 5
    assert result["requests"] == 15
    assert result["calls_s"] < 5 * AUTO_EXPORT_TIMEOUT_S
    shutdown = exited_at - result["done_at"]
    # Two providers (traces, metrics), each: an export in flight plus the final flush.
    assert shutdown <= 2 * (2 * AUTO_EXPORT_TIMEOUT_S) + 1.0, (shutdown, done.stderr[-2000:])
    assert "otel-openai-retry: internal error" not in done.stderr
