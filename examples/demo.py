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

import openai
from opentelemetry import trace
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


def setup_tracing() -> tuple[InMemorySpanExporter, TracerProvider]:
    """The application's own provider; the auto import uses it as it is."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "demo")})
    )
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    remote = otlp_exporter()
    if remote is not None:
        provider.add_span_processor(BatchSpanProcessor(remote))
    trace.set_tracer_provider(provider)
    return memory, provider


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
            f"attempts={attributes.get('retry.attempts')} "
            f"outcome={attributes.get('retry.outcome')} "
            f"slept={format_seconds(float(attributes.get('retry.total_sleep_s', 0.0)))}"  # type: ignore[arg-type]
        )
        assert root.context is not None
        children = sorted(by_parent.get(root.context.span_id, []), key=lambda s: s.start_time or 0)
        for index, child in enumerate(children):
            branch = "└─" if index == len(children) - 1 else "├─"
            child_attributes = child.attributes or {}
            line = (
                f"  {branch} {child.name}  {format_seconds(duration(child))}  {status_text(child)}"
            )
            if "retry.sleep_s" in child_attributes:
                line += f"  → slept {format_seconds(float(child_attributes['retry.sleep_s']))}"  # type: ignore[arg-type]
            if "retry.retry_after_s" in child_attributes:
                asked = float(child_attributes["retry.retry_after_s"])  # type: ignore[arg-type]
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


async def main() -> int:
    memory, provider = setup_tracing()
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
    provider.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
