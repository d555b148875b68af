"""Pacing and the budget shared through a real Redis, seen from one process: a round trip only
while the fleet paces, a 429 seen by one guard pacing another, the budget spent by one taken from
all, a bad URL refused at once."""

from __future__ import annotations

import asyncio
import itertools
import math
import textwrap
import time
from dataclasses import replace
from typing import cast

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import ConfigurationError, RetryPolicy
from otel_openai_retry._endpoints import EndpointGuard, Endpoints
from otel_openai_retry._fleet import REPORT_EVERY, Reservation
from otel_openai_retry._fleet_guard import RedisGuard
from otel_openai_retry._fleet_reporter import REPORT_SPACING
from otel_openai_retry._pacing_evidence import TRIAL_MARGIN
from otel_openai_retry._slots import take_slot
from otel_openai_retry._token_learning import LEARNT_BURST
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from ..helpers import MESSAGES, Instrument, Sdk, async_client, calls, run_python
from .conftest import RedisServer, crowd, fleet, in_use, wait_until
from .test_fleet_join import Prompt

HEADERS = {
    "x-ratelimit-limit-requests": "10",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1s",
}
"""A server refilling 10 requests per second."""


def both_hear_the_fleet_paces(mine: EndpointGuard, theirs: EndpointGuard) -> None:
    """Once ``mine`` has reported a 429: ``theirs``, using the endpoint, hears at its next report
    that the fleet paces it, and so does ``mine``."""
    paced = [cast("RedisGuard", guard).fleet_paces for guard in (mine, theirs)]
    wait_until(lambda: in_use(theirs) and all(paces() for paces in paced))


async def test_an_endpoint_not_paced_costs_no_round_trip_per_call(
    sdk: Sdk, server: FakeOpenAIServer, redis_server: RedisServer, instrument: Instrument
) -> None:
    """Calls count locally: one round trip to join the fleet (its first call), then one report
    per ``REPORT_EVERY`` (or none, once idle) is all Redis sees."""
    instrument(policy=fleet(redis_server.url))
    client = sdk.client(server)
    before, started = redis_server.scripts_run(), time.monotonic()
    for _ in range(150):
        await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))
    elapsed = time.monotonic() - started
    used = redis_server.scripts_run() - before
    reports = elapsed / REPORT_EVERY + 1
    assert used <= 1 + reports, (used, elapsed)  # bounded by the time taken, not the calls
    assert used < 150
    # the fleet's budget heard of them: requests counted in the endpoint's hash
    await asyncio.sleep(REPORT_EVERY * 2)
    [key] = redis_server.client.keys("otel_openai_retry:*")
    counted = cast("dict[str, str]", redis_server.client.hgetall(key))
    assert sum(int(v) for f, v in counted.items() if f.startswith("r:")) == 150


async def test_an_async_call_books_its_slot_without_blocking_its_event_loop(
    sdk: Sdk, server: FakeOpenAIServer, redis_server: RedisServer, instrument: Instrument
) -> None:
    """While the fleet paces, sync calls book their slots with the sync client and async calls
    with the fleet's threads' client, awaited, never with a blocking socket on their loop
    (Redis's own list of connections, each named for its role, says which)."""
    redis_server.client.client_kill_filter(_type="normal", skipme=True)  # earlier tests' clients
    instrument(policy=fleet(redis_server.url))
    client = sdk.client(server)
    call = lambda: client.chat.completions.create(model="m", messages=MESSAGES)  # noqa: E731
    server.script(Fault.rate_limit(retry_after_ms=10))  # a 429: the fleet paces from the report
    await sdk(call)

    def fleet_paces() -> bool:
        keys = cast("list[str]", redis_server.client.keys("otel_openai_retry:*"))
        return any(redis_server.client.hget(key, "engaged") for key in keys)

    wait_until(fleet_paces)
    await asyncio.sleep(REPORT_EVERY * 2)  # and this process has heard so
    server.set_rate_limit(100, burst=5)
    before = redis_server.scripts_run()
    await sdk.gather(*[call] * 60)
    assert redis_server.scripts_run() - before > 10  # slots booked in Redis, one per attempt
    names = {c["name"] for c in redis_server.client.client_list()}
    assert "otel-openai-retry:report" in names
    booked = {"otel-openai-retry:slot-thread" if sdk.is_async else "otel-openai-retry:slot-sync"}
    assert names & {"otel-openai-retry:slot-thread", "otel-openai-retry:slot-sync"} == booked


def duration(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


async def test_callers_beyond_the_booking_horizon_ask_again_and_wait_it_all(
    sdk: Sdk,
    server: FakeOpenAIServer,
    redis_server: RedisServer,
    instrument: Instrument,
    exporter: InMemorySpanExporter,
) -> None:
    """A fleet paces at the server's 10/s; a crowd of 30 comes: a queue of three seconds, of
    which one (``HORIZON``) is booked at once. The others ask again as their turn nears: every
    call succeeds, each attempt was sent once, and each call's pacing wait is all it waited for
    its slot, the asking again included: its span's time outside its attempt (counting only the
    last ask's wait would leave a second or more out for the calls further back)."""
    instrument(policy=fleet(redis_server.url))
    client = sdk.client(server)
    call = lambda: client.chat.completions.create(model="m", messages=MESSAGES)  # noqa: E731
    server.set_rate_limit(10, burst=1)
    await sdk.gather(*[call] * 2)  # one is refused: the fleet paces at the headers' rate

    def fleet_paces() -> bool:
        keys = cast("list[str]", redis_server.client.keys("otel_openai_retry:*"))
        seconds, micros = redis_server.client.time()
        now = seconds * 1000 + micros / 1000
        return any(float(redis_server.client.hget(k, "engaged") or 0) > now for k in keys)

    wait_until(fleet_paces)
    await asyncio.sleep(REPORT_EVERY * 2)  # and this process has heard so
    await asyncio.sleep(0.2)  # the bucket refilled: the crowd's first slot is free
    server.reset()
    server.set_rate_limit(10, burst=3)  # a little room for the event loop's jitter
    exporter.clear()
    await sdk.gather(*[call] * 30)
    statuses = server.status_counts()
    assert statuses.get("200") == 30
    logical = calls(exporter.get_finished_spans())
    attempts = sum(int(cast("int", c.attr("openai_retry.attempts"))) for c in logical)
    assert len(logical) == 30 and attempts == len(server.requests)
    throttled = [float(cast("float", c.attr("openai_retry.total_throttle") or 0)) for c in logical]
    for c, waited in zip(logical, throttled, strict=True):  # all its time outside its attempts
        slept = float(cast("float", c.attr("openai_retry.total_sleep") or 0))
        outside = duration(c.span) - sum(duration(a) for a in c.attempts)
        assert 0 <= outside - waited - slept < 0.3, (outside, waited, slept)
    assert max(throttled) > 1.5, throttled  # a queue longer than the horizon: callers asked again


async def test_429s_that_do_not_depend_on_the_rate_leave_the_fleet_unpaced(
    server: FakeOpenAIServer,
    redis_server: RedisServer,
    instrument: Instrument,
    exporter: InMemorySpanExporter,
) -> None:
    """A tenth of all requests answered 429 however slowly the fleet sends (a limit shared with
    other applications): the fleet measures what it sends unpaced, tries a little slower, sees
    the 429s stay, and stops pacing. Later calls, 429s and all, book no slot in Redis (reports
    alone reach it) and the fleet does not engage again; every call succeeds, each attempt sent
    once. A fleet that kept pacing held every call to a slot far under what the server takes."""
    instrument(policy=fleet(redis_server.url))
    server.set_random_rejections(0.1, seed=7, retry_after_ms=10)
    server.set_latency(0.2)  # a 429 comes back at once, a success after this
    client = async_client(server)

    def fleet_state() -> tuple[float, float]:
        """ms until the fleet stops pacing, and until its verdict of rate-independence ends."""
        keys = cast("list[str]", redis_server.client.keys("otel_openai_retry:*"))
        seconds, micros = redis_server.client.time()
        now = seconds * 1000 + micros / 1000
        engaged, aside = (
            max((float(redis_server.client.hget(k, field) or 0) for k in keys), default=0.0)
            for field in ("engaged", "aside")
        )
        return engaged - now, aside - now

    deadline = time.monotonic() + 45  # about 3 s; a starved machine's answers come slowly
    engaged_ever = False
    while fleet_state()[1] <= 0:
        keys = cast("list[str]", redis_server.client.keys("otel_openai_retry:*"))
        assert time.monotonic() < deadline, [
            {k: v for k, v in redis_server.client.hgetall(key).items() if b":" not in k}
            for key in keys
        ]
        assert all(await crowd(client, 128, concurrency=64))
        engaged_ever = engaged_ever or fleet_state()[0] > 0
    assert engaged_ever  # it paced, and judged
    await asyncio.sleep(REPORT_EVERY * 2)  # this process has heard that it no longer does
    server.reset()  # forgets the conditions too
    server.set_random_rejections(0.1, seed=8, retry_after_ms=10)
    server.set_latency(0.2)
    exporter.clear()
    before, started = redis_server.scripts_run(), time.monotonic()
    assert all(await crowd(client, 300, concurrency=32))
    elapsed = time.monotonic() - started
    assert server.status_counts().get("429", 0) > 0
    used = redis_server.scripts_run() - before
    # reports alone (429s wake the reporter, no more often than REPORT_SPACING), no slot per call
    assert used <= 2 + elapsed / REPORT_SPACING and used < 300 / 4, (used, elapsed)
    assert fleet_state()[0] <= 0  # and the fleet does not pace
    logical = calls(exporter.get_finished_spans())
    attempts = sum(int(cast("int", c.attr("openai_retry.attempts"))) for c in logical)
    assert len(logical) == 300 and attempts == len(server.requests)


def test_tokens_an_answer_used_beyond_its_booking_are_charged_to_the_whole_fleet(
    redis_server: RedisServer,
) -> None:
    """The fleet paces tokens at about 1,000 a second, a second's worth at once. A call booked
    its prompt's 100 tokens; its answer used 1,100 (no ``max_tokens``: the estimate is the
    prompt alone). Another process's next call waits for the difference, as the server's bucket
    will: the fleet's token schedule moved on, not only this process's."""
    headers = {
        "x-ratelimit-limit-requests": "1000",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1s",
    }
    policy = fleet(redis_server.url)
    first, second = Endpoints(policy), Endpoints(policy)
    try:
        mine, theirs = first.guard("http://api", "m"), second.guard("http://api", "m")
        mine.throttled(time.monotonic(), None, headers)
        both_hear_the_fleet_paces(mine, theirs)
        [key] = redis_server.client.keys("otel_openai_retry:*")
        wait_until(lambda: float(redis_server.client.hget(key, "trate") or 0) > 900)
        time.sleep(1.1)  # the token bucket is full again
        now = time.monotonic()
        assert take_slot(mine, now, math.inf, Prompt(100))[::2] == (0.0, 100)
        booked = float(redis_server.client.hget(key, "ttat") or 0)
        mine.tokens_used(now, 100, 1100)  # reported by the reporter thread from now on
        wait_until(lambda: float(redis_server.client.hget(key, "ttat") or 0) > booked + 900)
        asked = time.monotonic()
        wait, _, _ = take_slot(theirs, asked, math.inf, Prompt(100))
        # Its slot: 0.2 s after ``now`` (the 100 booked, then the 1,000 charged, in a bucket of
        # 1,000); without the charge, at once. The wait counts from when it asked.
        assert wait is not None and asked - now + wait > 0.15, (wait, asked - now)
    finally:
        first.close()
        second.close()


def test_a_fleets_verdict_that_slowing_does_not_help_sets_each_process_aside(
    redis_server: RedisServer,
) -> None:
    """Each process's limiter runs its own trial, but judges the fleet's schedule and sees a
    share of the answers: slow to conclude, it would keep pacing its process long after the
    fleet, from all the answers, stood aside. Hearing the fleet's verdict, it stands aside too:
    its slots are free at once, and a 429 engages it no more."""
    policy = fleet(redis_server.url)
    endpoints = Endpoints(policy)
    try:
        guard = endpoints.guard("http://api", "m")
        limiter = guard.local.limiter  # type: ignore[attr-defined]
        now = time.monotonic()
        guard.throttled(now, None, None)
        assert limiter.engaged and not limiter.independent
        key = cast("RedisGuard", guard).key
        wait_until(lambda: in_use(guard) and redis_server.client.hget(key, "ref") is not None)
        seconds, micros = redis_server.client.time()
        redis_server.client.hset(  # what the fleet's trial leaves when the 429s stayed
            key, mapping={"aside": seconds * 1000 + micros / 1000 + 60_000, "engaged": 0}
        )
        wait_until(lambda: in_use(guard) and limiter.independent)
        later = time.monotonic()
        assert guard.slot_delay(later, math.inf) == 0
        guard.throttled(later, None, None)
        assert not limiter.engaged
    finally:
        endpoints.close()


def test_a_429_seen_by_one_process_paces_the_fleet(redis_server: RedisServer) -> None:
    """Two processes' endpoint tables (two instrumentations): one sees a 429 with the server's
    rate; the other, which saw none, takes its slots from the same schedule."""
    policy = fleet(redis_server.url)
    first, second = Endpoints(policy), Endpoints(policy)
    try:
        mine, theirs = first.guard("http://api", "m"), second.guard("http://api", "m")
        mine.throttled(time.monotonic(), None, HEADERS)
        # the other process, using the endpoint, hears of it at its next report
        both_hear_the_fleet_paces(mine, theirs)
        assert theirs.pacing()
        now = time.monotonic()
        delays = [g.slot_delay(now, math.inf) for g in (mine, theirs, mine)]  # within 250 ms
        assert all(d is not None for d in delays)
        gaps = [b - a for a, b in itertools.pairwise(delays)]  # type: ignore[operator]
        assert all(0.09 < gap < 0.12 for gap in gaps), delays  # 9.8 per second, all together
    finally:
        first.close()
        second.close()


def test_a_whole_second_retry_after_closes_the_fleet_for_one_interval_of_the_servers_rate(
    redis_server: RedisServer,
) -> None:
    """``retry-after: 1`` rounds up a wait the same answer's headers put at a tenth of a second:
    the caller that got it sleeps the whole second (the SDK's contract), but the fleet's other
    callers are held one interval of the server's rate, as one process's are, not the second
    (a fleet idle for most of a second it could use, each time)."""
    policy = fleet(redis_server.url)
    endpoints = Endpoints(policy)
    try:
        guard = endpoints.guard("http://api", "m")
        guard.throttled(time.monotonic(), 1.0, HEADERS)
        key = cast("RedisGuard", guard).key

        def gate_reported() -> bool:
            return redis_server.client.hget(key, "gate") is not None

        wait_until(gate_reported)
        seconds, micros = redis_server.client.time()
        gate = float(redis_server.client.hget(key, "gate") or 0)
        assert gate - (seconds * 1000 + micros / 1000) <= 100 + 5  # 10 per second: 100 ms
    finally:
        endpoints.close()


def test_retries_spent_before_the_fleet_answered_count_against_its_budget(
    redis_server: RedisServer,
) -> None:
    """Until a process has heard the fleet's counts (its first report, or after they went
    stale), it decides by its own budget; what it spends meanwhile is the fleet's all the same."""
    policy = replace(fleet(redis_server.url), budget=0.1)
    first, second = Endpoints(policy), Endpoints(policy)
    try:
        mine, theirs = first.guard("http://api", "m"), second.guard("http://api", "m")
        now = time.monotonic()
        mine.sent(now)
        assert getattr(mine, "_totals", None) is None, "not heard from the fleet yet"
        spent = 0
        while mine.may_retry(now, 503):
            spent += 1
        assert spent > 0

        def heard() -> bool:
            in_use(theirs)
            totals = getattr(theirs, "_totals", None)
            return totals is not None and totals[1] >= spent

        wait_until(heard)
    finally:
        first.close()
        second.close()


def test_the_retry_budget_is_the_fleets(redis_server: RedisServer) -> None:
    """Retries one process spends come out of what every process may spend."""
    policy = replace(fleet(redis_server.url), budget=0.1)
    first, second = Endpoints(policy), Endpoints(policy)
    try:
        mine, theirs = first.guard("http://api", "m"), second.guard("http://api", "m")
        now = time.monotonic()
        for _ in range(10):
            mine.sent(now)
            theirs.sent(now)
        wait_until(lambda: getattr(theirs, "_totals", None) is not None)
        spent = 0
        while mine.may_retry(time.monotonic(), 503):
            spent += 1
        assert 100 <= spent <= 103  # 0.1 x the requests heard of + the reserve of 100 a window
        # in use, it reads the fleet's counts back at its next report
        sends = [20]

        def heard() -> bool:
            sends[0] += in_use(theirs)
            totals = getattr(theirs, "_totals", None)
            return totals is not None and totals[1] >= spent

        wait_until(heard)
        more = 0
        while theirs.may_retry(time.monotonic(), 503):
            more += 1
        assert spent + more <= 0.1 * sends[0] + 100 + 1  # alone it could have spent 100 more
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    "url", ["http://:hunter2@cache:6379", "http://cache:6379/0?password=hunter2&db=1"]
)
def test_a_bad_url_is_refused_at_instrument_time(
    url: str, monkeypatch: pytest.MonkeyPatch, instrument: Instrument
) -> None:
    """Refused with the variable's name, and never with the password (redis-py takes one in
    the URL's user part or in its query)."""
    monkeypatch.setenv("OTEL_OPENAI_RETRY_REDIS_URL", url)
    with pytest.raises(ConfigurationError) as refused:
        instrument()
    message = str(refused.value)
    assert "OTEL_OPENAI_RETRY_REDIS_URL" in message and "redis://" in message
    assert "hunter2" not in message
    assert "hunter2" not in repr(RetryPolicy(redis_url="redis://:hunter2@cache:6379"))


def test_under_trio_the_slot_is_local(
    server: FakeOpenAIServer, redis_server: RedisServer, instrument: Instrument
) -> None:
    """No asyncio loop to run redis-py's asyncio client on: the fleet's pacing state still
    arrives through the reporter, but the slot comes from the per-process schedule."""
    import trio

    instrument(policy=fleet(redis_server.url))
    server.set_rate_limit(50, burst=5)

    async def main() -> int:
        client = async_client(server)
        done = 0

        async def one() -> None:
            nonlocal done
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(60):
                nursery.start_soon(one)
        return done

    assert trio.run(main) == 60


def test_a_forked_worker_shares_too(redis_server: RedisServer) -> None:
    """Instrumented before a fork (a pre-forking server's workers): each child has its own
    reporter, so its counts reach the fleet."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from otel_openai_retry import RetryPolicy
        from otel_openai_retry._endpoints import EndpointGuard, Endpoints
        guard = Endpoints(RetryPolicy(redis_url={redis_server.url!r})).guard("http://api", "m")
        guard.sent(time.monotonic())
        pid = os.fork()
        if pid == 0:
            guard.sent(time.monotonic())
            deadline = time.monotonic() + 10
            while guard._totals is None or guard._totals[0] < 2:
                if time.monotonic() > deadline:
                    os._exit(1)
                time.sleep(0.05)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    done = run_python("-W", "ignore::DeprecationWarning", "-c", code, timeout=60)
    assert done.stdout.split() == ["0"], done.stderr


def test_a_token_limit_no_header_states_is_found_and_paced_by_the_whole_fleet(
    redis_server: RedisServer,
) -> None:
    """A token 429 with no header: the fleet finds the token rate from all its processes'
    answers (each alone, slowing its own tokens, sees the others' keep the 429s coming, and
    stands aside), and every process then books its tokens from the fleet's schedule, the one
    that never met a 429 too. A process's own found rate is not added on top."""
    policy = fleet(redis_server.url)
    first, second = Endpoints(policy), Endpoints(policy)
    try:
        mine, theirs = first.guard("http://api", "m"), second.guard("http://api", "m")
        mine.throttled(time.monotonic(), None, None, "tokens")
        for step in range(8):  # 1,000 tokens every 0.1 s from both: 10,000 a second
            for guard in (mine, theirs):
                guard.answered(time.monotonic(), None)
                guard.tokens_used(time.monotonic(), 500, 500)
            if step >= 2:  # and 429s all along: the limit, met
                mine.throttled(time.monotonic(), None, None, "tokens")
            time.sleep(REPORT_EVERY)
        [key] = redis_server.client.keys("otel_openai_retry:*")
        wait_until(lambda: float(redis_server.client.hget(key, "tphase") or 0) == 2)
        both_hear_the_fleet_paces(mine, theirs)
        rate = float(redis_server.client.hget(key, "frate") or 0)
        burst = float(redis_server.client.hget(key, "fburst") or 0)
        assert 0.5 * 10_000 * TRIAL_MARGIN < rate < 1.5 * 10_000 * TRIAL_MARGIN
        assert burst == pytest.approx(rate * LEARNT_BURST, rel=0.01)
        # Each wait is on Redis's clock, from when its reservation ran: shorter by the time
        # since the first (a round trip, or a busy machine's stall), never longer.
        now = time.monotonic()
        assert take_slot(mine, now, math.inf, Prompt(int(burst)))[0] == pytest.approx(0, abs=0.02)
        held, _, _ = take_slot(theirs, now, math.inf, Prompt(int(burst / 2)))
        since = time.monotonic() - now
        assert held is not None
        assert burst / 2 / rate - since - 0.02 <= held <= burst / 2 / rate + 0.02, (
            "the fleet's token schedule",
            held,
            since,
        )
        again, _, _ = take_slot(mine, now, math.inf, Prompt(int(burst / 2)))
        since = time.monotonic() - now
        assert again is not None
        assert burst / rate - since - 0.02 <= again <= burst / rate + 0.02, (
            "the fleet's alone, not its own too",
            again,
            since,
        )
    finally:
        first.close()
        second.close()


async def test_a_join_cancelled_in_flight_leaves_the_next_call_to_join(
    redis_server: RedisServer,
) -> None:
    """The process's first call to an endpoint joins the fleet (a round trip); the others wait
    for its answer a moment at most. Cancelled on the way (its caller's own timeout, while Redis
    was slow), that join never answered, and every later call of the process waited for it, a
    round trip's timeout each, for as long as the process lived. Now the next call joins."""
    endpoints = Endpoints(fleet(redis_server.url))
    try:
        guard = endpoints.guard("http://api", "m")
        assert guard.shared_slot(), "yet to join"
        redis_server.client.client_pause(300)  # Redis slow
        joining = asyncio.ensure_future(guard.aslot_delay(time.monotonic(), math.inf))
        await asyncio.sleep(0.03)
        joining.cancel()
        with pytest.raises(asyncio.CancelledError):
            await joining
        await asyncio.sleep(0.35)  # Redis answers again
        assert guard.shared_slot(), "the join is still to be made"
        assert await guard.aslot_delay(time.monotonic(), math.inf) == 0
        assert not guard.shared_slot(), "joined: no round trip while the fleet does not pace"
        assert guard.slot_delay(time.monotonic(), math.inf) == 0
    finally:
        endpoints.close()


def test_a_send_refused_for_its_tokens_asks_the_fleet_for_all_of_them_until_booked(
    redis_server: RedisServer,
) -> None:
    """A send the fleet's found token schedule let go at a bucket's worth, refused by the
    limit for its tokens: the same send (the same estimate) asking again asks for all of them
    (half a second of the rate at most) until a slot has booked them. Told to ask again (its
    slot beyond the horizon: a queue longer than that, as near a limit), it still asks for all
    of them (forgotten there, long prompts ran out of attempts); once booked, it is forgotten."""
    endpoints = Endpoints(fleet(redis_server.url))
    try:
        guard = cast("RedisGuard", endpoints.guard("http://api", "m"))
        assert guard.slot_delay(time.monotonic(), math.inf, 10) == 0  # joined
        guard.throttled(time.monotonic(), None, None, "tokens", reserved=2_000)
        wait_until(guard.fleet_paces)  # the fleet heard the token 429: it finds the rate

        def paced_at_1000_a_second(queue_s: float) -> None:
            seconds, micros = redis_server.client.time()
            now_ms = seconds * 1000 + micros / 1000
            redis_server.client.hset(
                guard.key,
                mapping={"tphase": 3, "frate": 1_000, "fburst": 250, "thold": now_ms,
                         "tengaged": now_ms + 60_000, "ttat": now_ms + queue_s * 1000},
            )  # fmt: skip

        paced_at_1000_a_second(queue_s=1.5)
        again = guard.slot_delay(time.monotonic(), math.inf, 2_000)
        assert again is not None and again < 0, "beyond the horizon: ask again, none booked"
        # a send of that size already in flight (it asked before the refusal) books a bucket's
        # worth: the refused one's mark stays
        booked_before = Reservation(100_000, 60_000, True, True)
        guard._slot(booked_before, time.monotonic(), math.inf, 2_000, False)
        paced_at_1000_a_second(queue_s=0)  # the bucket full
        # Waits on Redis's clock from the time read above: shorter by what has passed since
        whole = guard.slot_delay(time.monotonic(), math.inf, 2_000)
        assert whole is not None and 0.1 < whole <= 0.26, "500 tokens: 250 beyond the bucket"
        later = guard.slot_delay(time.monotonic(), math.inf, 2_000)
        assert later is not None and 0.3 < later <= 0.51, "booked: a bucket's worth again"
    finally:
        endpoints.close()


def test_a_process_hearing_the_fleets_token_verdict_finds_no_rate_of_its_own(
    redis_server: RedisServer,
) -> None:
    """The fleet judged, from all its processes' answers, that its tokens are not what the
    token 429s depend on: a process's own token 429s then start no rate of its own (slowing
    alone, it would see the others' keep the 429s coming, and only lose its time to a trial)."""
    endpoints = Endpoints(fleet(redis_server.url))
    try:
        guard = cast("RedisGuard", endpoints.guard("http://api", "m"))
        assert guard.slot_delay(time.monotonic(), math.inf, 10) == 0  # joined
        seconds, micros = redis_server.client.time()
        redis_server.client.hset(guard.key, "taside", seconds * 1000 + micros / 1000 + 60_000)
        tokens = guard.local.tokens
        assert tokens is not None
        guard.throttled(time.monotonic(), None, None, "tokens", reserved=100)
        wait_until(lambda: not tokens.finding)  # its report heard the verdict
        assert guard._tokens_apart
        guard.throttled(time.monotonic(), None, None, "tokens", reserved=100)
        assert not (tokens.finding or tokens.engaged)
    finally:
        endpoints.close()
