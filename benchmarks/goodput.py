"""Goodput under rate limits: how fast do calls get through, SDK defaults and recipes vs ours?

Run it from the repository root (docs/performance.md describes the scenarios and strategies)::

    .venv/bin/python benchmarks/goodput.py                        # every scenario, one run each
    .venv/bin/python benchmarks/goodput.py --scenarios shared-limit --runs 3  # medians of 3

The fake server runs in a process of its own, set up as ``SCENARIOS`` says: a token bucket with
and without hints, or 429s to a random share of requests whatever the send rate (a limit shared
with other applications: pacing must not cost more than it saves). Each strategy (``STRATEGIES``:
the SDK's defaults, the tenacity and LangChain recipes, ours with pacing on and off) runs in fresh
processes with no ``OTEL_*`` variable but its own; ``--processes N`` makes them a fleet of N.
Printed: successes, failures, wall time against the bound (or the strategy compared with), and
the 429s the server sent per success."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from _common import MESSAGES, REPO, child_env, describe_machine, instrument, run_calls

from otel_openai_retry.testing import FakeServerProcess

SCRIPT = Path(__file__).resolve()
STRATEGIES: dict[str, tuple[str, dict[str, str]]] = {
    "sdk": ("bare", {}),
    "tenacity": ("bare", {}),
    "langchain": ("bare", {}),
    "ours": ("ours", {}),
    "ours-unpaced": ("ours", {"OTEL_OPENAI_RETRY_ADAPTIVE": "false"}),
}
"""Strategy: the kind switched on in its process (``_common.instrument``), its variables."""
RECIPES = ("tenacity", "langchain")
CHILD_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Scenario:
    """What the server does, the calls made, and what ours must achieve."""

    title: str
    strategies: tuple[str, ...]
    calls: int = 1000
    concurrency: int = 100
    latency: float = 0.02
    rate: float | None = None
    """A token bucket's requests/s (``burst``, ``hints``); the bound is then calls / rate."""
    burst: int = 10
    hints: bool = True
    rejected: float | None = None
    """A random fraction of requests answered 429 (``retry-after-ms: 100``), whatever the rate."""
    versus: str | None = None
    """Wall times shown against this strategy's (else against the bound)."""
    target: float = 1.0
    """Ours's wall time at most this times the bound (or the other strategy's)."""
    max_429_per_ok: float | None = None

    def configure(self, server: FakeServerProcess) -> None:
        server.reset()
        server.set_latency(self.latency)
        if self.rate is not None:
            server.set_rate_limit(self.rate, self.burst, hints=self.hints)
        if self.rejected is not None:
            server.set_random_rejections(self.rejected, seed=12, retry_after_ms=100)


RECIPES_AND_OURS = ("sdk", "tenacity", "langchain", "ours")
SCENARIOS = {
    "bucket": Scenario(
        "token bucket 100 requests/s, burst 10, 20 ms; 429 with retry-after-ms, x-ratelimit-*",
        RECIPES_AND_OURS,
        rate=100,
        target=1.3,
        max_429_per_ok=0.2,
    ),
    "bucket-no-hints": Scenario(
        "token bucket 100 requests/s, burst 10, 20 ms; 429 with no header",
        RECIPES_AND_OURS,
        rate=100,
        hints=False,
        target=1.5,
    ),
    "shared-limit": Scenario(
        "429 (retry-after-ms 100) to a random 10 % of requests whatever the rate, else 200 ms",
        ("sdk", "ours-unpaced", "ours"),
        calls=3200,
        concurrency=64,
        latency=0.2,
        rejected=0.1,
        versus="ours-unpaced",
        target=1.1,
    ),
}


# -- one strategy's process ---------------------------------------------------------------------


def build_call(strategy: str, base_url: str, sync: bool) -> Callable[[], Any]:
    """One logical call of ``strategy`` (a coroutine function unless ``sync``)."""
    instrument(STRATEGIES[strategy][0])
    kwargs: dict[str, Any] = {"max_retries": 0} if strategy in RECIPES else {}
    client = (openai.OpenAI if sync else openai.AsyncOpenAI)(
        api_key="sk-bench", base_url=base_url, **kwargs
    )

    def create() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    async def create_async() -> Any:  # a coroutine function, as tenacity wants it
        return await create()

    if strategy not in RECIPES:
        return create
    import tenacity

    wait: Any = tenacity.wait_random_exponential(min=1, max=60)
    if strategy == "langchain":
        wait = tenacity.wait_exponential(multiplier=1, min=4, max=10)
    retrying: Any = (tenacity.Retrying if sync else tenacity.AsyncRetrying)(
        reraise=True,
        stop=tenacity.stop_after_attempt(6),
        wait=wait,
        retry=tenacity.retry_if_exception_type(
            (openai.RateLimitError, openai.APIConnectionError, openai.InternalServerError)
        ),
    )
    return lambda: retrying.copy()(create if sync else create_async)


def child(args: argparse.Namespace) -> dict[str, float]:
    call = build_call(args.child, args.base_url, args.sync)
    threads = ThreadPoolExecutor(args.concurrency)  # with --sync, the calls run there
    failures = 0

    async def one() -> None:
        nonlocal failures
        try:
            if args.sync:
                await asyncio.get_running_loop().run_in_executor(threads, call)
            else:
                await call()
        except openai.APIError:
            failures += 1

    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # the fleet starts together
    started = time.perf_counter()
    asyncio.run(run_calls(one, args.calls, args.concurrency))
    return {"wall": time.perf_counter() - started, "failures": failures}


# -- the orchestrator ---------------------------------------------------------------------------


def run_strategy(
    server: FakeServerProcess, scenario: Scenario, strategy: str, args: argparse.Namespace
) -> dict[str, float]:
    scenario.configure(server)
    time.sleep(0.2)  # a full bucket for everyone
    fleet = []
    for index in range(args.processes):
        calls = scenario.calls // args.processes + (index < scenario.calls % args.processes)
        command = [sys.executable, str(SCRIPT), "--child", strategy, "--base-url", server.base_url]
        concurrency = max(scenario.concurrency // args.processes, 1)
        command += ["--calls", str(calls), "--concurrency", str(concurrency)]
        command += ["--sync"] if args.sync else []
        env = child_env(REPO, STRATEGIES[strategy][1])
        pipe = subprocess.PIPE
        fleet.append(subprocess.Popen(command, stdin=pipe, stdout=pipe, text=True, env=env))
    try:
        for process in fleet:
            assert process.stdout is not None
            process.stdout.readline()  # ready
        for process in fleet:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=CHILD_TIMEOUT_S)[0] for process in fleet]
        results = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    finally:
        for process in fleet:
            process.kill()
            process.wait()
    failures = sum(result["failures"] for result in results)
    return {
        "wall": max(result["wall"] for result in results),
        "failures": failures,
        "ok": scenario.calls - failures,
        "throttled": server.status_counts().get("429", 0),
    }


def report(
    name: str, scenario: Scenario, args: argparse.Namespace, server: FakeServerProcess
) -> None:
    bound = None if scenario.rate is None else scenario.calls / scenario.rate
    against = "bound" if bound is not None else scenario.versus
    print(f"{name}: {scenario.title}; {scenario.calls} calls at concurrency {scenario.concurrency}")
    header = f"{'ok':>5} {'failed':>6} {'wall s':>7} {'/' + str(against):>13} {'429/ok':>7}"
    print(f"  {'strategy':<13} {header}")
    walls: dict[str, float] = {}
    for strategy in args.strategies or scenario.strategies:
        runs = [run_strategy(server, scenario, strategy, args) for _ in range(args.runs)]
        walls[strategy] = wall = statistics.median(run["wall"] for run in runs)
        reference = bound if bound is not None else walls.get(str(scenario.versus))
        ratio = None if reference is None else wall / reference
        failed = statistics.median(run["failures"] for run in runs)
        waste = statistics.median(run["throttled"] / max(run["ok"], 1) for run in runs)
        mark = ""
        if strategy == "ours" and ratio is not None:
            met = failed == 0 and ratio <= scenario.target
            met = met and (scenario.max_429_per_ok is None or waste <= scenario.max_429_per_ok)
            mark = f"  target (≤{scenario.target}x) " + ("met" if met else "MISSED")
        print(
            f"  {strategy:<13} {statistics.median(run['ok'] for run in runs):>5.0f} {failed:>6.0f} "
            f"{wall:>7.1f} {'' if ratio is None else f'{ratio:.2f}x':>13} {waste:>7.2f}{mark}",
            flush=True,
        )
        if args.runs > 1:
            each = ", ".join(f"{run['ok']:.0f} ok {run['wall']:.1f} s" for run in runs)
            print(f"  {'':<13} runs: {each}")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument(
        "--strategies", nargs="+", choices=STRATEGIES, help="(default: the scenario's)"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per strategy (medians)")
    parser.add_argument("--processes", type=int, default=1, help="a fleet: processes per strategy")
    parser.add_argument("--sync", action="store_true", help="threads and the sync client")
    parser.add_argument("--child", choices=STRATEGIES, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, help="instead of the scenario's (the bound follows)")
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    print(describe_machine())
    print(f"# reproduce: {' '.join([sys.executable, *sys.argv])}\n", flush=True)
    with FakeServerProcess() as server:
        for name in args.scenarios:
            scenario = SCENARIOS[name]
            if args.calls:
                scenario = dataclasses.replace(scenario, calls=args.calls)
            report(name, scenario, args, server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
