"""A fleet of processes, each a crowd of SDK calls over real HTTP to the fake server's rate limit:
pacing shared through Redis lets fewer 429s through than each process pacing alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from otel_openai_retry.testing import FakeOpenAIServer

from ..helpers import clean_environment
from .conftest import RedisServer, wait_until

_CALLER = textwrap.dedent(
    """
    import asyncio, json, sys
    import openai
    from otel_openai_retry import OpenAIRetryInstrumentor

    base_url, count, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sizes = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None  # prompt tokens, cycled
    OpenAIRetryInstrumentor().instrument()

    def prompt(i):
        return f"n{i}" if sizes is None else "x" * (4 * sizes[i % len(sizes)])

    async def main():
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=base_url)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i):
            async with semaphore:
                try:
                    await client.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt(i)}]
                    )
                except openai.APIError:
                    return False
                return True

        await client.models.list()  # connected and warm: then all start together
        print("ready", flush=True)
        sys.stdin.readline()
        return sum(await asyncio.gather(*(one(i) for i in range(count))))

    print(json.dumps(asyncio.run(main())))
    """
)


def run_fleet(
    server: FakeOpenAIServer,
    processes: int,
    count: int,
    redis_url: str,
    sizes: list[int] | None = None,
) -> list[int]:
    """How many calls of each process succeeded; all processes start their crowds at once (of
    prompts of ``sizes`` tokens, in turn, if given)."""
    env = clean_environment(
        OTEL_SDK_DISABLED="true",
        OTEL_OPENAI_RETRY_MAX_ATTEMPTS="10",
        OTEL_OPENAI_RETRY_INITIAL_WAIT="0.01",
        OTEL_OPENAI_RETRY_MAX_WAIT="0.05",
        OTEL_OPENAI_RETRY_REDIS_URL=redis_url,
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CALLER, server.base_url, str(count), "10"]
            + ([] if sizes is None else [json.dumps(sizes)]),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    succeeded = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert "Redis" not in err, err  # no fallback, no warning
        succeeded.append(json.loads(out.strip().splitlines()[-1]))
    return succeeded


@pytest.mark.slow
def test_a_fleet_sharing_redis_meets_fewer_429s_than_processes_pacing_alone(
    server: FakeOpenAIServer, redis_server: RedisServer
) -> None:
    """Each process alone learns the server's rate from its headers and sends at it: three of
    them send three times too fast. Sharing one schedule, they send at it together."""
    server.set_rate_limit(50, burst=5)
    run_fleet(server, 3, 60, redis_url="")  # some calls may run out of attempts
    alone = server.status_counts().get("429", 0)

    server.reset()
    server.set_rate_limit(50, burst=5)
    succeeded = run_fleet(server, 3, 60, redis_url=redis_server.url)
    shared = server.status_counts().get("429", 0)
    print(f"429s: {alone} pacing per process, {shared} shared; {succeeded}")
    assert succeeded == [60, 60, 60]
    assert shared < 0.5 * alone, (shared, alone)
    assert redis_server.scripts_run() > 0


@pytest.mark.slow
def test_processes_joining_a_fleet_that_paced_lately_start_paced(
    server: FakeOpenAIServer, redis_server: RedisServer
) -> None:
    """A fleet meets the limit cold: its first wave is refused and it learns the rate. Once it
    has stopped pacing (its processes gone, nothing waiting), a new fleet starts against the
    same Redis into a full bucket: it paces from its first calls, and the server refuses a
    fraction of what it refused the first."""
    server.set_rate_limit(50, burst=5)
    assert run_fleet(server, 3, 60, redis_url=redis_server.url) == [60, 60, 60]
    cold = server.status_counts().get("429", 0)
    keys = redis_server.client.keys("otel_openai_retry:*")
    [key] = [key for key in keys if redis_server.client.hget(key, "warm")]  # the chat model's

    def stopped_pacing() -> bool:
        seconds, micros = redis_server.client.time()
        engaged = float(redis_server.client.hget(key, "engaged") or 0)
        return engaged <= seconds * 1000 + micros / 1000

    wait_until(stopped_pacing, seconds=30)
    server.reset()
    server.set_rate_limit(50, burst=5)
    assert run_fleet(server, 3, 60, redis_url=redis_server.url) == [60, 60, 60]
    warm = server.status_counts().get("429", 0)
    # At least one process's first wave (10 at once into a burst of 5) met the limit cold; the
    # others' first waves too, unless the fleet already paced when they joined.
    print(f"429s: cold {cold}, warm {warm}")
    assert cold >= 10 - 5, cold
    assert warm <= cold / 3, (warm, cold)


@pytest.mark.slow
def test_a_fleet_finds_a_token_limit_no_header_states_together(
    server: FakeOpenAIServer, redis_server: RedisServer
) -> None:
    """A token limit that only the 429's body names: each process alone, slowing its own tokens
    to try whether they matter, sees the others' keep the 429s coming and stands aside, and the
    fleet sends unpaced into the limit. Sharing one Redis, the fleet finds the limit from all
    its answers and books every process's tokens there."""
    sizes = [50, 400, 120, 900, 30, 250, 600, 80]  # tokens, as OpenAI estimates them

    def limited() -> None:
        server.reset()
        server.set_token_limit(240_000, bucket_seconds=2, hints=False)  # 4,000 tokens a second
        server.set_sized_usage()

    limited()
    run_fleet(server, 3, 40, redis_url="", sizes=sizes)  # some calls may run out of attempts
    alone = server.status_counts().get("429", 0)

    limited()
    succeeded = run_fleet(server, 3, 40, redis_url=redis_server.url, sizes=sizes)
    shared = server.status_counts().get("429", 0)
    print(f"429s: {alone} finding the token rate per process, {shared} shared; {succeeded}")
    assert succeeded == [40, 40, 40]
    assert shared < 0.5 * alone, (shared, alone)
