"""Memory: does anything stay behind once a call has ended?

Run it from the repository root::

    .venv/bin/python benchmarks/memory.py

The fake server runs in its own process. This process instruments the SDK as
``benchmarks/overhead.py --variant ours`` does (real SDK providers, every span sampled), then:

1. calls: a warm-up, then 100,000 sequential chat completions through one ``AsyncOpenAI``
   client, with the resident set size (``VmRSS``) every tenth of the way;
2. streams: 10,000 streamed chat completions read to the end through the same client;
3. abandoned streams: 1,000 streams created and dropped unread, on a client of their own (each
   one holds a pooled connection until the client is closed: the SDK's behaviour, not ours),
   which is closed afterwards.

After each phase: ``gc.collect()``, the RSS growth since the warm-up, the live objects of
``otel_openai_retry`` (instances, per-call closures and coroutines), of tenacity, SDK spans,
streams, ``weakref.finalize`` entries, and the object types that grew most. ``--variant bare``
runs the same without instrumentation, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import shlex
import sys
import time
import types
import weakref
from collections.abc import Callable
from typing import Any

from _bench_common import (
    ALL_VARIANTS,
    Variant,
    chat_call,
    fake_server,
    library_versions,
    machine_description,
    make_client,
    now,
    rss_mb,
    run_calls,
    setup_variant,
    stream_call,
)

TARGET_MB = 5.0
"""Issue 6: RSS after warm-up grows by no more than this over 100,000 calls."""

OUR_PACKAGE = "otel_openai_retry"
OUR_FILES = f"/{OUR_PACKAGE}/"


def _code_file(obj: object) -> str:
    code = getattr(obj, "cr_code", None) or getattr(obj, "ag_code", None)
    code = code or getattr(obj, "gi_code", None) or getattr(obj, "__code__", None)
    return code.co_filename if isinstance(code, types.CodeType) else ""


def _module_of(kind: type) -> str:
    module = getattr(kind, "__module__", "")
    return module if isinstance(module, str) else "?"


def _category(obj: object) -> str | None:
    """Which watched group a live object belongs to, if any."""
    kind = type(obj)
    module = _module_of(kind)
    if module.startswith(OUR_PACKAGE) and "testing" not in module:
        return f"ours: {kind.__qualname__}"
    # type(), never isinstance(): the SDK's lazy proxies load what they stand for when their
    # __class__ is read, and a census must not import half of openai.types.
    if kind is types.FunctionType:
        function: Any = obj
        if "<locals>" in function.__qualname__ and OUR_FILES in _code_file(obj):
            return f"ours: closure {function.__qualname__}"
        return None
    if kind in (types.CoroutineType, types.AsyncGeneratorType, types.GeneratorType):
        if OUR_FILES in _code_file(obj):
            return f"ours: {kind.__name__} {getattr(obj, '__qualname__', '?')}"
        return None
    if module.startswith("tenacity"):
        return f"tenacity: {kind.__qualname__}"
    if module.startswith("opentelemetry.sdk.trace") and "Span" in kind.__name__:
        return f"otel SDK: {kind.__qualname__}"
    if module.startswith("openai") and "Stream" in kind.__name__:
        return f"openai: {kind.__qualname__}"
    return None


class Census:
    """Live objects by type, and the watched groups, after a full collection."""

    def __init__(self) -> None:
        gc.collect()
        self.rss = rss_mb()
        objects = gc.get_objects()
        self.by_type: collections.Counter[str] = collections.Counter(
            f"{_module_of(type(o))}.{type(o).__qualname__}" for o in objects
        )
        self.watched: collections.Counter[str] = collections.Counter()
        for obj in objects:
            category = _category(obj)
            if category is not None:
                self.watched[category] += 1
        registry: Any = getattr(weakref.finalize, "_registry", {})
        self.finalizers = len(registry)
        del objects


def _report(label: str, before: Census, after: Census, calls: int, spans: int | None) -> None:
    growth = after.rss - before.rss
    print(
        f"\n== {label}: RSS {before.rss:.1f} -> {after.rss:.1f} MiB, growth {growth:+.2f} MiB "
        f"({growth * 1024 * 1024 / calls:+.1f} bytes per call); weakref.finalize entries "
        f"{before.finalizers} -> {after.finalizers}"
        + ("" if spans is None else f"; spans exported in this phase: {spans}")
    )
    names = sorted(set(before.watched) | set(after.watched))
    ours = [name for name in names if name.startswith("ours:")]
    print(
        f"   live otel_openai_retry objects: {sum(before.watched[n] for n in ours)} -> "
        f"{sum(after.watched[n] for n in ours)}"
    )
    for name in names:
        print(f"   {before.watched[name]:>7} -> {after.watched[name]:>7}  {name}")
    grown = [(after.by_type[t] - before.by_type[t], t) for t in after.by_type]
    grown = sorted((delta, t) for delta, t in grown if delta > 0)[-8:]
    if grown:
        print("   types that grew most (gc-tracked objects):")
        for delta, name in reversed(grown):
            print(f"   {delta:>+7}  {name}")


def _progress(total: int, started: float) -> Callable[[int], None]:
    step = max(total // 10, 1)

    def report(done: int) -> None:
        if done % step == 0:
            elapsed = time.perf_counter() - started
            print(
                f"   {done:>7} calls  {elapsed:6.0f} s  {done / elapsed:5.0f} calls/s  "
                f"RSS {rss_mb():.1f} MiB",
                flush=True,
            )

    return report


class Phases:
    """The census after each phase, compared with the one before it."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self.spans = variant.spans_exported()
        self.census = Census()
        self.first = self.census
        self.summary: list[str] = []

    def done(self, label: str, calls: int) -> float:
        """Report the phase that just ended; return its RSS growth in MiB."""
        gc.collect()  # dropped streams end their spans in their finalizers: before counting
        spans = self.variant.spans_exported()
        census = Census()
        exported = None if spans is None or self.spans is None else spans - self.spans
        _report(label, self.census, census, calls, exported)
        growth = census.rss - self.census.rss
        self.census, self.spans = census, spans
        return growth

    def live_ours(self, census: Census) -> int:
        return sum(n for name, n in census.watched.items() if name.startswith("ours:"))


async def run(args: argparse.Namespace, variant: Variant, base_url: str) -> list[str]:
    client = make_client(base_url)

    async def call() -> None:
        await chat_call(client)

    async def read_stream() -> None:
        await stream_call(client, read=True)

    try:
        print(f"warm-up: {args.warmup} calls, {args.warmup // 10} streams", flush=True)
        await run_calls(call, args.warmup, 1)
        await run_calls(read_stream, args.warmup // 10, 1)
        phases = Phases(variant)
        if args.calls:
            print(f"\n{args.calls} sequential calls through one client", flush=True)
            started = time.perf_counter()
            await run_calls(call, args.calls, 1, _progress(args.calls, started))
            elapsed = time.perf_counter() - started
            growth = phases.done(f"{args.calls} calls ({elapsed:.0f} s)", args.calls)
            verdict = "within" if growth <= TARGET_MB else "OVER"
            phases.summary.append(
                f"{args.calls} calls: RSS growth {growth:+.2f} MiB after warm-up "
                f"({verdict} the {TARGET_MB:.0f} MiB target), {elapsed:.0f} s"
            )
        if args.streams:
            print(f"\n{args.streams} streams read to the end, same client", flush=True)
            started = time.perf_counter()
            await run_calls(read_stream, args.streams, 1, _progress(args.streams, started))
            growth = phases.done(f"{args.streams} streams read", args.streams)
            phases.summary.append(f"{args.streams} streams read: RSS growth {growth:+.2f} MiB")
    finally:
        await client.close()

    if args.abandoned:
        print(f"\n{args.abandoned} streams dropped unread, on a client of their own", flush=True)
        abandoning = make_client(base_url)

        async def abandon() -> None:
            await stream_call(abandoning, read=False)

        try:
            await run_calls(abandon, args.abandoned, 1)
        finally:
            await abandoning.close()
        label = f"{args.abandoned} streams abandoned, then their client closed"
        growth = phases.done(label, args.abandoned)
        phases.summary.append(f"{args.abandoned} streams abandoned: RSS growth {growth:+.2f} MiB")
    phases.summary.append(
        f"live otel_openai_retry objects: {phases.live_ours(phases.first)} after warm-up, "
        f"{phases.live_ours(phases.census)} at the end"
    )
    return phases.summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant", default="ours", choices=ALL_VARIANTS, help="(default: %(default)s)"
    )
    parser.add_argument("--warmup", type=int, default=5000, help="(default: 5000)")
    parser.add_argument("--calls", type=int, default=100_000, help="(default: 100000)")
    parser.add_argument("--streams", type=int, default=10_000, help="(default: 10000)")
    parser.add_argument("--abandoned", type=int, default=1000, help="(default: 1000)")
    args = parser.parse_args(argv)

    print(f"# {machine_description()}; {library_versions()}")
    print(f"# variant {args.variant}, {now()}")
    shown = sys.argv[1:] if argv is None else argv
    print(
        "# reproduce: " + shlex.join([sys.executable, "benchmarks/memory.py", *shown]), flush=True
    )
    variant = setup_variant(args.variant)
    started = time.perf_counter()
    with fake_server() as server:
        summary = asyncio.run(run(args, variant, server.base_url))
    variant.shutdown()
    print(f"\nSummary ({args.variant}, {time.perf_counter() - started:.0f} s in all):")
    for line in summary:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
