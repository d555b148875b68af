"""Per-call client overhead: bare ``AsyncOpenAI``, ours, and the official instrumentation.

Run it from the repository root, with the ``bench`` extra installed::

    .venv/bin/python benchmarks/overhead.py

It starts, for every measurement, a fresh fake OpenAI server (``python -m
otel_openai_retry.testing``) and a fresh child process of this script for one variant
(instrumentations patch globally, so variants never share a process). The child warms up, then
makes N successful chat completions at a given concurrency and reports the client's CPU time
(``time.process_time()``: every thread of the client process, the telemetry SDK's included; the
server runs elsewhere) and wall time. Variants are interleaved, their order rotated each round,
and the table shows medians.

One child alone::

    .venv/bin/python benchmarks/overhead.py --variant ours --calls 2000 --concurrency 1
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _bench_common import (
    ALL_VARIANTS,
    DEFAULT_VARIANTS,
    VARIANT_HELP,
    Variant,
    chat_call,
    fake_server,
    library_versions,
    machine_description,
    make_client,
    now,
    run_calls,
    setup_variant,
)

TARGET_US = 60.0
"""Issue 6: ours may add at most this much client CPU per successful call."""

SCRIPT = Path(__file__).resolve()


# -- one measurement, in a child process --------------------------------------------------------


class _GcTimer:
    """CPU time spent in the cyclic garbage collector (what extra allocations cost indirectly)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.runs = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started
            self.runs += 1

    def __enter__(self) -> None:
        gc.callbacks.append(self._callback)

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)


async def _measure(
    base_url: str, variants: list[Variant], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Warm every variant up, then measure them in ``args.blocks`` rounds, order rotated."""
    client = make_client(base_url)
    timing = {
        variant.name: {"cpu_s": 0.0, "wall_s": 0.0, "calls": 0.0, "gc_s": 0.0, "gc_runs": 0.0}
        for variant in variants
    }

    async def call() -> None:
        await chat_call(client)

    try:
        for variant in variants:
            variant.enable()
            await run_calls(call, args.warmup, args.concurrency)
            variant.disable()
        for block in range(args.blocks):
            shift = block % len(variants)
            calls = args.calls // args.blocks + (block < args.calls % args.blocks)
            for variant in variants[shift:] + variants[:shift]:
                variant.enable()
                gc.collect()
                gc_timer = _GcTimer()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                with gc_timer:
                    await run_calls(call, calls, args.concurrency)
                cpu1, wall1 = time.process_time(), time.perf_counter()
                timing[variant.name]["gc_s"] += gc_timer.seconds
                timing[variant.name]["gc_runs"] += gc_timer.runs
                variant.disable()
                timing[variant.name]["cpu_s"] += cpu1 - cpu0
                timing[variant.name]["wall_s"] += wall1 - wall0
                timing[variant.name]["calls"] += calls
    finally:
        await client.close()
    return timing


def child(args: argparse.Namespace) -> int:
    names = args.variant.split(",")
    variants = [setup_variant(name, enable=False) for name in names]
    server_cpu: float | None = None
    if args.base_url:
        timing = asyncio.run(_measure(args.base_url, variants, args))
    else:
        with fake_server() as server:
            before = server.cpu_seconds()
            timing = asyncio.run(_measure(server.base_url, variants, args))
            after = server.cpu_seconds()
            if before is not None and after is not None:
                server_cpu = after - before
    requests = (args.calls + args.warmup) * len(variants)
    for variant in variants:
        spans = variant.spans_exported()
        variant.shutdown()
        measured = timing[variant.name]
        result: dict[str, Any] = {
            "variant": variant.name,
            "interleaved_with": [name for name in names if name != variant.name],
            "calls": args.calls,
            "concurrency": args.concurrency,
            "cpu_s": measured["cpu_s"],
            "wall_s": measured["wall_s"],
            "cpu_us_per_call": measured["cpu_s"] / measured["calls"] * 1e6,
            "calls_per_s": measured["calls"] / measured["wall_s"],
            "gc_us_per_call": measured["gc_s"] / measured["calls"] * 1e6,
            "gc_runs_per_1000_calls": measured["gc_runs"] / measured["calls"] * 1000,
            # Warm-up and every variant included: a rough figure, to tell whether the server
            # rather than the client limits calls/s.
            "server_cpu_us_per_request": None
            if server_cpu is None
            else server_cpu / requests * 1e6,
            "spans_per_call": None if spans is None else spans / (args.calls + args.warmup),
            "notes": variant.notes,
        }
        print(json.dumps(result), flush=True)
    return 0


# -- the orchestrator --------------------------------------------------------------------------


def _child_command(
    variants: list[str], calls: int, concurrency: int, warmup: int, blocks: int
) -> list[str]:
    command = [sys.executable, str(SCRIPT), "--variant", ",".join(variants)]
    command += ["--calls", str(calls), "--concurrency", str(concurrency)]
    command += ["--warmup", str(warmup)]
    if blocks != 1:
        command += ["--blocks", str(blocks)]
    return command


def _run_child(command: list[str]) -> list[dict[str, Any]]:
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"child failed ({completed.returncode}): {shlex.join(command)}")
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


def _load() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"


def orchestrate(args: argparse.Namespace) -> int:
    variants: list[str] = list(ALL_VARIANTS if args.variants == "all" else args.variants.split(","))
    for name in variants:
        if name not in ALL_VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(ALL_VARIANTS)}")
    scenarios = [
        ("sequential", args.sequential_calls, 1),
        (f"concurrency {args.concurrency}", args.concurrent_calls, args.concurrency),
    ]
    scenarios = [scenario for scenario in scenarios if scenario[1] > 0]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    notes: set[str] = set()
    started = time.perf_counter()
    print(f"# {machine_description()}; {library_versions()}", flush=True)
    mode = (
        f"interleaved: one process per round and scenario, the variants taking turns in "
        f"{args.blocks} blocks"
        if args.interleaved
        else "a fresh process for every variant, round and scenario"
    )
    print(f"# {mode}; load average at start: {_load()}", flush=True)
    for round_index in range(args.repeats):
        # Rotate the order each round, so that no variant always runs first or last.
        shift = round_index % len(variants)
        order = variants[shift:] + variants[:shift]
        for label, calls, concurrency in scenarios:
            if args.interleaved:  # one process, the variants taking turns
                commands = [_child_command(order, calls, concurrency, args.warmup, args.blocks)]
            else:  # a fresh process for each variant
                commands = [_child_command([v], calls, concurrency, args.warmup, 1) for v in order]
            for command in commands:
                for result in _run_child(command):
                    results.setdefault((label, result["variant"]), []).append(result)
                    notes.update(result.get("notes", []))
                    if args.verbose:
                        print(
                            f"round {round_index + 1} {label:>15} {result['variant']:>15}: "
                            f"{result['cpu_us_per_call']:7.0f} µs/call "
                            f"{result['calls_per_s']:7.0f} calls/s   ({shlex.join(command)})",
                            flush=True,
                        )
    elapsed = time.perf_counter() - started
    _print_table(results, variants, scenarios, args.repeats)
    print()
    for note in sorted(notes):
        print(f"official instrumentation: {note}")
    print(f"{now()}, {elapsed:.0f} s in all; load average at the end: {_load()}")
    print("reproduce: " + shlex.join([sys.executable, *sys.argv]))
    if args.json:
        serialisable = {f"{label}|{variant}": runs for (label, variant), runs in results.items()}
        Path(args.json).write_text(json.dumps(serialisable, indent=2) + "\n", encoding="utf-8")
        print(f"raw results: {args.json}")
    return 0


def _print_table(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    variants: list[str],
    scenarios: list[tuple[str, int, int]],
    repeats: int,
) -> None:
    print()
    print(f"Client CPU per successful chat completion, median of {repeats} runs (range)")
    header = (
        f"{'scenario':<16} {'variant':<15} {'CPU µs/call':>12} {'(range)':>13} "
        f"{'Δ vs bare':>10} {'paired Δ':>9} {'calls/s':>8} {'(range)':>13} {'spans/call':>10}"
    )
    print(header)
    print("-" * len(header))
    verdicts: list[str] = []
    for label, calls, _concurrency in scenarios:
        bare_runs = results.get((label, "bare"))
        bare_cpu = statistics.median(r["cpu_us_per_call"] for r in bare_runs) if bare_runs else None
        for variant in variants:
            runs = results[label, variant]
            cpu = [r["cpu_us_per_call"] for r in runs]
            rate = [r["calls_per_s"] for r in runs]
            spans = runs[-1]["spans_per_call"]
            cpu_median = statistics.median(cpu)
            delta = paired = ""
            if bare_runs is not None and bare_cpu is not None and variant != "bare":
                delta = f"{cpu_median - bare_cpu:+.0f}"
                # Each run minus the same round's bare run (close in time: less drift).
                bare_by_round = [r["cpu_us_per_call"] for r in bare_runs]
                pairs = [a - b for a, b in zip(cpu, bare_by_round, strict=True)]
                paired = f"{statistics.median(pairs):+.0f}"
            print(
                f"{label:<16} {variant:<15} {cpu_median:>12,.0f} {_spread(cpu):>13} "
                f"{delta:>10} {paired:>9} {statistics.median(rate):>8,.0f} {_spread(rate):>13} "
                f"{'' if spans is None else f'{spans:.2f}':>10}"
            )
            if variant == "ours" and bare_cpu is not None:
                added = cpu_median - bare_cpu
                verdict = "within" if added <= TARGET_US else "OVER"
                verdicts.append(
                    f"{label} ({calls} calls): ours adds {added:.0f} µs/call (median minus "
                    f"median), {verdict} the {TARGET_US:.0f} µs target"
                )
        print()
    for verdict in verdicts:
        print(verdict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    child_group = parser.add_argument_group("one measurement (a child process)")
    child_group.add_argument(
        "--variant",
        help=f"measure in this process only this variant, or these (comma-separated, taking "
        f"turns). {VARIANT_HELP}",
    )
    child_group.add_argument(
        "--blocks",
        type=int,
        default=10,
        help="with several variants in one process: the turns each takes (default: 10)",
    )
    child_group.add_argument("--calls", type=int, default=2000, help="measured calls")
    child_group.add_argument(
        "--concurrency", type=int, default=64, help="calls in flight at once (default: 64)"
    )
    child_group.add_argument(
        "--base-url", help="an already running fake server (default: start one for this run)"
    )
    parser.add_argument(
        "--warmup", type=int, default=300, help="unmeasured calls first (default: 300)"
    )
    orchestrator = parser.add_argument_group("the whole comparison (default)")
    orchestrator.add_argument("--repeats", type=int, default=5, help="runs of each (default: 5)")
    orchestrator.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, or 'all' for {','.join(ALL_VARIANTS)} (default: %(default)s)",
    )
    orchestrator.add_argument(
        "--sequential-calls", type=int, default=2000, help="0 skips it (default: 2000)"
    )
    orchestrator.add_argument(
        "--concurrent-calls",
        type=int,
        default=4000,
        help="calls at --concurrency; 0 skips it (default: 4000)",
    )
    orchestrator.add_argument(
        "--interleaved",
        action="store_true",
        help="run the variants in one process per round, taking turns (instrument, measure a "
        "block, uninstrument): on a busy machine, load changes hit every variant alike",
    )
    orchestrator.add_argument("--json", help="also write every run's figures to this file")
    orchestrator.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = parser.parse_args(argv)
    if args.variant:
        if "," not in args.variant:
            args.blocks = 1
        return child(args)
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
