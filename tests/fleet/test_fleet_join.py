"""A process joining a fleet: its first call to an endpoint asks Redis once, and so paces from
that call on when the fleet paces the endpoint, or paced it lately (the rates it learnt are
remembered); an endpoint the fleet never paced costs that one round trip per process, no more."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import cast

from otel_openai_retry._endpoints import EndpointGuard, Endpoints
from otel_openai_retry._fleet_guard import RedisGuard
from otel_openai_retry._fleet_scripts import HORIZON, RESERVE
from otel_openai_retry._slots import take_slot

from .conftest import RedisServer, fleet, wait_until

TEN_A_SECOND = {
    "x-ratelimit-limit-requests": "10",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1s",
}
"""A server refilling 10 requests per second."""

THOUSAND_TOKENS_A_SECOND = {
    "x-ratelimit-limit-tokens": "1000",
    "x-ratelimit-remaining-tokens": "0",
    "x-ratelimit-reset-tokens": "1s",
}


class Prompt:
    """A call's token cost as the estimator gives it: a fixed size."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def estimate(self) -> int:
        return self.tokens

    def used(self, result: object) -> int | None:
        return None

    def used_later(self, charge: Callable[[int], None]) -> None:
        pass


def paces(guard: EndpointGuard) -> bool:
    return cast("RedisGuard", guard).fleet_paces()


def paced_lately(redis_server: RedisServer, headers: dict[str, str]) -> str:
    """A fleet that paced ``http://api`` for model ``m`` at the rates ``headers`` give, then
    stopped (what 5 s without waits or 429s leave): the key of what it remembers."""
    learnt = Endpoints(fleet(redis_server.url))
    try:
        guard = learnt.guard("http://api", "m")
        guard.throttled(time.monotonic(), None, headers)
        wait_until(lambda: paces(guard))
        [key] = redis_server.client.keys("otel_openai_retry:*")
    finally:
        learnt.close()
    redis_server.client.hset(key, "engaged", 0)
    return str(key.decode() if isinstance(key, bytes) else key)


def connected(redis_server: RedisServer) -> Endpoints:
    """A joining process with its connection made (a join to another endpoint): a first round
    trip slower than a caller may wait (a busy, long-lived test process) paces locally, by
    design, and is not what the join tests are about."""
    endpoints = Endpoints(fleet(redis_server.url))
    endpoints.guard("http://api", "other").slot_delay(time.monotonic(), math.inf)
    return endpoints


def test_an_endpoint_never_paced_costs_one_round_trip_per_process(
    redis_server: RedisServer,
) -> None:
    """Slots asked from many threads at once, then many more: one reservation per endpoint, the
    join; the threads that came while it was on its way waited for its answer."""
    endpoints = Endpoints(fleet(redis_server.url))
    try:
        guards = [endpoints.guard("http://api", model) for model in ("a", "b")]
        redis_server.client.script_load(RESERVE)  # so that none is counted twice (EVAL after
        before = redis_server.scripts_run()  # EVALSHA); nothing sent: no report runs either
        delays: list[float | None] = []

        def ask(guard: EndpointGuard) -> None:
            delays.extend(guard.slot_delay(time.monotonic(), math.inf) for _ in range(20))

        threads = [threading.Thread(target=ask, args=(g,)) for g in guards for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert delays == [0.0] * (2 * 8 * 20)
        assert redis_server.scripts_run() - before == 2
        assert not any(paces(guard) for guard in guards)
    finally:
        endpoints.close()


def test_a_process_joining_a_paced_fleet_paces_from_its_first_call(
    redis_server: RedisServer,
) -> None:
    """The fleet paces (another process saw a 429 with the server's rate): a new process's first
    slot comes from the shared schedule, before any report of its own."""
    first = Endpoints(fleet(redis_server.url))
    joining = connected(redis_server)
    try:
        theirs = first.guard("http://api", "m")
        theirs.throttled(time.monotonic(), None, TEN_A_SECOND)
        wait_until(lambda: paces(theirs))
        mine = joining.guard("http://api", "m")
        now = time.monotonic()
        delays = [guard.slot_delay(now, math.inf) for guard in (theirs, mine, mine)]
        assert paces(mine)
        gaps = [later - earlier for earlier, later in itertools.pairwise(delays)]  # type: ignore[operator]
        assert all(0.09 < gap < 0.12 for gap in gaps), delays  # one schedule: 9 a second
    finally:
        first.close()
        joining.close()


async def test_a_process_joining_a_fleet_that_paced_lately_starts_paced(
    redis_server: RedisServer,
) -> None:
    """The fleet learnt the server's rate, then stopped pacing (nothing waited, no 429 for a
    while). A process starting now paces from its first call at that rate: of async calls that
    came together (the first joining, the others waiting for its answer), only the first goes
    at once, the others wait for their slots of the schedule."""
    key = paced_lately(redis_server, TEN_A_SECOND)
    assert redis_server.client.hget(key, "warm") is not None
    joining = Endpoints(fleet(redis_server.url))
    try:
        mine = joining.guard("http://api", "m")
        assert not paces(mine) and mine.shared_slot()  # the join is a round trip: awaited
        now = time.monotonic()
        delays = await asyncio.gather(*(mine.aslot_delay(now, math.inf) for _ in range(5)))
        assert paces(mine)
        # each wait counts from its own reservation: only the first slot is free (a negative
        # one: the slot is beyond the booking horizon, the caller waits and asks again)
        waits = sorted(cast("list[float]", delays), key=abs)
        assert waits[0] == 0.0 and all(wait != 0 for wait in waits[1:]), delays
    finally:
        joining.close()


def test_a_process_joining_a_fleet_that_paced_tokens_books_its_first_calls_tokens(
    redis_server: RedisServer,
) -> None:
    """The fleet learnt a token limit (about 1,000 a second, a second's worth at once) and
    stopped pacing. A process joins with calls of 900 tokens: the first one's tokens are booked
    with the join, so the second waits for the bucket to refill, as behind any other call."""
    key = paced_lately(redis_server, {**TEN_A_SECOND, **THOUSAND_TOKENS_A_SECOND})
    assert float(redis_server.client.hget(key, "trate") or 0) > 900
    joining = connected(redis_server)
    try:
        mine = joining.guard("http://api", "m")
        now = time.monotonic()
        first_wait, _, first_tokens = take_slot(mine, now, math.inf, Prompt(900))
        second_wait, _, second_tokens = take_slot(mine, now, math.inf, Prompt(900))
        assert (first_wait, first_tokens, second_tokens) == (0.0, 900, 900)
        # 900 tokens to refill, not 0.1 s (beyond the booking horizon, its caller would be told
        # to ask again once the slot is within it)
        assert second_wait is not None
        comes = second_wait if second_wait >= 0 else -second_wait + HORIZON / 1000
        assert comes > 0.5, second_wait
    finally:
        joining.close()
