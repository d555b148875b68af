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

With an SDK provider, two more columns show what the telemetry SDK costs on its own, with nothing
of ours around it: ``SDK alone`` replays the exact telemetry one of our calls exports (captured
first with in-memory exporters: the same span names, kinds, parentage and attributes, the same
measurements on the same instrument kinds) by the cheapest use of the API, every attribute given
at span start and no context attached; ``bare SDK`` makes the same number of spans and
measurements with no attributes at all. Neither can go lower by any instrumentation that exports
this telemetry through the SDK, so ``ours`` minus ``SDK alone`` is what is left to us.

Run from the repository root::

    .venv/bin/python benchmarks/overhead_inprocess.py            # all four setups (~2 min)
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
from _replay import Exported, RequestWrapper, capture, our_request_wrapper, replayer
from openai._models import FinalRequestOptions
from openai.types.chat import ChatCompletion
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider, TracerProvider

SETUPS = ("noop", "trace", "metrics", "both")
COLUMNS = ("ours", "SDK alone", "bare SDK")
"""What each setup's row shows, added to the stand-in (the SDK-only two with an SDK provider)."""
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


def our_call(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> Callable[[], Awaitable[Any]]:
    """One call of the stand-in through our wrapper, with these providers."""
    wrapper = our_request_wrapper(tracer_provider, meter_provider)

    async def ours() -> Any:
        return await through(wrapper)

    return ours


CLIENT = openai.AsyncOpenAI(api_key="sk-bench", base_url="http://127.0.0.1:9/v1")


async def through(wrapper: RequestWrapper) -> Any:
    """The stand-in called through a wrapper of ``request``, as the SDK would call it."""
    return await wrapper(
        sdk_request, CLIENT, (ChatCompletion, options()), {"stream": False, "stream_cls": None}
    )


def options() -> FinalRequestOptions:
    return FinalRequestOptions.construct(method="post", url="/chat/completions", json_data=BODY)


async def bare() -> Any:
    """The stand-in alone, as the SDK's own ``request`` would be called without us."""
    return await sdk_request(ChatCompletion, options(), stream=False, stream_cls=None)


def replayed(replay: Callable[[], None]) -> Callable[[], Awaitable[Any]]:
    """The stand-in, then the telemetry SDK's calls for it (``_replay``), nothing of ours."""

    async def call() -> Any:
        result = await bare()
        replay()
        return result

    return call


def make_calls(setup: str, exported: Exported) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The variants measured for one setup: the stand-in alone, ours, and the SDK-only replays."""
    tracer_provider, meter_provider = providers(setup)
    calls = {"stand-in": bare, "ours": our_call(tracer_provider, meter_provider)}
    if setup != "noop":
        calls["SDK alone"] = replayed(replayer(exported, tracer_provider, meter_provider))
        calls["bare SDK"] = replayed(replayer(exported, tracer_provider, meter_provider, False))
    return calls


async def per_call_us(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - started) / calls * 1e6


async def measure(setup: str, calls: int, repeats: int) -> dict[str, list[float]]:
    """µs per call added to the stand-in, for each variant, block after block."""
    variants = make_calls(setup, await capture(through))
    for _ in range(calls // 10):  # warm-up
        for call in variants.values():
            await call()
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):  # taking turns, so that load changes hit all alike
        for name, call in variants.items():
            runs[name].append(await per_call_us(call, calls))
    stand_in = runs.pop("stand-in")
    return {"stand-in": stand_in} | {
        name: [run - base for run, base in zip(values, stand_in, strict=True)]
        for name, values in runs.items()
    }


def child(setup: str, calls: int, repeats: int, no_gc: bool) -> None:
    if no_gc:
        gc.disable()
    runs = asyncio.run(measure(setup, calls, repeats))
    cells = [f"{statistics.median(runs['stand-in']):>9.1f}"]
    for name in COLUMNS:
        values = runs.get(name)
        cells.append(f"{statistics.median(values):>+10.1f}" if values else f"{'':>10}")
    spread = f"{min(runs['ours']):.1f}-{max(runs['ours']):.1f}"
    if "SDK alone" in runs:
        beyond = [o - a for o, a in zip(runs["ours"], runs["SDK alone"], strict=True)]
        cells.append(f"{statistics.median(beyond):>+10.1f}")
    else:
        cells.append(f"{'':>10}")
    print(f"{setup:<8} {' '.join(cells)}  ({spread})", flush=True)


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
        "CPU µs per call without HTTP (the stand-in's own, then what each variant adds to it),"
        f" median of {args.repeats} blocks of {args.calls:,} calls"
        f"{', gc off' if args.no_gc else ''}; reproduce: {' '.join([sys.executable, *sys.argv])}"
    )
    print(
        f"{'setup':<8} {'stand-in':>9} {'ours':>10} {'SDK alone':>10} {'bare SDK':>10}"
        f" {'ours - SDK':>10}  (range of ours)"
    )
    for setup in args.setups:
        command = [sys.executable, __file__, "--child", setup, "--calls", str(args.calls)]
        command += ["--repeats", str(args.repeats), *(["--no-gc"] if args.no_gc else [])]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
