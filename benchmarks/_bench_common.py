"""What the benchmark scripts share: the fake server as a process, the variants, the telemetry.

The fake server always runs in a process of its own, so that ``time.process_time()`` in the
benchmark process counts only the client's work (the SDK, the instrumentation, the telemetry
SDK's threads), never the server's.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import wrapt
from _replay import RequestWrapper, capture, replayer
from openai import AsyncOpenAI
from openai._base_client import AsyncAPIClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from otel_openai_retry._patch import _process_response_wrapper

__all__ = [
    "ALL_VARIANTS",
    "DEFAULT_VARIANTS",
    "OFFICIAL_DISTRIBUTION",
    "ServerProcess",
    "Variant",
    "chat_call",
    "fake_server",
    "rss_mb",
    "run_calls",
    "setup_variant",
]

OFFICIAL_DISTRIBUTION = "opentelemetry-instrumentation-genai-openai"
"""The official OpenTelemetry OpenAI instrumentation; it continues the package published before
as ``opentelemetry-instrumentation-openai-v2`` and supports openai < 4."""

DEFAULT_VARIANTS = ("bare", "ours", "official")
ALL_VARIANTS = (*DEFAULT_VARIANTS, "ours-unsampled", "ours-noop", "sdk-alone")
VARIANT_HELP = (
    "bare: AsyncOpenAI, nothing patched; "
    "ours: OpenAIRetryInstrumentor, SDK TracerProvider (BatchSpanProcessor, dropping exporter) "
    "and MeterProvider (periodic reader, dropping exporter); "
    f"official: {OFFICIAL_DISTRIBUTION} with the same providers; "
    "ours-unsampled: ours with the ALWAYS_OFF sampler (metrics still on); "
    "ours-noop: ours with the API's no-op tracer and meter providers (the retry loop alone); "
    "sdk-alone: the bare client, then after each call the SDK calls that export what ours exports "
    "for it (captured from its first call), with ours's providers and nothing of ours"
)

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello in five words."}]


# -- the fake server, in a separate process -------------------------------------------------------


@dataclass(frozen=True)
class ServerProcess:
    """The fake server's process: where it listens, and how much CPU it has used."""

    base_url: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux), else ``None``."""
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # After the command name: state is field 3, utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def fake_server(startup_timeout: float = 30.0) -> Iterator[ServerProcess]:
    """Run ``python -m otel_openai_retry.testing`` in its own process, for the ``with`` block."""
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_openai_retry.testing", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield ServerProcess(_read_base_url(process, startup_timeout), process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _read_base_url(process: subprocess.Popen[str], timeout: float) -> str:
    line: list[str] = []
    stdout = process.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    text = line[0].strip() if line else ""
    prefix = "listening on "
    if not text.startswith(prefix):
        raise RuntimeError(f"the fake server did not start (exit code {process.poll()}): {text!r}")
    return text[len(prefix) :]


# -- the variants ---------------------------------------------------------------------------------


class CountingSpanExporter(SpanExporter):
    """Counts the spans it is handed, then drops them: export costs next to nothing."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class DroppingMetricExporter(MetricExporter):
    """Accepts every batch of metrics and drops it."""

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


@dataclass
class Variant:
    """One configured variant: its providers, and how to switch its instrumentation on and off."""

    name: str
    span_exporter: CountingSpanExporter | None = None
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    instrumentor: Any = None
    instrument_kwargs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    enabled: bool = False

    def enable(self) -> None:
        if self.instrumentor is not None and not self.enabled:
            self.instrumentor.instrument(**self.instrument_kwargs)
        self.enabled = True

    def disable(self) -> None:
        """``uninstrument()``: the SDK's methods back as they were."""
        if self.instrumentor is not None and self.enabled:
            self.instrumentor.uninstrument()
        self.enabled = False

    def spans_exported(self) -> int | None:
        """Force the batch processor to export what it holds, and count every span so far."""
        if self.tracer_provider is None or self.span_exporter is None:
            return None
        self.tracer_provider.force_flush()
        return self.span_exporter.count

    def shutdown(self) -> None:
        self.disable()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def _sdk_providers(
    *, sampled: bool = True
) -> tuple[TracerProvider, CountingSpanExporter, MeterProvider]:
    exporter = CountingSpanExporter()
    tracer_provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    # The SDK's default interval (60 s): the collection cost is per interval, not per call.
    reader = PeriodicExportingMetricReader(DroppingMetricExporter(), export_interval_millis=60_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    return tracer_provider, exporter, meter_provider


def setup_variant(name: str, *, enable: bool = True) -> Variant:
    """Build one variant's providers and instrumentor; patch the SDK now unless ``enable`` is
    false (then ``variant.enable()`` / ``variant.disable()`` switch it)."""
    variant = Variant(name)
    if name in ("ours", "ours-unsampled", "ours-noop"):
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.trace import NoOpTracerProvider

        from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy

        if name == "ours-noop":
            tracer_provider: Any = NoOpTracerProvider()
            meter_provider: Any = NoOpMeterProvider()
        else:
            tracer_provider, exporter, meter_provider = _sdk_providers(sampled=name == "ours")
            variant.tracer_provider = tracer_provider
            variant.meter_provider = meter_provider
            variant.span_exporter = exporter
        variant.instrumentor = OpenAIRetryInstrumentor()
        variant.instrument_kwargs = {
            "tracer_provider": tracer_provider,
            "meter_provider": meter_provider,
            "policy": RetryPolicy(),
        }
    elif name == "official":
        try:
            module: Any = importlib.import_module("opentelemetry.instrumentation.genai.openai")
        except ImportError as exc:
            raise SystemExit(
                f"the official instrumentation is missing: pip install -e '.[bench]' "
                f"(it provides {OFFICIAL_DISTRIBUTION})"
            ) from exc
        tracer_provider, exporter, meter_provider = _sdk_providers()
        variant.tracer_provider = tracer_provider
        variant.meter_provider = meter_provider
        variant.span_exporter = exporter
        variant.instrumentor = module.OpenAIInstrumentor()
        variant.instrument_kwargs = {
            "tracer_provider": tracer_provider,
            "meter_provider": meter_provider,
        }
        variant.notes.append(f"{OFFICIAL_DISTRIBUTION} {_version(OFFICIAL_DISTRIBUTION)}")
    elif name == "sdk-alone":
        tracer_provider, exporter, meter_provider = _sdk_providers()
        variant.tracer_provider = tracer_provider
        variant.meter_provider = meter_provider
        variant.span_exporter = exporter
        variant.instrumentor = TelemetryReplay(tracer_provider, meter_provider)
    elif name != "bare":
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(ALL_VARIANTS)}")
    if enable:
        variant.enable()
    return variant


class TelemetryReplay:
    """The ``sdk-alone`` variant, switched on and off like an instrumentor.

    Its first call goes through our wrapper with in-memory exporters, to capture what we export
    for a call to this server; every later call is the SDK's own ``request``, then a replay of
    that telemetry through the variant's providers (``_replay``): what the telemetry SDK alone
    costs over HTTP, the floor under any instrumentation exporting what we export.
    """

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        self._providers = (tracer_provider, meter_provider)
        self._replay: Callable[[], None] | None = None
        self._capturing = False
        self._handle: Any = None

    def instrument(self) -> None:
        self._handle = wrapt.wrap_function_wrapper(AsyncAPIClient, "request", self._request)

    def uninstrument(self) -> None:
        wrapt.unwrap_object(AsyncAPIClient, "request", self._handle)

    async def _request(
        self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._replay is None and not self._capturing:
            self._capturing = True  # once: calls made meanwhile (warm-up) go bare
            results: list[Any] = []

            async def through(wrapper: RequestWrapper) -> None:
                results.append(await wrapper(wrapped, instance, args, kwargs))

            # Our response hook too, for the status code it puts on the attempt span.
            hook = wrapt.wrap_function_wrapper(
                AsyncAPIClient, "_process_response", _process_response_wrapper
            )
            try:
                self._replay = replayer(await capture(through), *self._providers)
            except BaseException:
                self._capturing = False  # the next call tries again
                raise
            finally:
                wrapt.unwrap_object(AsyncAPIClient, "_process_response", hook)
            return results[0]
        result = await wrapped(*args, **kwargs)
        if self._replay is not None:
            self._replay()
        return result


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


# -- the calls ------------------------------------------------------------------------------------


def make_client(base_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="sk-bench", base_url=base_url)


async def chat_call(client: AsyncOpenAI) -> None:
    """One successful, non-streamed chat completion, its result read as an application would."""
    completion = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0.0
    )
    if not completion.choices:
        raise RuntimeError("the fake server answered without choices")


async def stream_call(client: AsyncOpenAI, *, read: bool) -> None:
    """One streamed chat completion, read to the end, or dropped unread when ``read`` is false."""
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=16, stream=True
    )
    if read:
        async for _chunk in stream:
            pass


async def run_calls(
    call: Callable[[], Awaitable[None]],
    count: int,
    concurrency: int,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """``count`` calls, at most ``concurrency`` at once; the first failure stops everything."""
    done = 0
    started = 0

    async def worker() -> None:
        nonlocal done, started
        while started < count:
            started += 1
            await call()
            done += 1
            if on_progress is not None:
                on_progress(done)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, count))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


# -- measurements ---------------------------------------------------------------------------------


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (``VmRSS`` from ``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # peak, not current: the best there is without /proc

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_description() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = os.cpu_count()
    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"{cores} cores{', ' + model if model else ''}, Python {python}"


def library_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ("openai", "httpx2", "httpx", "tenacity", "opentelemetry-sdk", "wrapt")
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M")
