"""Redis slow, down or wrong while the fleet paces: no call fails or waits for it, one warning
says so, and sharing comes back with Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import replace

import pytest

from otel_openai_retry._fleet_guard import RedisGuard
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from ..helpers import MESSAGES, Instrument, async_client, sync_client
from ..helpers import crowd as many_calls
from .conftest import RedisServer, crowd, fleet, redis_warnings, wait_until


async def test_redis_killed_mid_run_then_back(
    server: FakeOpenAIServer,
    own_redis: RedisServer,
    instrument: Instrument,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every call succeeds through the outage, with one warning; once Redis is back (and the
    reporter has tried again), the endpoint is shared again."""
    caplog.set_level(logging.INFO, logger="otel_openai_retry")
    instrument(policy=fleet(own_redis.url))
    server.set_rate_limit(100, burst=5)
    client = async_client(server)
    assert all(await crowd(client, 60, concurrency=20))  # a 429 or more: the fleet paces
    [key] = own_redis.client.keys("otel_openai_retry:*")
    assert own_redis.client.hget(key, "engaged") is not None

    running = asyncio.ensure_future(crowd(client, 150, concurrency=20))
    await asyncio.sleep(0.2)
    own_redis.stop()
    assert all(await running)
    assert all(await crowd(client, 30, concurrency=10))
    warnings = redis_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "Redis at 127.0.0.1" in warnings[0] and "per process" in warnings[0]

    own_redis.start()
    deadline = time.monotonic() + 15
    while not own_redis.client.keys("otel_openai_retry:*"):  # the reporter's next try
        assert time.monotonic() < deadline
        assert all(await crowd(client, 5, concurrency=5))
    assert any("answers again" in r.getMessage() for r in caplog.records)
    # The new Redis knows nothing yet: the next 429 engages the fleet there (scripted: pacing per
    # process, still engaged, may keep the crowd from provoking one).
    server.script(Fault.rate_limit(retry_after_ms=10))
    assert all(await crowd(client, 60, concurrency=20))
    [key] = own_redis.client.keys("otel_openai_retry:*")
    assert own_redis.client.hget(key, "engaged") is not None
    assert len(redis_warnings(caplog)) == 1


async def test_redis_killed_while_the_fleet_finds_a_token_rate(
    server: FakeOpenAIServer,
    own_redis: RedisServer,
    instrument: Instrument,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A token limit no header states, paced by the rate the fleet found: Redis killed
    mid-crowd, every call still succeeds (the process paces by the rate it finds itself), with
    one warning."""
    caplog.set_level(logging.INFO, logger="otel_openai_retry")
    # attempts enough for pacing per process to get every call through this limit (with 10 and
    # no Redis, 2 of 300 ran out of them): a call that fails here, the outage failed
    instrument(policy=replace(fleet(own_redis.url), max_attempts=20))
    server.set_token_limit(120_000, bucket_seconds=0.5, hints=False)  # 2,000 a second
    server.set_sized_usage()
    client = async_client(server)

    def sixty_tokens(i: int) -> dict[str, object]:
        return {"messages": [{"role": "user", "content": f"{i:04d}" * 50}], "max_tokens": 10}

    assert all(await many_calls(client, 40, 20, sixty_tokens))
    [key] = own_redis.client.keys("otel_openai_retry:*")
    assert own_redis.client.hget(key, "tphase") is not None, "the fleet finds the token rate"
    assert server.status_counts().get("429", 0) > 0

    running = asyncio.ensure_future(many_calls(client, 100, 20, sixty_tokens))
    await asyncio.sleep(0.2)
    own_redis.stop()
    assert all(await running)
    warnings = redis_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "per process" in warnings[0]


def test_a_hung_redis_delays_no_call(
    server: FakeOpenAIServer,
    own_redis: RedisServer,
    instrument: Instrument,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis frozen (SIGSTOP) while the fleet paces: the paced calls go on, paced per process,
    and all of them are done long before Redis could have answered."""
    instrument(policy=fleet(own_redis.url))
    server.set_rate_limit(50, burst=5)
    client = sync_client(server)
    asyncio.run(crowd(async_client(server), 40, concurrency=20))
    [key] = own_redis.client.keys("otel_openai_retry:*")
    assert own_redis.client.hget(key, "engaged") is not None
    pid = own_redis.pid
    frozen = threading.Event()

    def thaw() -> None:
        frozen.clear()
        os.kill(pid, signal.SIGCONT)

    os.kill(pid, signal.SIGSTOP)
    frozen.set()
    thawed = threading.Timer(20.0, thaw)
    thawed.start()
    try:
        started = time.monotonic()
        for _ in range(10):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        took = time.monotonic() - started
        assert frozen.is_set(), "every call was over while Redis hung"
    finally:
        thawed.cancel()
        os.kill(pid, signal.SIGCONT)
    assert took < 20.0 / 4
    assert len(redis_warnings(caplog)) == 1


def test_a_key_of_the_wrong_type_fails_no_call(
    server: FakeOpenAIServer,
    redis_server: RedisServer,
    instrument: Instrument,
    caplog: pytest.LogCaptureFixture,
) -> None:
    instrument(policy=fleet(redis_server.url))
    client = sync_client(server)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    wait_until(lambda: bool(redis_server.client.keys("otel_openai_retry:*")))
    [key] = redis_server.client.keys("otel_openai_retry:*")
    redis_server.client.set(key, "not a hash")
    server.set_rate_limit(50, burst=2)
    started = time.monotonic()
    for _ in range(20):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        if redis_warnings(caplog):
            break
        time.sleep(0.1)
    assert time.monotonic() - started < 10
    [warning] = redis_warnings(caplog)
    assert "WRONGTYPE" in warning or "ResponseError" in warning


async def test_a_bug_in_the_fleets_slot_costs_the_call_nothing(
    server: FakeOpenAIServer,
    redis_server: RedisServer,
    instrument: Instrument,
    production_errors: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not Redis failing (that is the fallback above) but our own code on the shared path: the
    call goes on unpaced, as the bare SDK's would, and the bug is logged once."""

    async def broken(self: RedisGuard, *args: object, **kwargs: object) -> float | None:
        raise RuntimeError("a bug in the shared slot")

    monkeypatch.setattr(RedisGuard, "aslot_delay", broken)
    instrument(policy=fleet(redis_server.url))
    client = async_client(server)
    requests = 0
    deadline = time.monotonic() + 10
    while not any("internal error in pacing" in m for m in redis_warnings(caplog)):
        assert time.monotonic() < deadline, "the fleet never paced the endpoint"
        server.script(Fault.rate_limit(retry_after_ms=5))
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert reply.choices[0].message.content
        requests += 2
        assert server.request_count == requests, "every retry made, none added"
    for _ in range(3):
        server.script(Fault.rate_limit(retry_after_ms=5))
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert server.request_count == requests + 6
    assert len([m for m in redis_warnings(caplog) if "internal error" in m]) == 1
