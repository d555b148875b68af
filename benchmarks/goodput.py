"""Goodput under rate limits: how fast do calls get through, SDK defaults and recipes vs ours?

Run it from the repository root (docs/performance.md describes the scenarios and strategies)::

    .venv/bin/python benchmarks/goodput.py                        # every scenario, one run each
    .venv/bin/python benchmarks/goodput.py --scenarios shared-limit --runs 3  # medians of 3

The fake server runs in a process of its own, set up as ``SCENARIOS`` says: a requests bucket
with each kind of hint a server gives (``retry-after-ms``, a whole-second ``retry-after``, the
``x-ratelimit-*`` headers alone, none), a tokens-per-minute bucket with prompts of many sizes, or
429s to a random share of requests whatever the send rate (a limit shared with other applications:
pacing must not cost more than it saves). Each strategy (``STRATEGIES``: the SDK's defaults, the
tenacity and LangChain recipes, ours with pacing on and off, ours sharing pacing through Redis)
runs in fresh processes with no ``OTEL_*`` variable but its own; ``--processes N`` makes them a
fleet of N. Printed: successes, failures, wall time against the bound (or the strategy compared
with), and the 429s the server sent per success."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from _common import MESSAGES, REPO, child_env, describe_machine, instrument, run_calls
from _journal import PROCESS_HEADER, sources

from otel_openai_retry.testing import FakeServerProcess

SCRIPT = Path(__file__).resolve()
STRATEGIES: dict[str, tuple[str, dict[str, str]]] = {
    "sdk": ("bare", {}),
    "tenacity": ("bare", {}),
    "langchain": ("bare", {}),
    "ours": ("ours", {}),
    "ours-unpaced": ("ours", {"OTEL_OPENAI_RETRY_ADAPTIVE": "false"}),
    "ours-shared": ("ours", {}),  # OTEL_OPENAI_RETRY_REDIS_URL: the run's own redis-server
}
"""Strategy: the kind switched on in its process (``_common.instrument``), its variables."""
SHARED = "ours-shared"
MAX_TOKENS = 16
"""Every call's ``max_tokens``: part of what the server charges it."""
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
    hints: bool | str = True
    """The fake server's hint mode: ``True`` (``retry-after-ms``), ``"seconds"``, ``"headers"``
    (``x-ratelimit-*`` only), ``False``."""
    tokens_per_minute: int | None = None
    """A tokens-per-minute limit whose bucket holds ``token_bucket_s`` of tokens; the bound is
    then the calls' tokens / the limit's rate. Prompts are sized by ``prompt_sizes``."""
    token_bucket_s: float = 2.0
    prompt_tokens: tuple[int, int] | None = None
    """Prompt sizes, log-uniform between these token counts (seeded); else one short prompt."""
    rejected: float | None = None
    """A random fraction of requests answered 429 (``retry-after-ms: 100``), whatever the rate."""
    rejected_limit: str = "requests"
    """The limit those 429s' bodies name as hit (``type``): ``requests`` or ``tokens``."""
    kill_redis_at: float | None = None
    """Kill the shared strategy's redis-server this far into the bound."""
    warm: bool = False
    """Run the shared strategy's fleet twice against one Redis: the second run's processes join
    a fleet that has learnt the limit (each run is reported)."""
    versus: str | None = None
    """Wall times shown against this strategy's (else against the bound)."""
    target: float = 1.0
    """Ours's wall time at most this times the bound (or the other strategy's)."""
    max_429_per_ok: float | None = None
    fleet_max_429_per_ok: float | None = None
    """The shared strategy's 429s per success in a fleet (``--processes`` > 1)."""

    def configure(self, server: FakeServerProcess) -> None:
        server.reset()
        server.set_latency(self.latency)
        hints: Any = self.hints
        if self.rate is not None:
            server.set_rate_limit(self.rate, self.burst, hints=hints)
        if self.tokens_per_minute is not None:
            server.set_token_limit(self.tokens_per_minute, self.token_bucket_s, hints=hints)
            server.set_sized_usage()
        if self.rejected is not None:
            server.set_random_rejections(
                self.rejected, seed=12, retry_after_ms=100, limit=self.rejected_limit
            )

    def prompts(self) -> list[str]:
        """Every call's prompt, in call order (the same list in every process)."""
        if self.prompt_tokens is None:
            return [MESSAGES[0]["content"]] * self.calls
        low, high = self.prompt_tokens
        draw = random.Random(7)
        sizes = [
            round(math.exp(draw.uniform(math.log(low), math.log(high)))) for _ in range(self.calls)
        ]
        return ["x" * (4 * size) for size in sizes]  # 4 characters a token, as OpenAI estimates

    def bound(self) -> float | None:
        """The least wall time the limit allows."""
        if self.tokens_per_minute is not None:
            tokens = sum(math.ceil(len(p) / 4) + MAX_TOKENS for p in self.prompts())
            return tokens / (self.tokens_per_minute / 60)
        return None if self.rate is None else self.calls / self.rate


PACED = ("sdk", "ours", SHARED)
"""The SDK's defaults, per-process pacing, shared pacing."""
RECIPES_AND_OURS = ("sdk", "tenacity", "langchain", "ours", SHARED)

SHARED_LIMIT = Scenario(
    "429 (retry-after-ms 100) to a random 10 % of requests whatever the rate, else 200 ms",
    ("sdk", "ours-unpaced", "ours"),
    calls=3200,
    concurrency=64,
    latency=0.2,
    rejected=0.1,
    versus="ours-unpaced",
    target=1.1,
)
"""A limit shared with other applications: 429s that do not depend on our rate."""

TOKENS = Scenario(
    "400,000 tokens/min, a bucket of 2 s, 20 ms; prompts 10-4,000 tokens, log-uniform",
    PACED,
    calls=400,
    concurrency=50,
    tokens_per_minute=400_000,
    prompt_tokens=(10, 4000),
    target=1.15,
    max_429_per_ok=0.1,
    fleet_max_429_per_ok=0.1,
)
"""The issue's token workload; ``tokens-no-hints`` is the same without any header."""

SCENARIOS = {
    "bucket": Scenario(
        "requests bucket 100/s, burst 10, 20 ms; 429 with retry-after-ms, x-ratelimit-*",
        RECIPES_AND_OURS,
        rate=100,
        target=1.1,
        max_429_per_ok=0.1,
        fleet_max_429_per_ok=0.05,
    ),
    "bucket-seconds": Scenario(
        "the same; 429 with a whole-second retry-after, x-ratelimit-*",
        PACED,
        rate=100,
        hints="seconds",
        target=1.1,
        max_429_per_ok=0.1,
        fleet_max_429_per_ok=0.05,
    ),
    "bucket-headers": Scenario(
        "the same; x-ratelimit-* only, no retry-after",
        PACED,
        rate=100,
        hints="headers",
        target=1.1,
        max_429_per_ok=0.1,
        fleet_max_429_per_ok=0.05,
    ),
    "bucket-no-hints": Scenario(
        "the same; 429 with no header",
        PACED,
        rate=100,
        hints=False,
        target=1.1,
        max_429_per_ok=0.1,
        fleet_max_429_per_ok=0.05,
    ),
    "tokens": TOKENS,
    "tokens-no-hints": dataclasses.replace(
        TOKENS, title="the same; 429 with OpenAI's body (type: tokens) and no header", hints=False
    ),
    "warm-fleet": Scenario(
        "requests bucket 100/s, burst 10, retry-after-ms; a second fleet joins the first's Redis",
        (SHARED,),
        rate=100,
        warm=True,
        target=1.1,
        max_429_per_ok=0.1,
        fleet_max_429_per_ok=0.05,
    ),
    "redis-dies": Scenario(
        "requests bucket 100/s, burst 10; the shared strategy's Redis killed a third in",
        ("ours", SHARED),
        rate=100,
        kill_redis_at=1 / 3,
        target=1.1,
    ),
    "shared-limit": SHARED_LIMIT,
    "mostly-refused": dataclasses.replace(
        SHARED_LIMIT,
        title="429 (retry-after-ms 100) to a random 90 % of requests whatever the rate, "
        "else 200 ms",
        strategies=("ours-unpaced", "ours", "ours-shared"),
        rejected=0.9,
    ),
    "tokens-shared-limit": dataclasses.replace(
        SHARED_LIMIT,
        title="the same at 10 %, the body saying type: tokens; prompts 10-4,000 tokens",
        strategies=("ours-unpaced", "ours", "ours-shared"),
        prompt_tokens=(10, 4000),
        rejected_limit="tokens",
    ),
}


# -- one strategy's process ---------------------------------------------------------------------


def build_call(
    strategy: str, base_url: str, sync: bool, prompts: Iterator[str], process: str = "0"
) -> Callable[[], Any]:
    """One logical call of ``strategy`` (a coroutine function unless ``sync``), each with the
    next of ``prompts``, its requests tagged with ``process``."""
    instrument(STRATEGIES[strategy][0])
    kwargs: dict[str, Any] = {"max_retries": 0} if strategy in RECIPES else {}
    client = (openai.OpenAI if sync else openai.AsyncOpenAI)(
        api_key="sk-bench",
        base_url=base_url,
        default_headers={PROCESS_HEADER: process},
        **kwargs,
    )

    def create(content: str) -> Any:
        return client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": content}],
            max_tokens=MAX_TOKENS,
        )

    async def create_async(content: str) -> Any:  # a coroutine function, as tenacity wants it
        return await create(content)

    if strategy not in RECIPES:
        return lambda: create(next(prompts))
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
    # One prompt per logical call: the recipe's retries resend it.
    return lambda: retrying.copy()(create if sync else create_async, next(prompts))


def child(args: argparse.Namespace) -> dict[str, float]:
    prompts = SCENARIOS[args.scenario].prompts()
    if args.calls_in_all is not None:
        prompts = dataclasses.replace(SCENARIOS[args.scenario], calls=args.calls_in_all).prompts()
    mine = iter(prompts[args.first : args.first + args.calls])
    call = build_call(args.child, args.base_url, args.sync, mine, str(args.first))
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


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A fresh ``redis-server`` on a free loopback port: its URL and its process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = subprocess.Popen([*command, "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.kill()
        process.wait()


WARM = " (warm)"
"""The label of a warm scenario's second run."""


def run_strategy(
    server: FakeServerProcess, scenario: Scenario, strategy: str, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """The strategy's run (two for a warm scenario's shared strategy), by label."""
    if strategy != SHARED:
        return {strategy: run_fleet(server, scenario, strategy, args, {})}
    with redis_server() as (url, redis):
        killer = None
        bound = scenario.bound()
        if scenario.kill_redis_at is not None and bound is not None:
            killer = threading.Timer(scenario.kill_redis_at * bound, redis.kill)
            killer.start()
        env = {"OTEL_OPENAI_RETRY_REDIS_URL": url}
        try:
            runs = {strategy: run_fleet(server, scenario, strategy, args, env)}
            if scenario.warm:
                runs[strategy + WARM] = run_fleet(server, scenario, strategy, args, env)
            return runs
        finally:
            if killer is not None:
                killer.cancel()


def run_fleet(
    server: FakeServerProcess,
    scenario: Scenario,
    strategy: str,
    args: argparse.Namespace,
    env: dict[str, str],
) -> dict[str, Any]:
    scenario.configure(server)
    time.sleep(0.2)  # a full bucket for everyone
    fleet = []
    first = 0
    for index in range(args.processes):
        calls = scenario.calls // args.processes + (index < scenario.calls % args.processes)
        command = [sys.executable, str(SCRIPT), "--child", strategy, "--base-url", server.base_url]
        concurrency = max(scenario.concurrency // args.processes, 1)
        command += ["--calls", str(calls), "--concurrency", str(concurrency)]
        command += ["--scenario", args.scenario, "--first", str(first)]
        command += ["--calls-in-all", str(scenario.calls)]
        command += ["--sync"] if args.sync else []
        first += calls
        child_vars = child_env(REPO, STRATEGIES[strategy][1] | env)
        pipe = subprocess.PIPE
        fleet.append(subprocess.Popen(command, stdin=pipe, stdout=pipe, text=True, env=child_vars))
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
        "sources": sources(server.requests) if args.where else None,
    }


def report(
    name: str, scenario: Scenario, args: argparse.Namespace, server: FakeServerProcess
) -> None:
    bound = scenario.bound()
    against = "bound" if bound is not None else scenario.versus
    args.scenario = name
    print(f"{name}: {scenario.title}; {scenario.calls} calls at concurrency {scenario.concurrency}")
    header = f"{'ok':>5} {'failed':>6} {'wall s':>7} {'/' + str(against):>13} {'429/ok':>7}"
    print(f"  {'strategy':<13} {header}")
    walls: dict[str, tuple[float, float]] = {}
    for strategy in args.strategies or scenario.strategies:
        if strategy == SHARED and shutil.which("redis-server") is None:
            print(f"  {strategy:<13} skipped: no redis-server (make redis installs it)")
            continue
        labelled = [run_strategy(server, scenario, strategy, args) for _ in range(args.runs)]
        for label in labelled[0]:
            runs = [each[label] for each in labelled]
            walls[label] = show(label, strategy, runs, scenario, args, walls)
    print()


def show(
    label: str,
    strategy: str,
    runs: list[dict[str, Any]],
    scenario: Scenario,
    args: argparse.Namespace,
    walls: dict[str, tuple[float, float]],
) -> tuple[float, float]:
    """Print one strategy's line (medians of its runs); its median wall time and successes.

    Against a bound, a target wants no failure; against another strategy (a scenario where
    calls run out of attempts paced or not), as many successes as that one's, within the
    target's share, as for the wall time."""
    bound = scenario.bound()
    wall: float = statistics.median(run["wall"] for run in runs)
    ok: float = statistics.median(run["ok"] for run in runs)
    failed = statistics.median(run["failures"] for run in runs)
    versus = walls.get(str(scenario.versus))
    reference = bound if bound is not None else None if versus is None else versus[0]
    ratio = None if reference is None else wall / reference
    waste = statistics.median(run["throttled"] / max(run["ok"], 1) for run in runs)
    mark = ""
    most_429 = scenario.max_429_per_ok
    if strategy == SHARED and args.processes > 1:
        most_429 = scenario.fleet_max_429_per_ok
    if strategy in ("ours", SHARED) and ratio is not None:
        if bound is not None or versus is None:
            enough = failed == 0
        else:
            enough = ok * scenario.target >= versus[1]
        met = enough and ratio <= scenario.target
        met = met and (most_429 is None or waste <= most_429)
        wanted = f"≤{scenario.target}x" + ("" if most_429 is None else f", ≤{most_429} 429/ok")
        mark = f"  target ({wanted}) " + ("met" if met else "MISSED")
    print(
        f"  {label:<13} {statistics.median(run['ok'] for run in runs):>5.0f} {failed:>6.0f} "
        f"{wall:>7.1f} {'' if ratio is None else f'{ratio:.2f}x':>13} {waste:>7.2f}{mark}",
        flush=True,
    )
    if args.runs > 1:
        each = ", ".join(f"{run['ok']:.0f} ok {run['wall']:.1f} s" for run in runs)
        print(f"  {'':<13} runs: {each}")
    for run in runs if args.where else ():
        print(f"  {'':<13} 429s: {run['sources']}")
    return wall, ok


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
    parser.add_argument(
        "--where", action="store_true", help="split each run's 429s: first wave, learning, steady"
    )
    parser.add_argument("--child", choices=STRATEGIES, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, help="instead of the scenario's (the bound follows)")
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--calls-in-all", type=int, help=argparse.SUPPRESS)
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
