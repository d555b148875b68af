"""The Lua reservation on a real Redis, from several processes at once: the schedule it grants,
read on Redis's own clock, never exceeds the rate and the burst, for requests and for tokens."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import textwrap
import time

import pytest

from otel_openai_retry._fleet_scripts import (
    MEASURE,
    NOT_PACED,
    REPORT,
    REPORT_CONSTANTS,
    REPORT_SPAN,
    RESERVE,
    TOO_LATE,
)
from otel_openai_retry._pacing import ENGAGE_FACTOR, HINT_MARGIN, START_FLOOR
from otel_openai_retry._pacing_evidence import BACKOFF, TRIAL_MARGIN

from ..helpers import clean_environment
from .conftest import RedisServer

KEY = "otel_openai_retry:{test}"

_RESERVER = textwrap.dedent(
    """
    import json, sys
    import redis
    port, count, tokens, script = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    client = redis.Redis(port=port)
    sha = client.script_load(script)
    grants = []
    for _ in range(count):
        # TIME and the script in one transaction: both read Redis's clock at the same instant
        pipe = client.pipeline(transaction=True)
        pipe.time()
        pipe.evalsha(sha, 1, "otel_openai_retry:{test}", 1, tokens, -1, 600000, 5000)
        (seconds, micros), (wait, *_) = pipe.execute()
        grants.append((seconds + micros / 1e6 + wait / 1e6, wait))
    print(json.dumps(grants))
    """
)


def reserve_from(
    server: RedisServer, processes: int, count: int, tokens: int = 0
) -> list[tuple[float, int]]:
    """Every slot granted to ``processes`` processes reserving ``count`` each, at once: its time
    on Redis's clock and the wait it was granted with (microseconds), in the order of time."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _RESERVER, str(server.port), str(count), str(tokens), RESERVE],
            env=clean_environment(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    grants: list[tuple[float, int]] = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        grants += [(at, wait) for at, wait in json.loads(out)]
    return sorted(grants)


def most_in_any_window(grants: list[float], width: float, weight: float = 1.0) -> float:
    """The most granted (``weight`` each) in any window of ``width`` seconds (less the
    microseconds the script's reply is rounded to)."""
    most, first = 0.0, 0
    for last, at in enumerate(grants):
        while at - grants[first] >= width - 2e-6:
            first += 1
        most = max(most, (last - first + 1) * weight)
    return most


def pace(server: RedisServer, **fields: float) -> None:
    now = server.client.time()
    fields["engaged"] = now[0] * 1000 + 3_600_000
    for name, value in fields.items():
        server.client.hset(KEY, name, value)


@pytest.mark.parametrize("burst", [1, 5])
def test_the_fleet_schedule_never_exceeds_rate_and_burst(
    redis_server: RedisServer, burst: int
) -> None:
    rate = 200.0
    pace(redis_server, rate=rate, burst=burst)
    booked = reserve_from(redis_server, processes=4, count=50)
    grants = [at for at, _ in booked]
    assert len(grants) == 200
    for width in (0.05, 0.2, 0.5):
        assert most_in_any_window(grants, width) <= burst + rate * width + 1e-6, width
    # and no capacity wasted: while requests wait, slots follow one another an interval apart,
    # so a slot a whole interval later than that went to a request that came after it and was
    # granted at once (on a busy machine, the processes ask more slowly than the rate: the
    # schedule then follows them, without idling). The slot's time is read as TIME plus the
    # wait, and Redis may be descheduled between the two on a busy machine: hence not "later
    # than one interval" but "a slot skipped".
    for (before, _), (at, wait) in itertools.pairwise(booked):
        if at - before > 2 / rate + 2e-3:
            assert wait == 0, (before, at, wait)


def test_tokens_are_booked_with_the_request(redis_server: RedisServer) -> None:
    """A request rate far above what the tokens allow: the tokens decide the schedule."""
    token_rate, token_burst, cost = 10_000.0, 2_000, 500
    pace(redis_server, rate=10_000, burst=1, trate=token_rate, tburst=token_burst)
    grants = [at for at, _ in reserve_from(redis_server, processes=4, count=25, tokens=cost)]
    for width in (0.1, 0.3, 1.0):
        assert most_in_any_window(grants, width, cost) <= token_burst + token_rate * width + 1e-6
    assert grants[-1] - grants[0] >= (100 * cost - token_burst) / token_rate - 0.01


def test_a_slot_beyond_the_deadline_or_an_unpaced_endpoint_books_nothing(
    redis_server: RedisServer,
) -> None:
    script = redis_server.client.register_script(RESERVE)
    assert script(keys=[KEY], args=[1, 0, -1, 60_000, 5_000]) == [NOT_PACED, 0, 0, 0]
    assert redis_server.client.exists(KEY) == 0
    pace(redis_server, rate=1, burst=1)
    first, *_ = script(keys=[KEY], args=[1, 0, -1, 60_000, 5_000])
    assert first == 0
    booked = redis_server.client.hget(KEY, "tat")
    wait, *_ = script(keys=[KEY], args=[1, 0, 500, 60_000, 5_000])  # next slot in ~1 s
    assert wait == TOO_LATE
    assert redis_server.client.hget(KEY, "tat") == booked
    wait, *_ = script(keys=[KEY], args=[1, 0, -1, 200, 5_000])  # beyond the gate cap: the cap
    assert wait == 200_000
    assert redis_server.client.hget(KEY, "tat") == booked
    wait, *_ = script(keys=[KEY], args=[1, 0, -1, 60_000, 5_000])
    assert 900_000 < wait <= 1_000_000


def test_a_slot_beyond_the_horizon_is_asked_for_again_at_the_rate_of_then(
    redis_server: RedisServer,
) -> None:
    """Slots are booked a horizon ahead at most: a caller further back in the queue is told to
    ask again when its slot would be within it, and nothing is booked for it. So a rate the
    fleet learns meanwhile reaches it, not only those who come after a queue booked at the old
    rate (a fleet that engaged at a guess far under the limit crawled at it for seconds)."""
    script = redis_server.client.register_script(RESERVE)
    pace(redis_server, rate=10, burst=1)
    horizon = 250
    args = [1, 0, -1, 60_000, 5_000, 0, horizon]
    replies = [script(keys=[KEY], args=args) for _ in range(4)]
    assert [booked for _, _, booked, _ in replies] == [1, 1, 1, 0]  # 0, 100 and 200 ms; not 300
    booked_until = float(redis_server.client.hget(KEY, "tat") or 0)
    again = replies[3][0]
    assert 0 < again <= (300 - horizon) * 1000  # ask again once the slot is within the horizon
    redis_server.client.hset(KEY, "rate", 100)  # meanwhile the fleet learnt a higher rate
    time.sleep(again / 1e6)
    wait, _, booked, _ = script(keys=[KEY], args=args)
    assert booked == 1 and wait <= horizon * 1000
    tat = float(redis_server.client.hget(KEY, "tat") or 0)
    assert tat - booked_until == pytest.approx(1000 / 100)  # the next one at the new rate


def test_a_request_larger_than_the_bucket_books_no_more_than_the_bucket(
    redis_server: RedisServer,
) -> None:
    """A huge estimate (``max_tokens=10**13``, which the server refuses anyway) costs the shared
    schedule one bucket at most: the next caller waits about one bucket's refill, not years."""
    script = redis_server.client.register_script(RESERVE)
    pace(redis_server, rate=10_000, burst=1, trate=1_000, tburst=2_000)
    first, *_ = script(keys=[KEY], args=[1, 10**13, -1, 120_000, 5_000])
    assert first == 0
    wait, *_ = script(keys=[KEY], args=[1, 100, -1, 120_000, 5_000])
    assert 0 < wait <= 2_000_000  # 2,000 tokens at 1,000 a second, then the next 100 fit


def report(
    server: RedisServer, throttled: int = 0, succeeded: int = 0, sent: int = 0, excess: int = 0
) -> float:
    """One process's report (no header rate, no gate): the fleet's request rate after it."""
    news = (sent, 0, throttled, -1, -1, succeeded, -1, 0, excess, 0, 0, 0)
    reply = server.client.eval(REPORT, 1, KEY, *news, *REPORT_CONSTANTS)
    return float(reply[3]) / 1000


def redis_now(server: RedisServer) -> float:
    """Milliseconds on Redis's clock."""
    seconds, micros = server.client.time()
    return float(seconds * 1000 + micros / 1000)


def measured(server: RedisServer, per_tick: int, over: int) -> tuple[float, float]:
    """An engagement without hints whose measuring window has just ended: ``per_tick``
    successes reported in each report span of it, ``over`` 429s. The fleet's rate after the
    next report, and the success rate the window saw."""
    engaged = report(server, throttled=1)
    assert engaged == START_FLOOR  # nothing sent yet: the floor
    now = redis_now(server)
    measure = now - MEASURE - 2 * REPORT_SPAN
    first = math.ceil(measure / REPORT_SPAN)
    ticks = range(first, math.floor(now / REPORT_SPAN))  # the spans that have ended
    for tick in ticks:
        server.client.hset(KEY, f"s:{tick}", per_tick)
    server.client.hset(KEY, mapping={"measure": measure, "over": over, "ref": 0})  # far over
    after = report(server)
    seen = per_tick * len(ticks) * 1000 / (redis_now(server) - first * REPORT_SPAN)
    return after, seen


def test_without_hints_a_429_lowers_the_fleet_to_what_got_through_once(
    redis_server: RedisServer,
) -> None:
    """The fleet sends at 200/s while 100 a second get through: a 429 sets the rate a margin
    under the fleet's success rate, not a step under its own; more 429s, to slots booked before
    (the schedule runs a second ahead), leave it there."""
    seconds, micros = redis_server.client.time()
    now_ms = seconds * 1000 + micros / 1000
    pace(redis_server, rate=200, tat=now_ms + 1000, began=now_ms - 10_000)
    report(redis_server, succeeded=100)
    lowered = report(redis_server, throttled=1)
    assert BACKOFF * 100 / 2 <= lowered <= BACKOFF * 100  # 100 over one to two seconds
    assert report(redis_server, throttled=5) == lowered


def test_without_hints_the_ceiling_is_what_got_through_not_a_rate_booked_before(
    redis_server: RedisServer,
) -> None:
    """A fleet that climbed past the limit (200/s booked, 100/s through) and was lowered: the
    429s of slots booked at the old rate lower it again once they are due, but the limit it
    then probes slowly towards is still where the successes came, not its own lowered rate (a
    fleet's success count arrives a report late: pinning the probe at its own rate left it
    far under the limit for seconds)."""
    seconds, micros = redis_server.client.time()
    now_ms = seconds * 1000 + micros / 1000
    pace(redis_server, rate=200, began=now_ms - 10_000)
    report(redis_server, succeeded=150)
    first = report(redis_server, throttled=1)
    redis_server.client.hset(KEY, mapping={"decreased": 0, "hold": 0})  # the guard is over
    second = report(redis_server, throttled=1)
    assert second == pytest.approx(first * BACKOFF, rel=0.01)
    assert float(redis_server.client.hget(KEY, "ceiling") or 0) >= first / BACKOFF * 0.99


def test_the_429s_of_processes_yet_to_hear_of_an_engagement_lower_nothing(
    redis_server: RedisServer,
) -> None:
    """The first 429 engages the fleet at a share of what it sent; the others that come within
    a report's interval (processes sending on their own until their next report), after the
    guard between two decreases too, leave the rate alone, however many."""
    engaged = report(redis_server, throttled=1)
    assert engaged > 0
    redis_server.client.hset(KEY, "decreased", 0)  # the guard is over; the interval is not
    for _ in range(20):
        assert report(redis_server, throttled=3, succeeded=1) == engaged


def test_without_hints_the_fleet_measures_what_gets_through_then_paces_under_it(
    redis_server: RedisServer,
) -> None:
    """A fleet's first wave is a burst of concurrent calls, not a rate: the rate it engages at
    is a guess. So, once every process has heard of the engagement, the fleet measures: 429s
    all along say it sent over the limit, and what got through meanwhile is the limit. The
    schedule goes as far under it as a process's own trial of whether its rate matters sends
    (each process's limiter judges the fleet's schedule as its own); the probe aims at it."""
    after, seen = measured(redis_server, per_tick=10, over=12)
    assert 0.8 * 1000 * 10 / REPORT_SPAN <= seen <= 1000 * 10 / REPORT_SPAN
    assert after == pytest.approx(TRIAL_MARGIN * seen, rel=0.02)
    assert float(redis_server.client.hget(KEY, "ceiling") or 0) == pytest.approx(seen, rel=0.02)
    assert float(redis_server.client.hget(KEY, "measure") or 0) == 0  # measured once


def test_without_hints_a_window_without_429s_says_the_fleet_was_under_the_limit(
    redis_server: RedisServer,
) -> None:
    """No 429 while the fleet measured (or a straggler's, few against what got through): its
    rate was under the limit, and what got through was that rate, not the limit. Nothing is
    set from it; the fleet grows from where it is."""
    after, _ = measured(redis_server, per_tick=10, over=2)
    assert after == START_FLOOR
    assert float(redis_server.client.hget(KEY, "ceiling") or 0) == 0


@pytest.mark.parametrize("limit", [False, True])
def test_a_fleet_paced_far_over_without_a_trial_is_judged_by_its_answers(
    redis_server: RedisServer, limit: bool
) -> None:
    """429s nine times the successes while the fleet measured: far over a limit, it paces at
    once at what got through, with no trial. If the answers to paced sends are still nine 429s
    in ten (most answers refused by a limit shared with others, nearly spent by them), the fleet
    stands aside as soon as that many could not be a fall by half: paced at what got through, it
    sent a tenth of what its processes send unpaced. If they vanish (``limit``), it paces on."""
    after, _ = measured(redis_server, per_tick=2, over=90)
    assert after > 0, "paced"
    redis_server.client.hset(KEY, "judge", redis_now(redis_server) - 1)  # the hold is over
    if limit:
        assert report_left(redis_server, succeeded=20) > 0
        assert report_left(redis_server, succeeded=100) > 0, "fell: a limit of ours"
    else:
        assert report_left(redis_server, throttled=18, succeeded=2) == 0, "stood aside"
        assert reserve(redis_server)[0] == NOT_PACED


def test_the_first_waves_of_processes_yet_to_hear_of_an_engagement_raise_its_rate(
    redis_server: RedisServer,
) -> None:
    """The process whose 429 engages the fleet reports only its own sends; the other processes'
    first waves arrive within a report's interval, with their 429s. What they sent is the
    fleet's, so the rate it engages at grows with them (never down)."""
    rates = [report(redis_server, throttled=3, sent=12)]
    later = redis_now(redis_server) + 60_000  # however slow this machine, within the interval
    redis_server.client.hset(KEY, mapping={"hold": later, "measure": later})
    rates += [report(redis_server, throttled=3, sent=12) for _ in range(3)]
    assert rates == sorted(rates)
    # 48 sent, counted since the fleet began to use the endpoint (its first report, a report's
    # interval after its first sends), over half a second at least (a burst is not a rate)
    began = float(redis_server.client.hget(KEY, "began") or 0)
    since = (redis_now(redis_server) + REPORT_SPAN - began) / 1000
    assert since < 1
    expected = max(START_FLOOR, 48 / max(0.5, since) * ENGAGE_FACTOR)
    assert rates[-1] == pytest.approx(expected, rel=0.05)


def test_the_fleet_paces_at_the_highest_header_rate_it_heard(redis_server: RedisServer) -> None:
    """Each process reads the server's rate from its answers' headers, a lower bound that is
    lower the emptier the bucket was: the fleet keeps the highest one of the engagement."""
    pace(redis_server, rate=50)
    news = (0, 0, 0, -1)
    for hinted, expected in [(90.0, 90.0), (100.0, 100.0), (88.0, 100.0)]:
        reply = redis_server.client.eval(
            REPORT, 1, KEY, *news, hinted, 1, -1, 0, 0, 0, 0, 0, *REPORT_CONSTANTS
        )
        assert float(reply[3]) / 1000 == pytest.approx(expected * HINT_MARGIN, abs=0.01)


def report_left(server: RedisServer, throttled: int = 0, succeeded: int = 0) -> int:
    """One process's report (no header rate, no gate): ms until the fleet stops pacing."""
    news = (0, 0, throttled, -1, -1, succeeded, -1, 0, 0, 0, 0, 0)
    return int(server.client.eval(REPORT, 1, KEY, *news, *REPORT_CONSTANTS)[0])


def reserve(server: RedisServer, joining: int = 0) -> tuple[int, int, int]:
    wait, left, booked, _ = server.client.eval(RESERVE, 1, KEY, 1, 0, -1, 60_000, 5_000, joining, 0)
    return int(wait), int(left), int(booked)


def trial_begun(server: RedisServer) -> float:
    """An engagement without hints whose reference, measured unpaced, saw 429s to a tenth of
    its answers (too few to be far over a limit): the fleet's rate once its trial has begun,
    the trial's lag already over."""
    assert report_left(server, throttled=1) > 0
    server.client.hset(KEY, "ref", redis_now(server) - 1000)  # it began a second ago
    assert report_left(server, throttled=9, succeeded=90) > 0  # 100 answers: enough
    rate = float(server.client.hget(KEY, "rate") or 0)
    server.client.hset(KEY, "judge", redis_now(server) - 1)
    return rate


def test_without_hints_the_fleet_first_measures_unpaced_and_paces_at_once_far_over(
    redis_server: RedisServer,
) -> None:
    """A 429 engages the fleet, but first it measures what it sends unpaced (429s that do not
    depend on its rate are there whatever it does, and pacing at a guess would only add
    waiting): slots cost no wait and book nothing. 429s twice the successes say it is far over
    a limit: it paces at once."""
    assert report_left(redis_server, throttled=1) > 0
    assert [reserve(redis_server)[0] for _ in range(5)] == [0] * 5
    assert redis_server.client.hget(KEY, "tat") is not None
    booked = float(redis_server.client.hget(KEY, "tat") or 0)
    assert booked <= redis_now(redis_server)  # nothing booked ahead
    redis_server.client.hset(KEY, "ref", redis_now(redis_server) - 200)
    report_left(redis_server, throttled=20, succeeded=6)
    waits = [reserve(redis_server)[0] for _ in range(5)]
    assert waits == sorted(waits) and waits[-1] > 0  # a schedule


def test_429s_that_stay_at_the_trials_rate_set_the_fleet_aside(
    redis_server: RedisServer,
) -> None:
    """The trial sends a little under the rate the reference's successes came at. Against a
    limit the 429s vanish; here they stay at a tenth: they do not depend on the fleet's rate.
    The fleet stops pacing, for everyone and for processes that join, and later 429s do not
    engage it again while the verdict stands."""
    rate = trial_begun(redis_server)
    assert rate == pytest.approx(TRIAL_MARGIN * 90, rel=0.05)  # 90 successes in a second
    assert report_left(redis_server, throttled=10, succeeded=90) == 0
    assert reserve(redis_server)[0] == NOT_PACED
    assert reserve(redis_server, joining=1)[0] == NOT_PACED
    assert report_left(redis_server, throttled=30, succeeded=5) == 0


def test_429s_that_vanish_at_the_trials_rate_keep_the_fleet_pacing_at_the_limit(
    redis_server: RedisServer,
) -> None:
    """The same trial against a limit: the 429s vanish. The fleet paces on, from a margin under
    the rate the successes came at (the trial's own rate, under it, says nothing of the limit)."""
    trial_begun(redis_server)
    assert report_left(redis_server, throttled=0, succeeded=100) > 0
    ceiling = float(redis_server.client.hget(KEY, "ceiling") or 0)
    assert float(redis_server.client.hget(KEY, "rate") or 0) == pytest.approx(ceiling * BACKOFF)
    assert reserve(redis_server)[2] == 1


def test_a_fleet_slowed_far_under_what_got_through_with_429s_as_many_stands_aside(
    redis_server: RedisServer,
) -> None:
    """After a trial judged the fleet's rate to matter, its rate fell far under what got through
    unpaced (each 429 lowers it), yet the 429s did not fall: slowing did not help, whatever the
    trial said. The fleet stops pacing."""
    trial_begun(redis_server)
    assert report_left(redis_server, throttled=0, succeeded=100) > 0
    reference = float(redis_server.client.hget(KEY, "rrate") or 0)
    redis_server.client.hset(KEY, "rate", reference * 0.5)
    assert report_left(redis_server, throttled=5, succeeded=45) > 0  # too few answers yet
    assert report_left(redis_server, throttled=5, succeeded=45) == 0


def test_tokens_answers_used_beyond_their_booking_move_the_fleets_token_schedule_on(
    redis_server: RedisServer,
) -> None:
    """A request without ``max_tokens`` books its prompt alone; its answer's usage says what it
    cost. The processes report the difference, and the fleet's token schedule moves on by it: a
    bucket's worth at most a report (more says the bucket was overspent already)."""
    pace(redis_server, rate=100, trate=100, tburst=200)
    now = redis_now(redis_server)
    report(redis_server, succeeded=1, excess=50)
    moved = float(redis_server.client.hget(KEY, "ttat") or 0) - now
    assert 500 <= moved <= 500 + 50  # 50 tokens at 100 a second (and the report's own time)
    report(redis_server, succeeded=1, excess=10_000)
    assert float(redis_server.client.hget(KEY, "ttat") or 0) - now == pytest.approx(
        moved + 2000, abs=1
    )


def test_a_references_first_answers_do_not_end_it(redis_server: RedisServer) -> None:
    """A 429 comes back at once, a success after the server's latency: the first answers of a
    reference overstate the 429 fraction (here 10 of 24, where a tenth of all answers are
    429s). A trial judged against that would see the fraction fall however slowly it sent,
    and pace on, lower at each 429. So a reference lasts as long as one process's does (the
    answers of half a second), and a reference far over a limit a tenth of a second."""
    assert report_left(redis_server, throttled=10, succeeded=14) > 0
    assert float(redis_server.client.hget(KEY, "ref") or 0) > 0
    assert float(redis_server.client.hget(KEY, "trial") or 0) == 0
    assert reserve(redis_server)[0] == 0  # still unpaced


def test_while_the_fleet_measures_unpaced_tokens_are_still_booked(
    redis_server: RedisServer,
) -> None:
    """The reference leaves the request schedule out, not the token one: a token limit the
    fleet knows keeps holding back what does not fit, whatever the request side measures."""
    pace(redis_server, rate=1, burst=1, trate=100, tburst=100, ref=redis_now(redis_server))
    script = redis_server.client.register_script(RESERVE)
    args = [1, 100, -1, 60_000, 5_000]
    first, *_ = script(keys=[KEY], args=args)
    second, *_ = script(keys=[KEY], args=args)
    assert first == 0
    assert 900_000 < second <= 1_000_000  # the bucket's 100 tokens, refilled at 100 a second
    third, *_ = script(keys=[KEY], args=[1, 0, -1, 60_000, 5_000])
    assert third == 0  # no request schedule (1 a second) meanwhile
