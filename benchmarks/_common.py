"""What the benchmarks share: how each kind is switched on, one call, the machine.

Only public APIs of ours (``overhead.py --baseline-src`` runs them against another version)."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider

KINDS = ("bare", "ours", "ours-noop", "official")
OFFICIAL = "opentelemetry-instrumentation-genai-openai"
REPO = Path(__file__).resolve().parent.parent
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello in five words."}]
PROVIDER_OVERRIDES: dict[str, Any] = {}
"""Providers that replace the SDK ones ``instrument`` gives (``instructions.py``'s no-op splits)."""


class CountingSpanExporter(SpanExporter):
    """Counts the spans it is handed, then drops them: export costs next to nothing."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


@dataclass
class Setup:
    """One kind switched on in this process, and its SDK providers if it has any."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    exporter: CountingSpanExporter = field(default_factory=CountingSpanExporter)

    def spans(self) -> int | None:
        """Export every span so far (inside the caller's measurement) and count them."""
        if self.tracer_provider is None:
            return None
        self.tracer_provider.force_flush()
        return self.exporter.count

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                provider.shutdown()


def instrument(kind: str) -> Setup:
    """Switch ``kind`` on, as an application would.

    ``ours`` and ``official`` get an SDK ``TracerProvider`` (every span sampled, a
    ``BatchSpanProcessor`` over an exporter that drops) and an SDK ``MeterProvider`` (an
    in-memory reader never collected: each measurement is aggregated, nothing exported);
    ``ours`` reads its policy from the ``OTEL_OPENAI_RETRY_*`` variables; ``ours-noop`` gets the
    API's no-op providers (the patch and the retry loop alone).
    """
    if kind not in KINDS:
        raise SystemExit(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if kind == "bare":
        return Setup()
    from otel_openai_retry import OpenAIRetryInstrumentor

    if kind == "ours-noop":
        noop = {"tracer_provider": NoOpTracerProvider(), "meter_provider": NoOpMeterProvider()}
        OpenAIRetryInstrumentor().instrument(**noop)
        return Setup()
    tracer_provider = TracerProvider()
    setup = Setup(tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()]))
    tracer_provider.add_span_processor(BatchSpanProcessor(setup.exporter))
    providers: dict[str, Any] = {
        "tracer_provider": tracer_provider,
        "meter_provider": setup.meter_provider,
    }
    providers |= PROVIDER_OVERRIDES
    if kind == "ours":
        OpenAIRetryInstrumentor().instrument(**providers)
        return setup
    try:
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
    except ImportError as exc:
        raise SystemExit(f"{OFFICIAL} is missing: pip install -e '.[bench]'") from exc
    OpenAIInstrumentor().instrument(**providers)
    return setup


def child_env(tree: Path, env: dict[str, str]) -> dict[str, str]:
    """A child's environment: ours from ``tree/src`` (if a checkout), no ``OTEL_*`` variable
    but ``env``'s."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    if (tree / "src").is_dir():
        clean["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(tree / "src"), os.environ.get("PYTHONPATH")])
        )
    return clean | env


def make_client(base_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="sk-bench", base_url=base_url)


async def chat_call(client: AsyncOpenAI) -> None:
    """One successful chat completion, its result read as an application would."""
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=16, temperature=0.0
    )
    if not completion.choices:
        raise RuntimeError("the fake server answered without choices")


async def stream_call(client: AsyncOpenAI, *, read: bool) -> None:
    """One streamed chat completion, read to the end, or dropped unread."""
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=16, stream=True
    )
    if read:
        async for _chunk in stream:
            pass


async def run_calls(
    call: Callable[[], Awaitable[None]],
    count: int,
    concurrency: int,
    on_done: Callable[[int], None] | None = None,
) -> None:
    """``count`` calls, at most ``concurrency`` at once; the first failure stops everything."""
    done = started = 0

    async def worker() -> None:
        nonlocal done, started
        while started < count:
            started += 1
            await call()
            done += 1
            if on_done is not None:
                on_done(done)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, count))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def revision(tree: Path) -> str:
    """The commit a source tree is at (``-dirty`` with uncommitted changes)."""
    done = subprocess.run(
        ["git", "-C", str(tree), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


def describe_machine() -> str:
    """One line: CPU, Python, the versions that matter, and the load."""
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        model = next((line for line in cpuinfo if line.startswith("model name")), ":?")
    versions = []
    for name in ("openai", "tenacity", "opentelemetry-sdk", "wrapt", OFFICIAL):
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"# {os.cpu_count()} x {model.split(':', 1)[1].strip()}, Python "
        f"{platform.python_version()}; {', '.join(versions)}; load average {load}"
    )
