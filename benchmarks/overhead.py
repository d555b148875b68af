"""Client CPU per successful call: the bare SDK, ours, and the official instrumentation, one run.

Run it from the repository root, with the ``bench`` extra (docs/performance.md has the details)::

    .venv/bin/python benchmarks/overhead.py --interleaved
    .venv/bin/python benchmarks/overhead.py --interleaved --baseline-src ../baseline

The fake server and every variant run in processes of their own (``time.process_time()`` counts
one client, its telemetry threads included). Per scenario the variants warm up, then take turns
making blocks of calls, the order rotated each block (``--blocks`` each with ``--interleaved``).
Medians over blocks; Δ: each block minus the same turn's bare block; ratio: Δ / official's Δ.
``--baseline-src DIR`` runs ours again from ``DIR/src`` and prints the paired difference. One
variant alone, e.g. under a profiler::

    py-spy record -o ours.svg -- .venv/bin/python benchmarks/overhead.py --child ours --calls 20000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import select
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from _common import (
    KINDS,
    REPO,
    chat_call,
    child_env,
    describe_machine,
    instrument,
    make_client,
    revision,
    run_calls,
)

SCRIPT = Path(__file__).resolve()
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "bare": ("bare", {}),
    "ours": ("ours", {}),
    "ours-retried": ("ours", {"OTEL_OPENAI_RETRY_ATTEMPT_SPANS": "retried"}),
    "ours-noop": ("ours-noop", {}),
    "official": ("official", {}),
}
"""Variant name: the kind switched on (``_common.instrument``) and the child's environment."""
TARGET_RATIOS = {"ours": 0.9, "ours-retried": 0.6}
"""What ours may add per call, as a fraction of what the official instrumentation adds."""
BLOCK_TIMEOUT_S = 300.0
"""A child that has not answered a block by then is stuck: the run stops."""


# -- the child: one variant, making the blocks of calls it is told to --------------------------


def child(args: argparse.Namespace, alone: bool) -> int:
    setup = instrument(args.child)
    loop = asyncio.new_event_loop()
    client = make_client(args.base_url)

    def block(calls: int, concurrency: int) -> dict[str, Any]:
        spans_before = setup.spans()
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        loop.run_until_complete(run_calls(lambda: chat_call(client), calls, concurrency))
        wall = time.perf_counter() - wall
        spans = setup.spans()  # the batch processor's export inside the measurement
        cpu = time.process_time() - cpu
        if spans is not None and spans_before is not None:
            spans -= spans_before
        return {"cpu_s": cpu, "wall_s": wall, "spans": spans}

    try:
        if alone:  # a warm-up, one block, then exit
            block(args.warmup, args.concurrency)
            print(json.dumps(block(args.calls, args.concurrency)))
            return 0
        import otel_openai_retry

        print(json.dumps({"ready": otel_openai_retry.__file__}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            print(json.dumps(block(command["calls"], command["concurrency"])), flush=True)
        return 0
    finally:
        loop.run_until_complete(client.close())
        setup.shutdown()


# -- the orchestrator ---------------------------------------------------------------------------


@dataclass
class Child:
    """A variant's process, waiting for blocks."""

    name: str
    process: subprocess.Popen[str]
    module: str = ""

    def send(self, calls: int, concurrency: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"calls": calls, "concurrency": concurrency}) + "\n")
        self.process.stdin.flush()
        return self.receive()

    def receive(self) -> dict[str, Any]:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], BLOCK_TIMEOUT_S)
        line = stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise SystemExit(f"{self.name}: no answer (exit code {self.process.returncode})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        try:
            self.process.communicate(timeout=30)  # closes its stdin: the child ends
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


def start(name: str, base_url: str, baseline: Path | None) -> Child:
    plain, _, tree = name.partition("@")
    if plain not in VARIANTS or tree not in ("", "baseline"):
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)} (+ @baseline)")
    if tree and baseline is None:
        raise SystemExit(f"{name} needs --baseline-src")
    kind, env = VARIANTS[plain]
    root = baseline if tree and baseline is not None else REPO
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--child", kind, "--base-url", base_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(root, env),
    )
    started = Child(name, process)
    started.module = started.receive()["ready"]
    return started


@dataclass
class Runs:
    """Per variant, per block: µs per call, calls/s; spans per call."""

    cpu: dict[str, list[float]] = field(default_factory=dict)
    rate: dict[str, list[float]] = field(default_factory=dict)
    spans: dict[str, float | None] = field(default_factory=dict)

    def add(self, name: str, calls: int, result: dict[str, Any]) -> None:
        self.cpu.setdefault(name, []).append(result["cpu_s"] / calls * 1e6)
        self.rate.setdefault(name, []).append(calls / result["wall_s"])
        spans = result["spans"]
        self.spans[name] = None if spans is None else spans / calls

    def delta(self, name: str, against: str = "bare") -> list[float]:
        return [a - b for a, b in zip(self.cpu[name], self.cpu[against], strict=True)]


def measure(args: argparse.Namespace, names: list[str]) -> dict[str, Runs]:
    from otel_openai_retry.testing import FakeServerProcess

    scenarios = [("sequential", args.sequential_calls, 1)]
    scenarios += [(f"concurrency {args.concurrency}", args.concurrent_calls, args.concurrency)]
    results = {label: Runs() for label, calls, _ in scenarios if calls > 0}
    blocks = args.blocks if args.interleaved else 1
    with FakeServerProcess() as server:
        for repeat in range(args.repeats):
            children = [start(name, server.base_url, args.baseline_src) for name in names]
            try:
                if repeat == 0:
                    for each in children:
                        print(f"# {each.name}: {each.module}", flush=True)
                for label, calls, concurrency in scenarios:
                    if calls <= 0:
                        continue
                    for each in children:
                        each.send(args.warmup, concurrency)
                    for block in range(blocks):
                        shift = (block + repeat) % len(children)
                        size = calls // blocks + (block < calls % blocks)
                        for each in children[shift:] + children[:shift]:
                            results[label].add(each.name, size, each.send(size, concurrency))
                        server.reset()  # the server's journal stays small
            finally:
                for each in children:
                    each.stop()
            print(f"# repeat {repeat + 1}/{args.repeats} done", flush=True)
    return results


def report(results: dict[str, Runs], names: list[str]) -> None:
    print(
        "\nClient CPU µs per successful chat completion: median over blocks (range); Δ vs bare "
        "and ratio = Δ / official's Δ, both paired medians"
    )
    header = (
        f"{'scenario':<15} {'variant':<22} {'CPU µs':>7} {'(range)':>13} {'Δ vs bare':>9} "
        f"{'ratio':>6} {'target':>12} {'calls/s':>7} {'spans':>5}"
    )
    print(header + "\n" + "-" * len(header))
    for label, runs in results.items():
        official = statistics.median(runs.delta("official")) if "official" in runs.cpu else None
        for name in names:
            cpu = runs.cpu[name]
            delta = ratio = target = ""
            if name != "bare" and "bare" in runs.cpu:
                added = statistics.median(runs.delta(name))
                delta = f"{added:+.0f}"
                kind = VARIANTS[name.partition("@")[0]][0]
                if official and kind.startswith("ours"):
                    ratio = f"{added / official:.2f}"
                    limit = TARGET_RATIOS.get(name.partition("@")[0])
                    if limit is not None:
                        target = f"≤{limit:.1f} " + ("met" if added / official <= limit else "OVER")
            spans = runs.spans[name]
            print(
                f"{label:<15} {name:<22} {statistics.median(cpu):>7,.0f} "
                f"{f'{min(cpu):,.0f}-{max(cpu):,.0f}':>13} {delta:>9} {ratio:>6} {target:>12} "
                f"{statistics.median(runs.rate[name]):>7,.0f} "
                f"{'' if spans is None else f'{spans:.2f}':>5}"
            )
        for name in names:
            plain, _, tree = name.partition("@")
            if tree and plain in runs.cpu:
                delta_values = runs.delta(plain, against=name)
                added = statistics.median(delta_values)
                base = statistics.median(runs.cpu[name])
                print(
                    f"{label}: {plain} minus {name}, paired: {added:+.0f} µs/call "
                    f"({added / base:+.1%}; blocks {min(delta_values):+.0f} to "
                    f"{max(delta_values):+.0f})"
                )
        print()


def orchestrate(args: argparse.Namespace) -> int:
    names = [name for name in args.variants.split(",") if name]
    if args.baseline_src is not None and not any("@" in name for name in names):
        names.append("ours@baseline")
    if "bare" not in names:
        names.insert(0, "bare")
    print(describe_machine())
    trees = [("this tree", REPO)] + ([("baseline", args.baseline_src)] if args.baseline_src else [])
    print("# " + "; ".join(f"{label} {path} at {revision(path)}" for label, path in trees))
    started = time.perf_counter()
    results = measure(args, names)
    report(results, names)
    command = shlex.join([sys.executable, *sys.argv])
    print(f"{time.perf_counter() - started:.0f} s; reproduce: {command}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variants",
        default="bare,ours,ours-retried,ours-noop,official",
        help=f"comma-separated, of {', '.join(VARIANTS)}, each optionally @baseline "
        "(default: %(default)s; bare is always added)",
    )
    parser.add_argument(
        "--add-variant",
        action="append",
        default=[],
        metavar="'NAME=KIND [VAR=VALUE ...]'",
        help=f"define a variant: a kind ({', '.join(KINDS)}) and variables for its process, "
        "e.g. 'ours-nobudget=ours OTEL_OPENAI_RETRY_BUDGET=0'; then name it in --variants",
    )
    parser.add_argument(
        "--baseline-src",
        type=lambda text: Path(text).resolve(),
        metavar="DIR",
        help="another source tree (with src/): adds ours@baseline, run from DIR/src",
    )
    parser.add_argument("--interleaved", action="store_true", help="take turns in --blocks")
    parser.add_argument("--blocks", type=int, default=10, help="turns each (default: 10)")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes (default: 2)")
    parser.add_argument("--warmup", type=int, default=300, help="per scenario (default: 300)")
    parser.add_argument("--sequential-calls", type=int, default=2000, help="0 skips (2000)")
    parser.add_argument("--concurrent-calls", type=int, default=4000, help="0 skips (4000)")
    parser.add_argument("--concurrency", type=int, default=64, help="(default: 64)")
    parser.add_argument("--child", choices=KINDS, help="measure this kind in this process")
    parser.add_argument("--base-url", help="with --child: a running fake server, else alone")
    parser.add_argument("--calls", type=int, default=20000, help="--child alone (20000)")
    args = parser.parse_args()
    for definition in args.add_variant:
        name, _, spec = definition.partition("=")
        kind, *assignments = shlex.split(spec)
        if kind not in KINDS:
            raise SystemExit(f"--add-variant {definition!r}: kind must be one of {KINDS}")
        VARIANTS[name] = (kind, {k: v for k, _, v in (a.partition("=") for a in assignments)})
    if args.child and not args.base_url:  # alone: a fake server of its own
        from otel_openai_retry.testing import FakeServerProcess

        with FakeServerProcess() as server:
            args.base_url = server.base_url
            return child(args, alone=True)
    return child(args, alone=False) if args.child else orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
