"""Ten seconds to see what otel-openai-retry does: real SDK calls, real HTTP, every retry visible.

Run with ``make demo``. It starts the embedded fake OpenAI server (no API key, no network), makes a
handful of calls through an auto-instrumented ``AsyncOpenAI`` and prints each trace as a tree.
With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the same spans are exported there too (e.g. to a
collector in front of Jaeger or Tempo).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import openai
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExporter,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry.testing import FakeOpenAIServer, Fault

# The demo's policy, short enough to finish in seconds; your environment wins if it sets them.
os.environ.setdefault("OTEL_OPENAI_RETRY_MAX_ATTEMPTS", "3")
os.environ.setdefault("OTEL_OPENAI_RETRY_INITIAL_WAIT", "0.2")
os.environ.setdefault("OTEL_OPENAI_RETRY_MAX_WAIT", "2")

USE_COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def paint(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if USE_COLOR else text


def otlp_exporter() -> SpanExporter | None:
    """The standard OTLP exporter when the user pointed us at a collector."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter()


def otlp_metric_exporter() -> MetricExporter | None:
    """Metrics go there too, unless ``OTEL_METRICS_EXPORTER=none`` (Jaeger takes only traces)."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    if os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        return None
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )

    return HTTPMetricExporter()


def setup_telemetry() -> tuple[InMemorySpanExporter, InMemoryMetricReader, list[Any]]:
    """The application's own providers; the auto import uses them as they are."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "demo")})
    provider = TracerProvider(resource=resource)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    remote = otlp_exporter()
    if remote is not None:
        provider.add_span_processor(BatchSpanProcessor(remote))
    trace.set_tracer_provider(provider)

    reader = InMemoryMetricReader()
    readers: list[Any] = [reader]
    remote_metrics = otlp_metric_exporter()
    if remote_metrics is not None:
        readers.append(PeriodicExportingMetricReader(remote_metrics))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(meter_provider)
    return memory, reader, [provider, meter_provider]


SHOWN_METRIC_ATTRIBUTES = (
    "error.type",
    "http.response.status_code",
    "gen_ai.token.type",
    "gen_ai.token.modality",
    "openai_retry.rate_limiting.result",
)
"""The attributes that tell a metric's points apart here (operation, model and server are the
same for every call of the demo)."""


def print_metrics(reader: InMemoryMetricReader) -> None:
    """A short table of what the metrics recorded over the whole demo: a histogram's count of
    observations and their sum, a counter's total."""
    data = reader.get_metrics_data()
    if data is None:
        return
    rows: list[tuple[str, str, str, str]] = []
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in sorted(scope.metrics, key=lambda m: m.name):
                unit = f" ({metric.unit})" if metric.unit else ""
                for point in metric.data.data_points:
                    shown = ", ".join(
                        f"{k}={v!s}"
                        for k, v in (point.attributes or {}).items()
                        if k in SHOWN_METRIC_ATTRIBUTES
                    )
                    if isinstance(point, HistogramDataPoint):
                        count, total = str(point.count), f"{point.sum:.3f}"
                    elif isinstance(point, NumberDataPoint):
                        count, total = "-", f"{point.value:g}"
                    else:
                        continue
                    rows.append((metric.name + unit, shown or "-", count, total))
    header = ("metric", "attributes", "count", "sum/total")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    print(paint("Metrics recorded", "1"))
    for name, shown, count, total in [header, *rows]:
        print(
            f"  {name:<{widths[0]}}  {shown:<{widths[1]}}  "
            f"{count:>{widths[2]}}  {total:>{widths[3]}}"
        )


def format_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def duration(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


def status_text(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    if span.status.is_ok:
        status = attributes.get("http.response.status_code")
        return paint("OK" + (f" {status}" if status else ""), "32")
    parts = [str(attributes.get("error.type", "error"))]
    if "http.response.status_code" in attributes:
        parts.append(str(attributes["http.response.status_code"]))
    return paint("ERROR " + " ".join(parts), "31")


def print_tree(spans: Sequence[ReadableSpan]) -> None:
    """Each logical span with its attempts beneath it, as Jaeger would draw it."""
    by_parent: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            by_parent.setdefault(span.parent.span_id, []).append(span)
    roots = [s for s in spans if s.parent is None]
    for root in sorted(roots, key=lambda s: s.start_time or 0):
        attributes = root.attributes or {}
        print(
            f"{paint(root.name, '1')}  {format_seconds(duration(root))}  {status_text(root)}  "
            f"attempts={attributes.get('openai_retry.attempts')} "
            f"outcome={attributes.get('openai_retry.outcome')} "
            f"slept={format_seconds(float(attributes.get('openai_retry.total_sleep', 0.0)))}"  # type: ignore[arg-type]
        )
        assert root.context is not None
        children = sorted(by_parent.get(root.context.span_id, []), key=lambda s: s.start_time or 0)
        for index, child in enumerate(children):
            branch = "└─" if index == len(children) - 1 else "├─"
            child_attributes = child.attributes or {}
            line = (
                f"  {branch} {child.name}  {format_seconds(duration(child))}  {status_text(child)}"
            )
            if "openai_retry.sleep" in child_attributes:
                slept = float(child_attributes["openai_retry.sleep"])  # type: ignore[arg-type]
                line += f"  → slept {format_seconds(slept)}"
            if "openai_retry.retry_after" in child_attributes:
                asked = float(child_attributes["openai_retry.retry_after"])  # type: ignore[arg-type]
                line += f" (server asked {format_seconds(asked)})"
            print(line)
        print()


async def scenario(
    title: str,
    server: FakeOpenAIServer,
    memory: InMemorySpanExporter,
    faults: Sequence[Fault],
    client: openai.AsyncOpenAI,
) -> None:
    memory.clear()
    server.reset()
    server.script(*faults)
    print(paint(f"▶ {title}", "36"))
    try:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": title}]
        )
        print(f"  caller got: {completion.choices[0].message.content!r}")
    except openai.APIError as error:
        print(f"  caller got: {type(error).__module__.split('.')[0]}.{type(error).__name__}")
    spans = memory.get_finished_spans()
    attempts = sum(1 for s in spans if s.name.startswith("attempt"))
    print(f"  server received {server.request_count} request(s); attempt spans: {attempts}\n")
    print_tree(spans)


async def stream_scenario(
    server: FakeOpenAIServer, memory: InMemorySpanExporter, client: openai.AsyncOpenAI
) -> None:
    """A stream: retried before its first chunk, its span open until the last chunk is read."""
    memory.clear()
    server.reset()
    server.script(Fault.rate_limit(retry_after_ms=200))
    print(paint("▶ A stream, rate limited once before its first chunk", "36"))
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Stream me a short story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    print(f"  caller got {len(pieces)} chunks: {''.join(pieces)!r}")
    spans = memory.get_finished_spans()
    root = next(s for s in spans if s.parent is None)
    ttfc = (root.attributes or {}).get("gen_ai.response.time_to_first_chunk")
    print(
        f"  server received {server.request_count} request(s); time to first chunk: {ttfc:.3f} s\n"
    )
    print_tree(spans)


async def main() -> int:
    memory, reader, providers = setup_telemetry()
    import otel_openai_retry.auto  # noqa: F401  (the one line an application adds)

    with FakeOpenAIServer() as server:
        client = openai.AsyncOpenAI(api_key="sk-demo-not-a-real-key", base_url=server.base_url)
        slow_client = client.with_options(timeout=0.5)
        print(f"fake OpenAI server on {server.base_url}\n")
        await scenario("A clean call", server, memory, [], client)
        await scenario(
            "Rate limited twice, honouring Retry-After",
            server,
            memory,
            [Fault.rate_limit(retry_after_ms=300), Fault.rate_limit(retry_after=1)],
            client,
        )
        await scenario(
            "Rate limited, then a 500, then success",
            server,
            memory,
            [Fault.rate_limit(retry_after_ms=300), Fault.server_error(500)],
            client,
        )
        await scenario(
            "A 500, then a request that times out, then success",
            server,
            memory,
            [Fault.server_error(500), Fault.delay(2.0)],
            slow_client,
        )
        await scenario(
            "The server keeps failing: attempts exhausted",
            server,
            memory,
            [Fault.server_error(503)] * 3,
            client,
        )
        await scenario("A bad request is not retried", server, memory, [Fault.status(400)], client)
        await stream_scenario(server, memory, client)
    print_metrics(reader)
    for provider in providers:
        provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
