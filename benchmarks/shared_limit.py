"""Pacing must not cost more than it saves: 429s that do not depend on our send rate.

Run it from the repository root::

    .venv/bin/python benchmarks/shared_limit.py                 # the three modes, one run each
    .venv/bin/python benchmarks/shared_limit.py --runs 3        # medians of three

A limit shared with other applications rejects a fraction of our requests however slowly we send:
slowing down cannot help, it only adds waiting. The fake server runs in its own process and
answers 429 (``retry-after-ms: 100``, no ``x-ratelimit-*`` headers) to a random 10 % of requests,
and every other request after 200 ms. 64 threads make 50 sync chat completions each. Each mode
runs in a fresh process of its own:

- ``sdk``: the bare OpenAI SDK (``max_retries=2``), nothing patched;
- ``ours-off``: ``OpenAIRetryInstrumentor`` with adaptive pacing off (``adaptive=False``);
- ``ours-on``: ``OpenAIRetryInstrumentor`` with its default policy (pacing on).

Printed: successes, failures, wall time, wall time against ``ours-off``, 429s received per success
(counted by the server), and the time callers spent held back by pacing (from the spans); medians,
and with ``--runs`` above 1 each run's wall time (the spread).
The target: ``ours-on`` within 10 % of ``ours-off``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

THREADS = 64
CALLS_PER_THREAD = 50
FRACTION = 0.1
RETRY_AFTER_MS = 100
LATENCY = 0.2
SEED = 12
MODES = ("sdk", "ours-off", "ours-on")
TARGET = 1.10
"""Pacing on within 10 % of pacing off."""


def _instrument(adaptive: bool) -> Any:
    """Our instrumentation with real SDK providers; returns the span exporter to read throttles."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    OpenAIRetryInstrumentor().instrument(
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(),
        policy=RetryPolicy(adaptive=adaptive),
    )
    return exporter


def run_child(mode: str, base_url: str) -> dict[str, float]:
    exporter = _instrument(mode == "ours-on") if mode != "sdk" else None
    kwargs: dict[str, Any] = {"max_retries": 2} if mode == "sdk" else {}
    client = openai.OpenAI(api_key="sk-bench", base_url=base_url, **kwargs)
    failures = 0
    lock = threading.Lock()

    def thread(t: int) -> None:
        nonlocal failures
        for i in range(CALLS_PER_THREAD):
            try:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"{t}-{i}"}]
                )
            except openai.APIError:
                with lock:
                    failures += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(thread, range(THREADS)))
    wall = time.perf_counter() - started
    throttle = 0.0
    if exporter is not None:
        for span in exporter.get_finished_spans():
            value = (span.attributes or {}).get("retry.throttle_s")
            if isinstance(value, float):
                throttle += value
    return {"wall": wall, "failures": failures, "throttle": throttle}


def run_mode(mode: str, base_url: str) -> dict[str, float]:
    from goodput import control

    control(base_url, "reset", {})
    control(
        base_url,
        "conditions",
        {
            "latency_s": LATENCY,
            "random_rejections": {
                "fraction": FRACTION,
                "seed": SEED,
                "retry_after_ms": RETRY_AFTER_MS,
            },
        },
    )
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--base-url", base_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    stats = control(base_url, "stats")["by_status"]
    result["throttled"] = stats.get("429", 0)
    result["successes"] = THREADS * CALLS_PER_THREAD - result["failures"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--runs", type=int, default=1, help="runs per mode (medians)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.base_url)))
        return 0

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _bench_common import fake_server

    print(
        f"{THREADS} threads x {CALLS_PER_THREAD} sync calls; server: 429 (retry-after-ms "
        f"{RETRY_AFTER_MS}) to a random {FRACTION:.0%} of requests, else {LATENCY * 1000:.0f} ms; "
        f"medians of {args.runs}"
    )
    print(f"reproduce: .venv/bin/python benchmarks/shared_limit.py --runs {args.runs}\n")
    header = f"  {'mode':<9} {'ok':>5} {'failed':>6} {'wall s':>7} {'/off':>6} {'429/ok':>7}"
    print(header + f" {'paced s':>8}")
    walls: dict[str, float] = {}
    with fake_server() as server:
        for mode in args.modes:
            runs = [run_mode(mode, server.base_url) for _ in range(args.runs)]
            walls[mode] = wall = statistics.median(r["wall"] for r in runs)
            ok = statistics.median(r["successes"] for r in runs)
            failed = statistics.median(r["failures"] for r in runs)
            waste = statistics.median(r["throttled"] / max(r["successes"], 1) for r in runs)
            paced = statistics.median(r["throttle"] for r in runs)
            off = walls.get("ours-off")
            ratio = f"{wall / off:>5.2f}x" if off else f"{'':>6}"
            mark = ""
            if mode == "ours-on" and off:
                mark = "  target met" if wall / off <= TARGET else "  TARGET MISSED"
            print(
                f"  {mode:<9} {ok:>5.0f} {failed:>6.0f} {wall:>7.1f} {ratio} {waste:>7.2f}"
                f" {paced:>8.1f}{mark}"
            )
            if len(runs) > 1:
                each = ", ".join(f"{r['wall']:.1f}" for r in runs)
                print(f"  {'':<9} runs (wall s): {each}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
