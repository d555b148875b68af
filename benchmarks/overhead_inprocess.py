"""Our per-call CPU without HTTP: our wrapper around an SDK ``request`` that answers at once.

``overhead.py`` measures what a user pays, over real loopback HTTP, where one call costs the bare
SDK ~1,400 µs and run-to-run noise is ±30 µs: too coarse to see a 3 µs change. This script calls
our async ``request`` wrapper directly with a stand-in for the SDK's ``request`` that returns a
parsed ``ChatCompletion`` at once, so the difference with calling the stand-in alone is exactly
our code (the patch, the loop, tenacity) plus the telemetry SDK it drives, and repeats agree to
within a microsecond or two. The SDK's response hook (``_process_response``) does not run here.

Telemetry setups, each in a fresh process:

- ``noop``: the API's no-op tracer and meter providers (our code and tenacity alone);
- ``trace``: an SDK ``TracerProvider`` (every span sampled, ``BatchSpanProcessor`` over an exporter
  that drops), no-op meter;
- ``metrics``: an SDK ``MeterProvider`` (in-memory reader), no-op tracer;
- ``both``: both SDK providers, as ``overhead.py``'s ``ours``.

Run from the repository root::

    .venv/bin/python benchmarks/overhead_inprocess.py            # all four setups (~1 min)
    .venv/bin/python benchmarks/overhead_inprocess.py --setups noop --no-gc
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import openai
from openai._models import FinalRequestOptions
from openai.types.chat import ChatCompletion
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider, TracerProvider

from otel_openai_retry import RetryPolicy
from otel_openai_retry._endpoints import Endpoints
from otel_openai_retry._loop import Strategies
from otel_openai_retry._metrics import Instruments
from otel_openai_retry._patch import Runtime, _async_request_wrapper
from otel_openai_retry._telemetry import Telemetry

SETUPS = ("noop", "trace", "metrics", "both")
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 16,
    "temperature": 0,
}
COMPLETION = ChatCompletion.model_validate(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
)


class DroppingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def providers(setup: str) -> tuple[TracerProvider, MeterProvider]:
    tracer_provider: TracerProvider = NoOpTracerProvider()
    meter_provider: MeterProvider = NoOpMeterProvider()
    if setup in ("trace", "both"):
        sdk_tracer_provider = SdkTracerProvider()
        sdk_tracer_provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
        tracer_provider = sdk_tracer_provider
    if setup in ("metrics", "both"):
        meter_provider = SdkMeterProvider(metric_readers=[InMemoryMetricReader()])
    return tracer_provider, meter_provider


async def sdk_request(
    cast_to: Any, options: FinalRequestOptions, *, stream: bool = False, stream_cls: Any = None
) -> ChatCompletion:
    """Stands in for ``AsyncAPIClient.request``: the parsed answer, at once."""
    return COMPLETION


def make_calls(setup: str) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]:
    """(the stand-in alone, the stand-in through our wrapper), each one call."""
    tracer_provider, meter_provider = providers(setup)
    policy = RetryPolicy()
    runtime = Runtime(
        Strategies(policy),
        Telemetry(
            tracer_provider.get_tracer("bench"),
            Instruments(meter_provider.get_meter("bench")),
            False,
        ),
        Endpoints(policy),
    )
    wrapper = _async_request_wrapper(runtime)
    client = openai.AsyncOpenAI(api_key="sk-bench", base_url="http://127.0.0.1:9/v1")

    def options() -> FinalRequestOptions:
        return FinalRequestOptions.construct(method="post", url="/chat/completions", json_data=BODY)

    async def bare() -> Any:
        return await sdk_request(ChatCompletion, options(), stream=False, stream_cls=None)

    async def ours() -> Any:
        return await wrapper(
            sdk_request, client, (ChatCompletion, options()), {"stream": False, "stream_cls": None}
        )

    return bare, ours


async def per_call_us(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - started) / calls * 1e6


async def measure(setup: str, calls: int, repeats: int) -> tuple[float, float, list[float]]:
    bare, ours = make_calls(setup)
    for _ in range(calls // 10):  # warm-up
        await bare()
        await ours()
    bare_runs, ours_runs = [], []
    for _ in range(repeats):  # taking turns, so that load changes hit both alike
        bare_runs.append(await per_call_us(bare, calls))
        ours_runs.append(await per_call_us(ours, calls))
    deltas = [o - b for o, b in zip(ours_runs, bare_runs, strict=True)]
    return statistics.median(bare_runs), statistics.median(ours_runs), deltas


def child(setup: str, calls: int, repeats: int, no_gc: bool) -> None:
    if no_gc:
        gc.disable()
    bare, ours, deltas = asyncio.run(measure(setup, calls, repeats))
    spread = f"{min(deltas):.1f}-{max(deltas):.1f}"
    print(f"{setup:<8} {bare:>9.1f} {ours:>9.1f} {ours - bare:>+9.1f}  ({spread})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--calls", type=int, default=20_000, help="per measured block")
    parser.add_argument("--repeats", type=int, default=5, help="blocks per variant (medians)")
    parser.add_argument("--no-gc", action="store_true", help="cyclic garbage collector off")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls, args.repeats, args.no_gc)
        return
    print(
        f"CPU µs per call without HTTP, median of {args.repeats} blocks of {args.calls:,} calls"
        f"{', gc off' if args.no_gc else ''}; reproduce: {' '.join([sys.executable, *sys.argv])}"
    )
    print(f"{'setup':<8} {'stand-in':>9} {'ours':>9} {'added':>9}  (range)")
    for setup in args.setups:
        command = [sys.executable, __file__, "--child", setup, "--calls", str(args.calls)]
        command += ["--repeats", str(args.repeats), *(["--no-gc"] if args.no_gc else [])]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
