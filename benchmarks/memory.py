"""Memory: does anything stay behind once a call has ended?

Run it from the repository root (``--kind bare`` for the SDK alone)::

    .venv/bin/python benchmarks/memory.py

With ``--kind`` switched on as in ``overhead.py``: 100,000 sequential calls through one client,
10,000 streams read, 1,000 streams dropped unread on a client of their own, closed afterwards.
After each phase: the RSS growth, the spans exported, the live objects of ours, tenacity's, SDK
spans and streams, ``weakref.finalize`` entries. Target: ≤ 5 MiB of growth over the calls."""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import sys
import time
import types
import weakref
from collections.abc import Callable

from _common import (
    KINDS,
    Setup,
    chat_call,
    describe_machine,
    instrument,
    make_client,
    rss_mb,
    run_calls,
    stream_call,
)

from otel_openai_retry.testing import FakeServerProcess

TARGET_MB = 5.0
CODE_KINDS = {
    types.FunctionType: "__code__",
    types.CoroutineType: "cr_code",
    types.GeneratorType: "gi_code",
    types.AsyncGeneratorType: "ag_code",
}


def group(obj: object) -> str | None:
    """The watched group of a live object, if any: ours, tenacity, SDK spans, SDK streams."""
    kind = type(obj)  # never isinstance(): the SDK's lazy proxies import what they stand for
    module = str(getattr(kind, "__module__", ""))
    if kind in CODE_KINDS:  # per-call closures and coroutines of ours
        code: types.CodeType = getattr(obj, CODE_KINDS[kind])
        name = str(getattr(obj, "__qualname__", "?"))
        mine = "/otel_openai_retry/" in code.co_filename
        local = kind is not types.FunctionType or "<locals>" in name
        return f"ours: {kind.__name__} {name}" if mine and local else None
    if module.startswith("otel_openai_retry") and ".testing" not in module:
        return f"ours: {kind.__qualname__}"
    if module.startswith("tenacity"):
        return f"tenacity: {kind.__qualname__}"
    if module.startswith("opentelemetry.sdk.trace") and "Span" in kind.__name__:
        return f"otel SDK: {kind.__qualname__}"
    if module.startswith("openai") and "Stream" in kind.__name__:
        return f"openai: {kind.__qualname__}"
    return None


def census() -> collections.Counter[str]:
    gc.collect()
    counts = collections.Counter(name for name in map(group, gc.get_objects()) if name)
    counts["weakref.finalize entries"] = len(getattr(weakref.finalize, "_registry", {}))
    return counts


class Phases:
    """RSS, spans and the census after each phase, against the phase before."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.rss, self.spans, self.counts = rss_mb(), setup.spans() or 0, census()
        self.summary: list[str] = []

    def done(self, label: str, calls: int) -> float:
        gc.collect()  # dropped streams end their spans in their finalizers
        rss, spans, counts = rss_mb(), self.setup.spans() or 0, census()
        growth = rss - self.rss
        print(
            f"\n== {label}: RSS {self.rss:.1f} -> {rss:.1f} MiB, {growth:+.2f} MiB "
            f"({growth * 2**20 / calls:+.1f} bytes/call); spans exported {spans - self.spans}"
        )
        for prefix in ("ours", "tenacity", "otel SDK", "openai", "weakref"):
            mine = [name for name in set(self.counts) | set(counts) if name.startswith(prefix)]
            total = sum(self.counts[name] for name in mine), sum(counts[name] for name in mine)
            print(f"   {total[0]:>6} -> {total[1]:>6}  {prefix} (all)")
            for name in sorted(name for name in mine if self.counts[name] != counts[name]):
                print(f"   {self.counts[name]:>6} -> {counts[name]:>6}    {name}")
        self.rss, self.spans, self.counts = rss, spans, counts
        ours = sum(counts[name] for name in counts if name.startswith("ours"))
        self.summary.append(f"{label}: RSS {growth:+.2f} MiB, {ours} live objects of ours")
        return growth


def progress(total: int) -> Callable[[int], None]:
    started, step = time.perf_counter(), max(total // 10, 1)

    def report(done: int) -> None:
        if done % step == 0:
            rate = done / (time.perf_counter() - started)
            print(f"   {done:>7} calls  {rate:5.0f} calls/s  RSS {rss_mb():.1f} MiB", flush=True)

    return report


async def run(args: argparse.Namespace, setup: Setup, base_url: str) -> list[str]:
    client = abandoning = make_client(base_url)

    async def chat() -> None:
        await chat_call(client)

    async def read() -> None:
        await stream_call(client, read=True)

    async def abandon() -> None:
        await stream_call(abandoning, read=False)

    try:
        await run_calls(chat, args.warmup, 1)
        await run_calls(read, args.warmup // 10, 1)
        phases = Phases(setup)
        if args.calls:
            print(f"\n{args.calls} sequential calls through one client", flush=True)
            await run_calls(chat, args.calls, 1, progress(args.calls))
            growth = phases.done(f"{args.calls} calls", args.calls)
            verdict = "within" if growth <= TARGET_MB else "OVER"
            phases.summary[-1] += f" ({verdict} the {TARGET_MB:.0f} MiB target)"
        if args.streams:
            await run_calls(read, args.streams, 1)
            phases.done(f"{args.streams} streams read", args.streams)
    finally:
        await client.close()
    if args.abandoned:
        abandoning = make_client(base_url)
        try:
            await run_calls(abandon, args.abandoned, 1)
        finally:
            await abandoning.close()
        phases.done(f"{args.abandoned} streams dropped unread, client closed", args.abandoned)
    return phases.summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", default="ours", choices=KINDS, help="(default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5000, help="(default: 5000)")
    parser.add_argument("--calls", type=int, default=100_000, help="(default: 100000)")
    parser.add_argument("--streams", type=int, default=10_000, help="(default: 10000)")
    parser.add_argument("--abandoned", type=int, default=1000, help="(default: 1000)")
    args = parser.parse_args()
    print(describe_machine())
    print(f"# reproduce: {' '.join([sys.executable, *sys.argv])}", flush=True)
    setup = instrument(args.kind)
    started = time.perf_counter()
    with FakeServerProcess() as server:
        summary = asyncio.run(run(args, setup, server.base_url))
    setup.shutdown()
    print(f"\nSummary ({args.kind}, {time.perf_counter() - started:.0f} s):")
    for line in summary:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
