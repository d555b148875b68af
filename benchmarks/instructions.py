"""Instructions per successful call (Valgrind's callgrind): the bare SDK, ours, the official one.

CPU time on a shared 2-core machine moves by tens of µs between blocks; an instruction count
does not (two runs of the same variant agree within 0.1 %), so it is the measure for "did this
change make a call cheaper" and for splitting a call's cost into its parts. It is not a CPU time:
cache and branch misses are left out, so quote ``overhead.py``'s figures for what a call costs
and these for where it goes. Run from the repository root (``apt-get install valgrind``)::

    .venv/bin/python benchmarks/instructions.py                      # ~2 min per variant
    .venv/bin/python benchmarks/instructions.py --variants ours,ours-tracing-only --calls 100

Each variant runs in a process of its own under callgrind, against the fake server in another
process (not counted): ``--warmup`` calls, then counting is switched on (``callgrind_control``)
for ``--calls`` calls (``--concurrency`` at once, default 1) and the flush of their spans, the
telemetry threads included.
``-tracing-only`` / ``-metrics-only`` variants give one of the two providers the API's no-op, so
``ours - ours-noop`` splits into the SDK's tracing and metrics work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

from _common import REPO, chat_call, child_env, describe_machine, instrument, make_client, run_calls

VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "bare": ("bare", {}),
    "ours": ("ours", {}),
    "ours-retried": ("ours", {"OTEL_OPENAI_RETRY_ATTEMPT_SPANS": "retried"}),
    "ours-noop": ("ours-noop", {}),
    "ours-tracing-only": ("ours", {"BENCH_NOOP": "metrics"}),
    "ours-metrics-only": ("ours", {"BENCH_NOOP": "tracing"}),
    "official": ("official", {}),
    "official-noop": ("official", {"BENCH_NOOP": "tracing,metrics"}),
    "official-tracing-only": ("official", {"BENCH_NOOP": "metrics"}),
    "official-metrics-only": ("official", {"BENCH_NOOP": "tracing"}),
}


def child(kind: str, base_url: str, warmup: int, calls: int, concurrency: int) -> None:
    """Under callgrind, with counting off until the warm-up is over."""
    noop = os.environ.get("BENCH_NOOP", "")
    if noop:  # the SDK providers, one or both replaced by the API's no-op ones
        import _common
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.trace import NoOpTracerProvider

        providers: dict[str, Any] = {}
        if "tracing" in noop:
            providers["tracer_provider"] = NoOpTracerProvider()
        if "metrics" in noop:
            providers["meter_provider"] = NoOpMeterProvider()
        _common.PROVIDER_OVERRIDES = providers
    setup = instrument(kind)
    loop = asyncio.new_event_loop()
    client = make_client(base_url)
    loop.run_until_complete(run_calls(lambda: chat_call(client), warmup, concurrency))
    setup.spans()
    gc.collect()
    control = ["callgrind_control", "-i"]
    subprocess.run([*control, "on", str(os.getpid())], capture_output=True, check=True)
    loop.run_until_complete(run_calls(lambda: chat_call(client), calls, concurrency))
    setup.spans()
    subprocess.run([*control, "off", str(os.getpid())], capture_output=True, check=True)
    loop.run_until_complete(client.close())


def count(name: str, base_url: str, args: argparse.Namespace) -> float:
    """Instructions per call of one variant, in thousands."""
    kind, env = VARIANTS[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        command += [f"--callgrind-out-file={out}", sys.executable, __file__, "--child", kind]
        command += ["--base-url", base_url, "--warmup", str(args.warmup)]
        command += ["--calls", str(args.calls), "--concurrency", str(args.concurrency)]
        environment = child_env(REPO, env) | {"PYTHONHASHSEED": "0"}
        subprocess.run(command, env=environment, capture_output=True, check=True)
        with open(out, encoding="utf-8") as result:
            found = re.search(r"^totals:\s+(\d+)", result.read(), re.M)
    if found is None:
        raise SystemExit(f"{name}: callgrind wrote no totals")
    calls: int = args.calls
    return int(found.group(1)) / calls / 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default="bare,ours,ours-retried,ours-noop,official")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument(
        "--concurrency", type=int, default=1, help="calls in flight at once (default: 1)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.base_url, args.warmup, args.calls, args.concurrency)
        return 0
    names = ["bare", *(n for n in args.variants.split(",") if n != "bare")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    from otel_openai_retry.testing import FakeServerProcess

    print(describe_machine())
    counts: dict[str, float] = {}
    with FakeServerProcess() as server:
        for name in names:
            counts[name] = count(name, server.base_url, args)
    official = counts.get("official", 0.0) - counts["bare"]
    print("| variant | k instructions/call | Δ vs bare | Δ / official's Δ |")
    print("|---|---:|---:|---:|")
    for name in names:
        delta = counts[name] - counts["bare"]
        ratio = f"{delta / official:.2f}" if official > 0 and name != "bare" else ""
        shown = f"{delta:+,.0f}" if name != "bare" else ""
        print(f"| {name} | {counts[name]:,.0f} | {shown} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
