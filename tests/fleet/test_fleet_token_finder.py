"""The fleet's token rate found from its answers when no header states it, in the real ``REPORT``
and ``RESERVE`` scripts on a real Redis: measured from what gets through while 429s come, tried a
margin under it, judged, then AIMD; set aside when slowing does not make the 429s fall; a
header's rate always first."""

from __future__ import annotations

import time
from typing import cast

import pytest

from otel_openai_retry._fleet_scripts import NOT_PACED, REPORT, REPORT_CONSTANTS, RESERVE
from otel_openai_retry._pacing import HINT_MARGIN
from otel_openai_retry._pacing_evidence import (
    BACKOFF,
    INDEPENDENT_HOLD,
    TRIAL_LAG,
    TRIAL_MARGIN,
    TRIAL_MIN_ANSWERS,
)
from otel_openai_retry._token_learning import LEARN_SPAN, LEARNT_BURST
from otel_openai_retry._token_pacing import WATCH_MIN_ANSWERS

from .conftest import RedisServer

KEY = "otel_openai_retry:{tokens}"


def report(
    server: RedisServer,
    throttled: int = 0,
    tokens: int = 0,
    successes: int = 0,
    token_hint: float = -1,
    requests_throttled: int = 0,
) -> int:
    """One process's report: ``throttled`` token 429s no header explains, ``successes`` that
    brought ``tokens`` in all; ms until the fleet stops pacing."""
    news = (0, 0, requests_throttled, -1, -1, successes, token_hint, 1000, 0)
    news_of_tokens = (throttled, tokens, successes)
    reply = server.client.eval(REPORT, 1, KEY, *news, *news_of_tokens, *REPORT_CONSTANTS)
    return int(reply[0])


def reserve(server: RedisServer, tokens: int) -> tuple[int, int, int, int]:
    """A slot for a send of ``tokens``: wait (µs), ms left, booked, the fleet's tokens."""
    wait, left, booked, fleets = server.client.eval(
        RESERVE, 1, KEY, 1, tokens, -1, 60_000, 5_000, 0, 0
    )
    return int(wait), int(left), int(booked), int(fleets)


def field(server: RedisServer, name: str) -> float:
    return float(server.client.hget(KEY, name) or 0)


def redis_now(server: RedisServer) -> float:
    seconds, micros = server.client.time()
    return float(seconds * 1000 + micros / 1000)


def measured(server: RedisServer, late_429s: int) -> float:
    """A fleet engaged by a token 429 that then reports 1,000 tokens of successes at once and
    every quarter of ``LEARN_SPAN`` for longer than it measures, with ``late_429s`` 429s in each
    later report: the rate the successes came at (the first report's within the report span
    before it)."""
    assert report(server, throttled=1) > 0
    assert field(server, "tphase") == 1
    step = LEARN_SPAN / 4
    report(server, tokens=1000, successes=5)  # the first successes start the window
    first = field(server, "tfirst")
    for _ in range(4):
        time.sleep(step)
        report(server, throttled=late_429s, tokens=1000, successes=5)
    return 5_000 * 1000 / (redis_now(server) - first)


def test_a_token_429_no_header_explains_engages_the_fleet_and_books_nothing_yet(
    redis_server: RedisServer,
) -> None:
    """The fleet is engaged (every process hears it and asks for its slots) but has no rate yet:
    a slot costs no wait and books nothing; the caller's own process paces meanwhile."""
    assert report(redis_server, throttled=1) > 0
    wait, left, booked, fleets = reserve(redis_server, 500)
    assert (wait, booked, fleets) == (NOT_PACED, 0, 0)
    assert left > 0, "still engaged: processes go on asking"
    assert field(redis_server, "rate") == 0, "request pacing is not told of token 429s"


def test_what_got_through_while_429s_came_is_the_limit_and_the_trial_paces_under_it(
    redis_server: RedisServer,
) -> None:
    """429s all along the window: a drained bucket admits tokens at its refill rate, so what
    got through is the limit. Every process's slot then books its tokens from the fleet's
    schedule, a margin under it, a quarter of a second's worth at once."""
    through = measured(redis_server, late_429s=2)
    assert field(redis_server, "tphase") == 2
    rate, burst = field(redis_server, "frate"), field(redis_server, "fburst")
    found = field(redis_server, "trrate")
    assert through <= found <= 5_000 / LEARN_SPAN  # measured once it had the span, by then
    assert rate == pytest.approx(TRIAL_MARGIN * found)
    assert burst == pytest.approx(rate * LEARNT_BURST, rel=0.01)
    first = reserve(redis_server, int(burst))
    assert first[0] == 0 and first[2:] == (1, 1), "the bucket full: at once, the fleet's tokens"
    wait, _, booked, fleets = reserve(redis_server, int(burst / 2))
    assert (booked, fleets) == (1, 1)
    assert wait / 1e6 == pytest.approx(burst / 2 / rate, abs=0.02)


def test_a_trial_is_judged_on_the_answers_to_slots_booked_at_its_rate(
    redis_server: RedisServer,
) -> None:
    """Slots booked while the fleet measured went at the brake's rate (over the limit, when the
    measurement was), up to the horizon ahead: their 429s are no news of the trial's rate. Its
    answers count once those slots have gone (in one traced run, they made a trial under the
    limit look as if its 429s had not fallen, and the fleet stood aside)."""
    assert report(redis_server, throttled=1) > 0
    report(redis_server, tokens=1000, successes=5)
    while field(redis_server, "tphase") == 1:
        time.sleep(LEARN_SPAN / 4)
        # slots booked 0.8 s ahead at the brake's rate, whichever report the trial starts at
        redis_server.client.hset(KEY, "ttat", redis_now(redis_server) + 800)
        report(redis_server, throttled=2, tokens=1000, successes=5)
    assert field(redis_server, "tphase") == 2
    assert field(redis_server, "tjudge") >= redis_now(redis_server) + 600
    report(redis_server, throttled=50, tokens=5000, successes=50)
    assert field(redis_server, "tpn") == 0, "answers to the slots booked before"


def test_too_few_429s_while_measuring_say_the_fleet_sent_under_the_limit(
    redis_server: RedisServer,
) -> None:
    """No 429 in the window's second half: the first wave's refused callers were sleeping their
    backoff and the few others got through, so what got through is not the limit. The fleet
    measures again, its sends held to a headroom over what it has seen, not tried under it."""
    through = measured(redis_server, late_429s=0)
    assert field(redis_server, "tphase") == 1, "still measuring"
    assert through * 0.9 <= field(redis_server, "tmax") <= 5_000 / LEARN_SPAN
    assert field(redis_server, "tcnt") < 20, "a new window"
    assert field(redis_server, "frate") >= field(redis_server, "tmax"), "held to a headroom"


def trial_judged(server: RedisServer, throttled: int) -> None:
    """A trial begun (its lag over) against a reference of 429s to a fifth of 100 answers, then
    answered with ``throttled`` 429s in ``TRIAL_MIN_ANSWERS``."""
    measured(server, late_429s=2)
    server.client.hset(KEY, mapping={"trt": 20, "trn": 100})
    server.client.hset(KEY, "tjudge", redis_now(server) - TRIAL_LAG * 1000 - 1)
    successes = TRIAL_MIN_ANSWERS - throttled
    report(server, throttled=throttled, tokens=100 * successes, successes=successes)


def test_a_trial_over_the_limit_is_tried_once_more_under_what_got_through(
    redis_server: RedisServer,
) -> None:
    """What got through while measuring came partly out of a bucket that had refilled while
    the first wave's callers slept: the trial, sent over the limit, left the 429s as they were,
    and far fewer tokens got through than it sent. That is no sign of 429s independent of our
    tokens: it is tried once more, a margin under what got through. The same again: aside."""
    measured(redis_server, late_429s=2)
    trial_rate = field(redis_server, "frate")
    redis_server.client.hset(KEY, mapping={"trt": 20, "trn": 100, "began": 0})
    redis_server.client.hset(KEY, "tjudge", redis_now(redis_server) - TRIAL_LAG * 1000 - 1)
    fields = cast("list[str]", redis_server.client.hkeys(KEY))
    measuring = [name for name in fields if name.startswith("k:")]
    redis_server.client.hdel(KEY, *measuring)  # a second later: what got through since
    got_through = int(trial_rate / 4)  # in the last second (and more: the span is a second)
    report(redis_server, throttled=20, tokens=got_through, successes=80)
    assert field(redis_server, "tphase") == 2, "tried again"
    assert field(redis_server, "frate") <= TRIAL_MARGIN * got_through
    redis_server.client.hset(KEY, "tjudge", redis_now(redis_server) - TRIAL_LAG * 1000 - 1)
    report(redis_server, throttled=20, tokens=1, successes=80)
    assert field(redis_server, "tphase") == 0, "the same again: not ours to slow for"
    assert field(redis_server, "taside") > redis_now(redis_server)


def test_a_trial_whose_429s_vanish_paces_on(redis_server: RedisServer) -> None:
    trial_judged(redis_server, throttled=0)
    assert field(redis_server, "tphase") == 3
    assert reserve(redis_server, 100)[3] == 1


def test_429s_that_stay_at_the_trials_rate_set_the_fleet_aside(
    redis_server: RedisServer,
) -> None:
    """Slowing the whole fleet's tokens left the 429s as frequent: they do not depend on its
    tokens (a quota shared with other applications). No token pacing, and later token 429s do
    not engage it again while the verdict stands."""
    trial_judged(redis_server, throttled=20)
    assert field(redis_server, "tphase") == 0
    assert field(redis_server, "taside") > redis_now(redis_server)
    assert reserve(redis_server, 100)[0] == NOT_PACED
    assert report(redis_server, throttled=5) == 0
    assert field(redis_server, "tphase") == 0
    assert 0 < verdict_ms(redis_server) <= INDEPENDENT_HOLD * 1000, "every process hears it"


def verdict_ms(server: RedisServer) -> int:
    """What a report hears of the fleet's verdict that its tokens do not matter: ms it holds."""
    news = (0, 0, 0, -1, -1, 1, -1, 1000, 0, 0, 0, 0)
    return int(server.client.eval(REPORT, 1, KEY, *news, *REPORT_CONSTANTS)[5])


def aside(server: RedisServer) -> bool:
    return field(server, "taside") > redis_now(server)


def test_a_fleet_aside_whose_unpaced_429s_rise_finds_the_rate_again(
    redis_server: RedisServer,
) -> None:
    """The trial, run near a limit it overstated, left 429s to a fifth of its answers: not
    fallen, so the fleet stood aside. Unpaced, three in five are refused: slowing did help. The
    verdict is withdrawn once the unpaced answers are enough to tell, the rate is found again,
    and this time the trial does not stand aside (its 429s as frequent as measuring's: AIMD)."""
    trial_judged(redis_server, throttled=20)
    assert aside(redis_server)
    for _ in range(WATCH_MIN_ANSWERS // 10 - 1):
        assert report(redis_server, throttled=6, tokens=400, successes=4) == 0
    assert aside(redis_server), "not on fewer answers than the watch judges on"
    assert report(redis_server, throttled=6, tokens=400, successes=4) > 0, "engaged again"
    assert not aside(redis_server) and verdict_ms(redis_server) == 0
    assert (field(redis_server, "tphase"), field(redis_server, "tproven")) == (1, 1)
    assert (field(redis_server, "tvn"), field(redis_server, "tawn")) == (0, 0), "spent"
    # a script of the previous version, sharing the hash, stands aside writing no counts: not
    # watched, rather than withdrawn at once on the counts that were spent
    redis_server.client.hset(KEY, "taside", redis_now(redis_server) + 60_000)
    report(redis_server, throttled=6, tokens=400, successes=4)
    assert aside(redis_server)
    redis_server.client.hset(KEY, mapping={"taside": 0, "tphase": 1})
    trial_judged(redis_server, throttled=20)
    assert field(redis_server, "tphase") == 3, "paced on, not aside"
    assert reserve(redis_server, 100)[3] == 1, "the fleet books the tokens"


def test_429s_as_frequent_unpaced_leave_the_fleet_aside(redis_server: RedisServer) -> None:
    """429s that do not depend on the fleet's tokens (a fifth of the answers, paced or not):
    a thousand unpaced answers later, the verdict stands, and nothing is paced."""
    trial_judged(redis_server, throttled=20)
    for _ in range(100):
        assert report(redis_server, throttled=2, tokens=800, successes=8) == 0
    assert aside(redis_server)
    assert field(redis_server, "tawn") == 1_000
    assert reserve(redis_server, 100)[0] == NOT_PACED


def test_a_fleet_aside_after_aimd_is_watched_against_aimds_answers(
    redis_server: RedisServer,
) -> None:
    """Stood aside in AIMD (slowed far under the measured rate, 429s not fallen): the watch
    compares the unpaced answers with AIMD's, not with the trial's."""
    settled(redis_server, 4_500)
    redis_server.client.hset(
        KEY, mapping={"trrate": 10_000, "trt": 10, "trn": 100, "tst": 30, "tsn": 100}
    )
    report(redis_server, throttled=1)
    assert aside(redis_server)
    assert (field(redis_server, "tvt"), field(redis_server, "tvn")) == (31, 101)
    for _ in range(10):  # 0.45 of 1,000 answers: not 1.5 times AIMD's 0.31
        report(redis_server, throttled=45, tokens=550, successes=55)
    assert aside(redis_server), "not clearly more frequent than AIMD's"
    for _ in range(10):  # 0.8 of the next 1,000
        report(redis_server, throttled=80, tokens=200, successes=20)
    assert not aside(redis_server) and field(redis_server, "tphase") == 1


def settled(server: RedisServer, rate: float) -> None:
    """A found rate past its trial, the fleet paced by it."""
    now = redis_now(server)
    server.client.hset(
        KEY,
        mapping={"tphase": 3, "frate": rate, "fburst": rate * LEARNT_BURST,
                 "tengaged": now + 60_000, "ttat": now, "trrate": rate, "tmeas": 1000,
                 "tcnt": 1, "began": now - 10_000},
    )  # fmt: skip


def test_a_token_429_lowers_the_found_rate_once_under_what_got_through(
    redis_server: RedisServer,
) -> None:
    """Paced at 20,000 tokens a second while 5,000 got through in the last second: a 429 sets
    the rate a margin under what got through; the 429s of slots booked before (the schedule
    runs ahead) leave it there."""
    settled(redis_server, 20_000)
    for _ in range(4):
        reserve(redis_server, 5_000)  # a second's slots booked ahead
    report(redis_server, tokens=5_000, successes=5)
    report(redis_server, throttled=1)
    lowered = field(redis_server, "frate")
    assert BACKOFF * 5_000 / 1.2 <= lowered <= BACKOFF * 5_000  # 5,000 over one second or so
    report(redis_server, throttled=3)
    assert field(redis_server, "frate") == lowered


def test_a_send_refused_for_its_tokens_asks_again_for_all_of_them(
    redis_server: RedisServer,
) -> None:
    """A found bucket is a guess (a quarter of a second of the rate), far under the server's: a
    send larger than it books the bucket's worth and goes; refused, it asks again for all of its
    tokens (half a second of the rate at most), waiting for those beyond the bucket too, and
    leaves the bucket empty, not in debt."""
    settled(redis_server, 1_000)  # a bucket of 250 tokens, full
    script = redis_server.client.register_script(RESERVE)
    args = [1, 2_000, -1, 60_000, 5_000, 0, 0]
    assert script(keys=[KEY], args=args)[0] == 0, "the bucket's worth, at once"
    redis_server.client.hset(KEY, "ttat", redis_now(redis_server))  # the bucket full again
    wait, *_ = script(keys=[KEY], args=[*args, 1])  # refused before: all of it, 500 at most
    assert wait / 1e6 == pytest.approx(0.25, abs=0.02), "the 250 beyond the bucket, refilled"
    small, *_ = script(keys=[KEY], args=[1, 100, -1, 60_000, 5_000, 0, 0])
    assert small / 1e6 == pytest.approx(0.25 + 0.1, abs=0.02), "then an empty bucket"


@pytest.mark.parametrize("share", [0.45, 0.7])
def test_a_found_rate_slowed_far_under_the_measured_one_with_429s_as_many_stands_aside(
    redis_server: RedisServer, share: float
) -> None:
    """After a verdict that the 429s depend on the fleet's tokens, each 429 lowered the rate,
    yet they came as often as before it: at less than half the rate measured, slowing did not
    help (a verdict of chance), and the fleet stands aside. At 0.7 of it, AIMD about a real
    limit with long prompts leaves 429s too: it paces on."""
    settled(redis_server, 10_000 * share)
    redis_server.client.hset(
        KEY, mapping={"trrate": 10_000, "trt": 10, "trn": 100, "tst": 10, "tsn": 100}
    )
    report(redis_server, throttled=1)
    aside = field(redis_server, "taside") > redis_now(redis_server)
    assert aside == (share < 0.5)
    assert (field(redis_server, "tphase") == 0) == aside


def test_successes_grow_the_found_rate(redis_server: RedisServer) -> None:
    settled(redis_server, 2_000)
    report(redis_server, tokens=1_000, successes=1)
    assert field(redis_server, "frate") > 2_000


def test_a_header_rate_wins_over_a_found_one(redis_server: RedisServer) -> None:
    """A process reads the token rate from its answer's headers: the fleet paces by it, and
    what the answers suggested is dropped."""
    settled(redis_server, 2_000)
    report(redis_server, requests_throttled=1, token_hint=10_000)
    assert field(redis_server, "trate") == pytest.approx(10_000 * HINT_MARGIN)
    assert (field(redis_server, "frate"), field(redis_server, "tphase")) == (0, 0)


def test_a_found_rate_is_forgotten_once_the_fleet_stops_pacing_tokens(
    redis_server: RedisServer,
) -> None:
    """No token 429 and no wait for a while: the fleet stops pacing tokens, and the next 429
    finds the rate afresh (a limit may have changed meanwhile)."""
    settled(redis_server, 2_000)
    redis_server.client.hset(KEY, "tengaged", redis_now(redis_server) - 1)
    assert reserve(redis_server, 100)[0] == NOT_PACED
    report(redis_server, tokens=100, successes=1)
    assert (field(redis_server, "tphase"), field(redis_server, "frate")) == (0, 0)
    report(redis_server, throttled=1)
    assert field(redis_server, "tphase") == 1


def test_a_wait_the_request_schedule_made_keeps_no_found_token_rate_engaged(
    redis_server: RedisServer,
) -> None:
    """Each engagement is kept by the waits it made: a slot held back by the request schedule
    says nothing of the tokens (else neither could ever switch itself off while both pace)."""
    settled(redis_server, 1_000_000)
    now = redis_now(redis_server)
    redis_server.client.hset(
        KEY, mapping={"engaged": now + 60_000, "rate": 2, "burst": 1, "tat": now + 500,
                      "tengaged": now + 1_000},
    )  # fmt: skip
    wait, _, booked, fleets = reserve(redis_server, 10)
    assert wait / 1e6 == pytest.approx(0.5, abs=0.05) and (booked, fleets) == (1, 1)
    assert field(redis_server, "tengaged") < now + 2_000, "not kept by the request's wait"
    assert field(redis_server, "engaged") >= now + 60_000


def test_a_header_token_rate_paces_before_a_found_one(redis_server: RedisServer) -> None:
    """Requests paced with a header's token rate: the slots book tokens at it, not at what the
    answers suggested (and the process is told the tokens are not the fleet's found ones)."""
    settled(redis_server, 1_000_000)
    now = redis_now(redis_server)
    redis_server.client.hset(
        KEY, mapping={"engaged": now + 60_000, "rate": 10_000, "burst": 100, "tat": now,
                      "trate": 1_000, "tburst": 100},
    )  # fmt: skip
    first, second = reserve(redis_server, 100), reserve(redis_server, 100)
    assert first[0] == 0 and first[3] == 0
    assert second[0] / 1e6 == pytest.approx(0.1, abs=0.02), "the header's 1,000 a second"
