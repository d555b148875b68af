"""The pure parts of pacing by tokens, driven by an explicit clock: the token headers, the token
schedule, how one endpoint guard paces requests and tokens together, and the usage that corrects
a reservation."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response, ResponseUsage

from otel_openai_retry import RetryPolicy
from otel_openai_retry._call_tokens import used_tokens
from otel_openai_retry._endpoints import NULL_GUARD, Endpoints, LocalGuard
from otel_openai_retry._pacing_evidence import BACKOFF, TRIAL_MARGIN, TRIAL_MIN_ANSWERS, rose
from otel_openai_retry._pacing_trial import DISENGAGE_AFTER
from otel_openai_retry._rate_headers import Limit, read_limit, refill_rate
from otel_openai_retry._slots import take_slot
from otel_openai_retry._token_learning import ADD_PER_SECOND, LEARNT_BURST, PROVISIONAL_HEADROOM
from otel_openai_retry._token_pacing import (
    HINT_MARGIN,
    REFUSED_REMEMBERED,
    REFUSED_SPAN,
    WATCH_MIN_ANSWERS,
    TokenPacer,
)

TOKENS = {
    "x-ratelimit-limit-tokens": "1000",
    "x-ratelimit-remaining-tokens": "0",
    "x-ratelimit-reset-tokens": "1s",
}
"""A bucket of 1,000 tokens, empty, full again in a second: 1,000 tokens per second."""
RATE = 1000 * HINT_MARGIN


def test_token_headers_give_rate_size_and_fill() -> None:
    assert read_limit(TOKENS, "tokens") == Limit(1000.0, 1000, 0)
    assert refill_rate(TOKENS, "tokens") == pytest.approx(1000.0)
    minutes = {**TOKENS, "x-ratelimit-remaining-tokens": "400", "x-ratelimit-reset-tokens": "6m0s"}
    assert refill_rate(minutes, "tokens") == pytest.approx(600 / 360)
    fast = {**TOKENS, "x-ratelimit-reset-tokens": "17ms"}
    assert refill_rate(fast, "tokens") == pytest.approx(1000 / 0.017)
    full = {**TOKENS, "x-ratelimit-remaining-tokens": "1000", "x-ratelimit-reset-tokens": "0s"}
    assert read_limit(full, "tokens") == Limit(None, 1000, 1000), "a size, but no rate"
    assert refill_rate(TOKENS) is None, "the request headers are another limit"


@pytest.mark.parametrize(
    "changed",
    [
        {"x-ratelimit-limit-tokens": "abc"},
        {"x-ratelimit-limit-tokens": "-1000"},
        {"x-ratelimit-limit-tokens": "9" * 400},
        {"x-ratelimit-limit-tokens": "1e400"},
        {"x-ratelimit-limit-tokens": ""},
        {"x-ratelimit-remaining-tokens": "nan"},
        {"x-ratelimit-remaining-tokens": "2000"},
        {"x-ratelimit-remaining-tokens": "-1"},
    ],
)
def test_hostile_token_counts_say_nothing(changed: dict[str, str]) -> None:
    assert read_limit({**TOKENS, **changed}, "tokens") is None
    assert refill_rate({**TOKENS, **changed}, "tokens") is None


@pytest.mark.parametrize(
    "reset", ["abc", "", "-1s", "nan", "inf", "1e400ms", "9" * 400, "100000h", "1s junk", "0s"]
)
def test_hostile_token_resets_give_no_rate(reset: str) -> None:
    found = read_limit({**TOKENS, "x-ratelimit-reset-tokens": reset}, "tokens")
    assert found == Limit(None, 1000, 0)


def test_a_mapping_that_fails_to_read_is_no_hint() -> None:
    class Exploding(dict[str, str]):
        def get(self, key: str, default: object = None) -> str:
            raise RuntimeError("unreadable")

    assert read_limit(Exploding(), "tokens") is None


def engaged(max_gate: float = 120.0) -> TokenPacer:
    pacer = TokenPacer(max_gate=max_gate)
    pacer.on_throttled(0.0, TOKENS)
    assert pacer.engaged
    return pacer


def found(pacer: TokenPacer, start: float = 0.0, throttled: bool = False) -> float:
    """Answers after a token 429 without headers: a success of 1,000 tokens every 0.1 s from
    ``start + 0.1`` to ``start + 0.7`` (the first only starts the count): 10,000 tokens a
    second; ``throttled``: a 429 after each. The time of the last."""
    now = start
    for _ in range(7):
        now += 0.1
        pacer.on_success(now, None)
        pacer.used(now, 1000, 1000)
        if throttled:
            pacer.on_throttled(now, None)
    return now


def test_a_token_429_without_a_known_rate_measures_the_rate_from_the_answers() -> None:
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    assert pacer.engaged, "not left to request pacing: each send estimates its tokens"
    assert pacer.reserve(0.0, 10**6, 0.0, math.inf) == 0.0, "nothing held back while measuring"
    now = found(pacer)
    assert pacer.rate == pytest.approx(10_000 * TRIAL_MARGIN), "a trial, a margin under it"
    assert pacer.capacity == pytest.approx(pacer.rate * LEARNT_BURST)
    # The 429s drained the server's bucket: the schedule started drained with the first rate
    # measured (10,000 a second, at the fifth success, 0.6 s) and refills from there.
    first = pacer.reserve(now, 800, now, math.inf)
    second = pacer.reserve(now, 800, now, math.inf)
    assert first is not None and second is not None
    assert second - first == pytest.approx(800 / pacer.rate)
    assert pacer.reserve(now, round(pacer.capacity), now, math.inf) == pytest.approx(
        0.6 + LEARNT_BURST + 2 * 800 / pacer.rate - now
    ), "a whole bucket's worth waits for the bucket to fill"


def test_successes_sent_before_the_429_are_not_measured() -> None:
    """A first wave's successes come out of a full bucket (in a fleet, a process's first calls
    estimate their tokens to join it): counted, 29,000 tokens in 0.3 s would show a rate far
    above the limit. Only what was sent after the 429 measures it."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(1.0, None)
    for step in range(1, 30):
        pacer.on_success(1.0 + step / 100, None)
        pacer.used(1.0 + step / 100, 1000, 1000, booked=0.99)
    assert pacer.rate == 0.0, "nothing measured yet"
    found(pacer, start=1.3)
    assert pacer.rate == pytest.approx(10_000 * TRIAL_MARGIN)


def test_while_measuring_sends_are_held_to_the_rate_measured_so_far() -> None:
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    for step in range(1, 6):  # the first success starts the count; four more are not enough
        pacer.on_success(step / 20, None)
        pacer.used(step / 20, 1000, 1000)
        assert pacer.reserve(step / 20, 10**6, step / 20, math.inf) == 0.0
    pacer.on_success(0.3, None)
    pacer.used(0.3, 1000, 1000)
    # The fifth: 5,000 tokens in a quarter second, with room for the count to rise.
    assert pacer.rate == pytest.approx(20_000 * PROVISIONAL_HEADROOM)
    # Drained at 0.3 s: 1,000 tokens are there when the bucket has refilled all but them.
    assert pacer.reserve(0.3, 1000, 0.3, math.inf) == pytest.approx(
        LEARNT_BURST - (pacer.capacity - 1000) / pacer.rate
    )


def test_answers_counted_at_their_estimate_and_charged_later_are_each_one_success() -> None:
    """A stream is counted at the tokens its send booked when it is answered, and what its
    usage says beyond them once it has been read: the rate measured is that of answers that
    state their usage at once (but for the usage still unread), and no answer counts twice
    (the mean size, by which the rate grows, stays the answers' size)."""
    streamed, stated = TokenPacer(max_gate=120.0), TokenPacer(max_gate=120.0)
    # Measured at the sixth (1,000 tokens of each, a tenth of a second apart), whose own
    # usage is still unread then.
    streamed_through = (6 * 1000 - 600) * 5 / 6 / 0.5
    for pacer in (streamed, stated):
        pacer.on_throttled(0.0, None)
    now = 0.0
    for _ in range(7):  # as ``found``: 10,000 tokens a second
        now += 0.1
        for pacer in (streamed, stated):
            pacer.on_success(now, None)
        streamed.used(now, 400, 400)  # answered: its estimate
        streamed.used(now, 400, 1000, counted=True)  # read: its usage
        stated.used(now, 400, 1000)
    assert stated.rate == pytest.approx(10_000 * TRIAL_MARGIN)
    assert streamed.rate == pytest.approx(streamed_through * TRIAL_MARGIN)
    # The trial's answers state no size, so the mean is the measured answers' share of them.
    now = tried(streamed, now, tokens=0)
    rate = streamed.rate
    streamed.on_success(now + 0.1, None)
    streamed.used(now + 0.1, 1000, 1000)
    mean = 8 * 1000 / 118  # 8 answers of 1,000, 110 of none
    assert streamed.rate - rate == pytest.approx(ADD_PER_SECOND * mean * mean / rate, rel=0.1)


def tried(pacer: TokenPacer, now: float, tokens: int = 100) -> float:
    """The trial's answers: 110 successes of ``tokens``, one every 20 ms. The time of the last."""
    for _ in range(110):
        now += 0.02
        pacer.on_success(now, None)
        pacer.used(now, tokens, tokens)
    return now


def test_the_trials_rate_is_held_until_its_verdict() -> None:
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = found(pacer, throttled=True)
    held = pacer.rate
    pacer.on_throttled(now + 0.5, None)
    for step in range(1, 20):
        pacer.on_success(now + 0.5 + step / 100, None)
        pacer.used(now + 0.5 + step / 100, 5000, 5000)
    assert pacer.rate == held, "neither lowered nor raised during the trial"


def test_a_token_429_to_a_found_rate_sets_it_under_what_got_through() -> None:
    """After the trial (its 429s gone: tokens stay paced), 5,000 tokens a second got through
    while the rate was 8,000: a 429 sets the rate a margin under 5,000; a second 429 right after
    it (a request in flight) lowers nothing."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = tried(pacer, found(pacer))
    assert pacer.engaged and pacer.rate >= 8_000
    now += 0.25
    pacer.on_throttled(now, None)
    # Since the trial's verdict: its 5,000 a second.
    assert pacer.rate == pytest.approx(BACKOFF * 5_000, rel=0.15)
    lowered = pacer.rate
    pacer.on_throttled(now + 0.05, None)
    assert pacer.rate == lowered


def test_answers_to_slots_taken_before_a_decrease_say_nothing() -> None:
    """A queue books seconds ahead at the old rate; a 429 lowers the rate. The answers to what
    was booked before say nothing about the new rate: they neither raise nor lower it again.
    Those to slots taken since do."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = tried(pacer, found(pacer)) + 0.25
    booked = now - 0.5
    pacer.on_throttled(now, None, booked)
    lowered = pacer.rate
    for step in range(1, 11):
        pacer.on_success(now + step / 10, None)
        pacer.used(now + step / 10, 1000, 1000, booked)
    pacer.on_throttled(now + 1.1, None, booked)
    assert pacer.rate == lowered
    pacer.on_success(now + 1.2, None)
    pacer.used(now + 1.2, 1000, 1000, now + 0.5)
    assert pacer.rate > lowered


def test_a_found_rate_grows_alike_at_any_rate() -> None:
    """Far under where the last 429 came, a second of successes at the rate raises it by
    ``ADD_PER_SECOND`` requests' worth of tokens, whatever the rate: processes sharing a limit,
    each finding its own share, grow alike (and so converge to fair shares)."""
    grown = []
    for every in (0.1, 0.2):  # 1,000 tokens a success: found at 8,000 and at 4,000 a second
        pacer = TokenPacer(max_gate=120.0)
        pacer.on_throttled(0.0, None)
        now = 0.0
        while now < 8.0:  # measured, tried, judged
            assert pacer.engaged
            now += 1000 / pacer.rate if pacer.rate > 0 else every
            pacer.on_success(now, None)
            pacer.used(now, 1000, 1000)
        start, rate = now, pacer.rate
        while now < start + 1.0:
            now += 1000 / pacer.rate
            pacer.on_success(now, None)
            pacer.used(now, 1000, 1000)
        grown.append(pacer.rate - rate)
    assert grown[0] == pytest.approx(grown[1], rel=0.25), grown
    assert grown[0] == pytest.approx(ADD_PER_SECOND * 1000, rel=0.25), grown


def test_token_429s_that_pacing_did_not_make_fall_pace_nothing() -> None:
    """A tenth of the answers were 429s while measuring, and a tenth still are once paced: the
    429s do not depend on our tokens. Token pacing stands aside, and request pacing is not told
    of them either: sends go at once."""
    guard = Endpoints(RetryPolicy()).guard("http://x/v1", "m")
    assert isinstance(guard, LocalGuard) and guard.tokens is not None
    now = 0.0
    for phase in ("measuring", "trial"):
        for i in range(100):  # 10 429s in 100 answers, successes of 100 tokens
            now += 0.01
            if i % 10 == 0:
                guard.throttled(now, None, None, "tokens")
            else:
                guard.answered(now, None)
                guard.tokens_used(now, 100, 100)
        if phase == "measuring":
            assert guard.tokens.rate > 0 and guard.pacing_tokens(), "the rate was found"
            now += 0.5  # past the lag: answers to what was sent before pacing
    assert not guard.pacing_tokens(), "stood aside"
    for _ in range(20):
        now += 0.01
        guard.throttled(now, None, None, "tokens")
    assert guard.limiter is not None and not guard.limiter.engaged
    assert not guard.pacing() and guard.slot_delay(now, math.inf, 10**6) == 0.0


def unpaced(pacer: TokenPacer, now: float, count: int, refused: Callable[[int], bool]) -> float:
    """``count`` answers 3 ms apart while standing aside, the ``i``-th a token 429 if
    ``refused(i)``. The time of the last."""
    for i in range(count):
        now += 0.003
        if refused(i):
            pacer.on_throttled(now, None, booked=now - 0.01)
        else:
            pacer.on_success(now, None)
    return now


def stood_aside_near_a_limit() -> tuple[TokenPacer, float]:
    """Half the answers 429s while measuring; a third during the trial (run near a limit its
    measurement overstated): not a fall by half, so the pacer stands aside."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = answers(pacer, 0.0, 200, every=2)
    assert pacer.rate > 0, "tried"
    now = answers(pacer, now, 200, every=3)
    assert not pacer.engaged, "stood aside"
    return pacer, now


def test_a_fleets_verdict_that_its_tokens_do_not_matter_holds_while_heard() -> None:
    """Hearing the fleet judge its tokens not what the 429s depend on, a process drops the rate
    it was finding and finds none while the verdict holds (slowing alone, it would see the
    others' keep the 429s coming); unheard past it (Redis away), it judges for itself again. A
    header's rate is the server's word, and stays."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    assert pacer.engaged and pacer.finding
    pacer.hear_fleet_verdict(0.1, 1.1)
    assert not (pacer.engaged or pacer.finding)
    pacer.on_throttled(0.6, None)
    assert not pacer.engaged, "the verdict holds"
    pacer.on_throttled(1.2, None)
    assert pacer.engaged and pacer.finding, "unheard: judged here again"
    stated = TokenPacer(max_gate=120.0)
    stated.on_throttled(0.0, TOKENS)
    stated.hear_fleet_verdict(0.1, 1.1)
    assert stated.engaged and stated.stated


def test_the_fleets_verdict_replaces_the_processs_own_and_its_withdrawal_ends_it() -> None:
    """A process that stood aside on its own trial (60 s, watched by itself) hears the fleet's
    verdict: the fleet's replaces its own, watch and hold, so that once the fleet's lapses (Redis
    away) or is withdrawn (the fleet's watch saw the 429s rise), the process judges for itself
    at once, not unwatched for the rest of its own minute."""
    pacer, now = stood_aside_near_a_limit()
    pacer.hear_fleet_verdict(now, now + 1.0)
    pacer.on_throttled(now + 1.5, None)
    assert pacer.engaged and pacer.finding, "the fleet's verdict lapsed: judged here again"
    withdrawn, now = stood_aside_near_a_limit()
    withdrawn.hear_fleet_verdict(now, now + 1.0)
    withdrawn.hear_fleet_verdict(now + 0.1, now + 0.1)  # the next report: withdrawn
    withdrawn.on_throttled(now + 0.2, None)
    assert withdrawn.engaged and withdrawn.finding


def test_a_limit_judged_not_ours_is_paced_again_once_unpaced_429s_rise() -> None:
    """Unpaced, two answers in three are 429s, twice the trial's share: slowing did help. The
    watch paces again, and the rate found anew is tried without a verdict to stand aside (on a
    busy machine, a trial near a limit its measurement overstated stood aside so, and 60-64
    calls of 400 ran out of attempts)."""
    pacer, now = stood_aside_near_a_limit()
    now = unpaced(pacer, now, WATCH_MIN_ANSWERS - 1, lambda i: i % 3 != 0)
    assert not pacer.engaged, "not judged on fewer answers"
    now = unpaced(pacer, now, 200, lambda i: i % 3 != 0)  # 0.6 s of a crowd unpaced
    assert pacer.engaged, "paced again"
    now = answers(pacer, now, 200, every=2)
    assert pacer.rate > 0
    answers(pacer, now, 200, every=3)
    assert pacer.engaged, "the same trial no longer stands aside"


def test_429s_as_frequent_unpaced_as_paced_leave_the_verdict_alone() -> None:
    """429s that do not depend on our tokens come as often unpaced: the watch does not pace
    again, however long it looks."""
    pacer, now = stood_aside_near_a_limit()
    for i in range(5):
        now = unpaced(pacer, now, 200, lambda i: i % 3 == 0 or i % 7 == 0)  # a little more
        assert not pacer.engaged, i
    assert pacer.reserve(now, 10**6, now, math.inf) == 0.0


def test_a_rise_is_half_again_as_many_429s_and_far_beyond_noise() -> None:
    assert rose(10, 100, 40, 100), "four times as many, five errors"
    assert not rose(10, 100, 30, 100), "three times as many, three and a half errors"
    assert not rose(30, 100, 40, 100), "a third more"
    assert not rose(0, 100, 0, 100) and not rose(100, 100, 100, 100), "no rise at all"
    assert not rose(0, 0, 10, 10), "nothing to rise from"


def test_a_verdict_that_our_tokens_matter_is_withdrawn_when_slowing_does_not_help() -> None:
    """Half the answers were 429s while measuring; the trial's happened to have none (a
    verdict of chance, against 429s that do not depend on our tokens). Once the 429 fraction
    is back where it was and the rate has been lowered well under the one measured, the
    finder stands aside; kept, each of those 429s would lower the rate towards nothing."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = tried(pacer, found(pacer, throttled=True))
    assert pacer.engaged and pacer.rate >= 10_000 * TRIAL_MARGIN, "judged ours"
    answers = 0
    while pacer.engaged and answers < 1000:
        answers += 1
        now += 0.02
        if answers % 2:
            pacer.on_throttled(now, None, booked=now - 0.01)
        else:
            pacer.on_success(now, None)
            pacer.used(now, 100, 100, booked=now - 0.01)
    assert not pacer.engaged, "stood aside"
    assert answers <= TRIAL_MIN_ANSWERS, "within as many answers as a trial takes"
    pacer.on_throttled(now + 0.01, None)
    assert not pacer.engaged, "and not engaged again by the next 429"


def answers(
    pacer: TokenPacer, now: float, count: int, every: int = 0, latency: float = 0.01
) -> float:
    """``count`` answers 3 ms apart to slots taken ``latency`` before: each ``every``-th (from
    the first) a token 429, the others successes of 1,000 tokens (about 300,000 tokens a
    second, what a crowd brings). The time of the last."""
    for i in range(count):
        now += 0.003
        if every and i % every == 0:
            pacer.on_throttled(now, None, booked=now - latency)
        else:
            pacer.on_success(now, None)
            pacer.used(now, 1000, 1000, booked=now - latency)
    return now


def test_a_trial_whose_429s_fell_by_chance_alone_paces_nothing() -> None:
    """One answer in nine a 429 while measuring, one in twenty during the trial: under half,
    yet after the trial's full count of answers no fall that noise does not explain (a tenth
    of 429s that do not depend on our tokens draws five or fewer in a hundred one time in
    twenty). The finder stands aside: judged ours, each later 429 would slow every call."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = answers(pacer, 0.0, 170, every=9)
    assert pacer.rate > 0, "measured"
    now = answers(pacer, now, 110)  # past the trial's lag: answers to sends made before it
    assert pacer.engaged, "not judged on a few answers"
    answers(pacer, now, TRIAL_MIN_ANSWERS, every=20)
    assert not pacer.engaged, "stood aside"


def test_a_verdict_of_chance_is_withdrawn_once_the_rate_is_lowered() -> None:
    """A tenth of the answers were 429s while measuring; the trial's happened to have none (a
    verdict of chance). Once the rate has been lowered under the trial's and the 429s are as
    frequent as before, not even halved, the finder stands aside: it does not wait for the rate
    to sink to half the one measured, each of those 429s slowing every call on the way."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = answers(pacer, 0.0, 200, every=10)
    measured = pacer.rate / TRIAL_MARGIN
    now = answers(pacer, now, 250)
    assert pacer.engaged and pacer.rate >= 0.95 * TRIAL_MARGIN * measured, "judged ours"
    lowest, count = pacer.rate, 0
    while pacer.engaged and count < 1000:
        count += 1
        # a 429 lowers the rate at most once a round trip (0.1 s): not for slots taken before
        now = answers(pacer, now, 1, every=1 if count % 10 == 0 else 0, latency=0.1)
        lowest = min(lowest, pacer.rate) if pacer.engaged else lowest
    assert not pacer.engaged, "stood aside"
    assert lowest >= 0.65 * measured, "soon after the rate went under the trial's"


def test_token_429s_that_pacing_made_vanish_keep_tokens_paced() -> None:
    pacer = TokenPacer(max_gate=120.0)
    now = 0.0
    for i in range(100):
        now += 0.01
        if i % 2 == 0:
            pacer.on_throttled(now, None)
        else:
            pacer.on_success(now, None)
            pacer.used(now, 100, 100)
    assert pacer.rate > 0
    tried(pacer, now + 0.5)
    assert pacer.engaged and pacer.rate > 0
    pacer.on_throttled(now + 3.0, None)
    assert pacer.engaged, "still tokens' to pace"


def test_headers_that_state_the_rate_replace_the_one_found() -> None:
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = found(pacer)
    assert pacer.rate == pytest.approx(8_000)
    pacer.on_success(now, TOKENS)
    assert pacer.rate == pytest.approx(RATE)
    assert pacer.capacity == 1000
    pacer.used(now + 0.1, 100, 100)  # no longer counted: the headers' rate stays
    assert pacer.rate == pytest.approx(RATE)


def test_a_found_rate_is_found_afresh_after_pacing_switched_itself_off() -> None:
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = found(pacer) + DISENGAGE_AFTER + 1.0
    assert pacer.reserve(now, 10, now, math.inf) == 0.0
    assert not pacer.engaged and pacer.rate == 0.0
    pacer.on_throttled(now, None)
    assert pacer.engaged
    assert pacer.reserve(now, 10**6, now, math.inf) == 0.0, "measuring again"


def test_sends_wait_until_the_bucket_holds_their_tokens() -> None:
    """Empty at 0 s, refilling at ``RATE``: 500 tokens are there at 500 / RATE; the next 500
    come as fast again, and a send that costs nothing still waits its turn behind them."""
    pacer = engaged()
    first = pacer.reserve(0.0, 500, 0.0, math.inf)
    second = pacer.reserve(0.0, 500, 0.0, math.inf)
    assert first == pytest.approx(500 / RATE)
    assert second == pytest.approx(1000 / RATE)


def test_a_full_bucket_lets_a_burst_through_then_paces() -> None:
    pacer = engaged()
    now = 10.0  # long after the 429: the bucket is full again
    pacer.on_throttled(now - 0.001, {**TOKENS, "x-ratelimit-remaining-tokens": "1000"})
    assert [pacer.reserve(now, 250, now, math.inf) for _ in range(4)] == pytest.approx(
        [0.0] * 4, abs=1e-9
    )
    assert pacer.reserve(now, 250, now, math.inf) == pytest.approx(250 / RATE)


def test_the_token_slot_is_never_before_the_request_slot() -> None:
    pacer = engaged()
    pacer.on_throttled(5.0, {**TOKENS, "x-ratelimit-remaining-tokens": "1000"})
    assert pacer.reserve(5.0, 10, 5.0 + 0.3, math.inf) == pytest.approx(0.3)


def test_usage_above_the_estimate_is_charged_and_below_it_given_nothing_back() -> None:
    """The server charged the estimate at admission: an answer that used less leaves the
    schedule as it was; one that used more (an estimate too low) is charged the difference."""
    pacer = engaged()
    assert pacer.reserve(0.0, 800, 0.0, math.inf) == pytest.approx(800 / RATE)
    pacer.used(0.0, 800, 200)
    assert pacer.reserve(0.0, 200, 0.0, math.inf) == pytest.approx(1000 / RATE)
    pacer.used(0.0, 200, 500)
    assert pacer.reserve(0.0, 100, 0.0, math.inf) == pytest.approx(1400 / RATE)


def test_usage_charged_to_a_full_bucket_is_taken_from_it() -> None:
    """A schedule long behind now stands for a full bucket: usage charged then is taken from
    the full bucket, not from a schedule that no longer counts (where it would vanish)."""
    pacer = engaged()  # empty at 0, full again a second later
    later = 3.0
    pacer.used(later, 100, 1100)
    assert pacer.reserve(later, 1000, later, math.inf) == pytest.approx(900 / RATE)


def test_at_a_headers_rate_a_429_gives_nothing_back() -> None:
    """The headers say how full the bucket is; a schedule that gave tokens back to processes
    sharing the limit would send more into it."""
    pacer = engaged()
    first = pacer.reserve(0.0, 500, 0.0, math.inf)
    pacer.refund(0.0, 500, short=True)
    second = pacer.reserve(0.0, 500, 0.0, math.inf)
    assert first is not None and second is not None
    assert second - first == pytest.approx(500 / RATE)


def test_a_token_429_leaves_a_found_schedule_short_of_the_send_it_refused() -> None:
    """A full bucket, as the schedule has it, but the server refused a 600-token send for its
    tokens: it holds fewer than 600. The schedule holds half of them at most, and the same send
    again waits for the other half to refill."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = found(pacer) + 0.5  # tried now; the schedule full again
    assert pacer.reserve(now, 600, now, math.inf) == pytest.approx(0.0, abs=1e-9)
    pacer.refund(now, 600, short=True)
    assert pacer.reserve(now, 600, now, math.inf) == pytest.approx(300 / pacer.rate)


def test_a_long_send_refused_for_its_tokens_asks_again_for_all_of_them() -> None:
    """A found schedule's size is a guess (a quarter second of the rate), far under what the
    server's bucket holds; a send longer than it is capped to it like any other. Refused, the
    long send asks again for all of its tokens, so that short ones do not take them first each
    time; it then leaves the bucket empty, not in debt. Only that send: one of the same size
    never refused is capped."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = found(pacer) + 0.5  # tried now; the schedule full again
    rate, size = pacer.rate, pacer.capacity
    assert size == pytest.approx(2000)
    assert pacer.reserve(now, 3600, now, math.inf) == pytest.approx(0.0, abs=1e-9)
    pacer.refund(now, 3600, short=True)  # the schedule holds half a bucket: 1,000
    again = pacer.reserve(now, 3600, now, math.inf)
    assert again == pytest.approx((3600 - 1000) / rate), "until 3,600 are there"
    after = pacer.reserve(now, 100, now, math.inf)
    assert again is not None and after is not None
    assert after == pytest.approx(again + 100 / rate), "the bucket left empty, not in debt"
    other = pacer.reserve(now, 3600, now, math.inf)
    assert other == pytest.approx(after + size / rate), "asked again once only: capped"


def test_a_refused_send_beyond_any_bucket_holds_no_one_back_for_long() -> None:
    """A send far larger than the server's bucket can ever hold (its size is not known) asks
    again for half a second of the rate at most; one whose wait would pass the cap is
    forgotten, not made to wait the cap at every attempt."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = found(pacer) + 0.5
    rate = pacer.rate
    pacer.reserve(now, 2_000_000, now, math.inf)
    pacer.refund(now, 2_000_000, short=True)
    assert pacer.reserve(now, 2_000_000, now, math.inf) == pytest.approx(
        (REFUSED_SPAN * rate - 1000) / rate
    )
    capped = TokenPacer(max_gate=0.3)
    capped.on_throttled(0.0, None)
    now = found(capped) + 0.5
    capped.reserve(now, 3600, now, math.inf)
    capped.refund(now, 3600, short=True)
    assert capped.reserve(now, 3600, now, math.inf) == pytest.approx(0.3), "the cap, once"
    assert capped.reserve(now, 3600, now, math.inf) == pytest.approx(1000 / rate), "forgotten"


def test_the_oldest_refused_sizes_are_forgotten_first() -> None:
    """Calls that gave up never ask again: their sizes must not fill the memory and keep a
    later long send from being remembered."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = found(pacer) + 0.5
    rate = pacer.rate
    for size in range(2100, 2100 + REFUSED_REMEMBERED):  # each refused, none asking again
        pacer.refund(now, size, short=True)
    pacer.refund(now, 3600, short=True)
    held = pacer.reserve(now, 3600, now, math.inf)
    assert held == pytest.approx((3600 - 1000) / rate), "the latest is remembered"
    first = pacer.reserve(now, 2100, now, math.inf)
    assert held is not None
    assert first == pytest.approx(held + 2000 / rate), "the oldest is not: capped"


def test_a_refund_after_pacing_switched_off_meanwhile_changes_nothing() -> None:
    """``refund`` looks before it takes the lock; another thread may switch pacing off in
    between (the rate is then 0): it must not divide by it (the error would reach the call)."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = found(pacer)
    lock = pacer._lock

    class SwitchedOffMeanwhile:
        """The lock, taken just after another thread switched pacing off."""

        def __enter__(self) -> bool:
            pacer._lock = lock
            with lock:
                pacer._disengage()
            return lock.__enter__()

        def __exit__(self, *exc: object) -> None:
            lock.release()

    pacer._lock = SwitchedOffMeanwhile()  # type: ignore[assignment]
    pacer.refund(now, 500, short=True)
    assert not pacer.engaged and pacer.rate == 0.0


def test_a_found_rate_gives_tokens_back_only_until_it_is_settled() -> None:
    """While a found rate is tried, a token 429 gives its send's tokens back (429s that do not
    depend on our tokens must not hold sends back before the verdict); once settled, it does
    not: what stays booked is the margin a long prompt needs to get through."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = found(pacer) + 0.01
    for settled in (False, True):
        pacer.reserve(now, round(pacer.capacity), now, math.inf)  # a bucket's worth booked
        first = pacer.reserve(now, 2000, now, math.inf)
        pacer.refund(now, 2000, short=True)
        second = pacer.reserve(now, 2000, now, math.inf)
        assert first is not None and second is not None
        kept = second - first >= 2000 / pacer.rate - 1e-9
        assert kept is settled, (settled, first, second)
        now = tried(pacer, now) + 0.25


def test_a_refund_gives_back_the_time_its_send_took_at_the_rate_it_was_booked_at() -> None:
    """Refused during the trial, a send booked at the measuring phase's brake (faster than the
    trial) gives back the time it took at that rate, not at the trial's, and one sent before
    the first rate (nothing booked) gives nothing back. Given back at the rate of the moment,
    the refusals before a trial kept its schedule full: the server got its limit, not the
    trial's rate, and the trial's 429s fell too little (one cause of a real limit judged not
    ours: 60-64 calls of 400 out of attempts)."""
    pacer = TokenPacer(max_gate=120.0)
    pacer.on_throttled(0.0, None)
    now = 0.0
    for _ in range(12):  # 1,000 tokens every 50 ms: the brake from 0.3, the trial from 0.6
        now += 0.05
        pacer.on_success(now, None)
        pacer.used(now, 1000, 1000)
        if round(now, 2) == 0.3:
            brake = pacer.rate
    assert brake == pytest.approx(20_000 * PROVISIONAL_HEADROOM)
    trial = pacer.rate
    assert trial == pytest.approx(20_000 * TRIAL_MARGIN)
    for _ in range(3):  # a queue
        pacer.reserve(now, round(pacer.capacity), now, math.inf)
    first = pacer.reserve(now, 500, now, math.inf)
    assert first is not None and first > 0
    pacer.refund(now, 500, short=False, booked=0.05)  # before the first rate
    second = pacer.reserve(now, 500, now, math.inf)
    assert second is not None
    assert second == pytest.approx(first + 500 / trial), "nothing given back"
    pacer.refund(now, 500, short=False, booked=0.4)  # at the brake's rate
    third = pacer.reserve(now, 500, now, math.inf)
    assert third == pytest.approx(second + 500 / trial - 500 / brake)
    pacer.refund(now, 500, short=False, booked=now)  # at the trial's: all of it
    assert pacer.reserve(now, 500, now, math.inf) == pytest.approx(third)


def test_a_caller_who_cannot_wait_reserves_nothing() -> None:
    pacer = engaged()
    assert pacer.reserve(0.0, 500, 0.0, latest=0.1) is None
    assert pacer.reserve(0.0, 500, 0.0, math.inf) == pytest.approx(500 / RATE)


def test_no_token_slot_is_further_away_than_the_cap() -> None:
    pacer = engaged(max_gate=0.2)
    delays = [pacer.reserve(0.0, 100, 0.0, math.inf) for _ in range(50)]
    assert max(d for d in delays if d is not None) <= 0.2


def test_the_schedule_is_never_fuller_than_the_server_says() -> None:
    """Another process drained the bucket: the answer's ``remaining-tokens`` tells."""
    pacer = engaged()
    now = 3.0  # the bucket has refilled
    pacer.on_success(now, {**TOKENS, "x-ratelimit-remaining-tokens": "1000"})
    assert pacer.reserve(now, 100, now, math.inf) == 0.0
    pacer.on_success(now, {**TOKENS, "x-ratelimit-remaining-tokens": "0"})
    assert pacer.reserve(now, 100, now, math.inf) == pytest.approx(100 / RATE), "empty now"


@pytest.mark.parametrize("reset", ["abc", "0s", "-1s"])
def test_headers_without_a_rate_of_their_own_move_nothing(reset: str) -> None:
    """A huge bucket, empty, with no readable reset: measured against the rate learnt before,
    it would put the next slot years away."""
    pacer = engaged()
    before = pacer.reserve(0.0, 100, 0.0, math.inf)
    huge = {**TOKENS, "x-ratelimit-limit-tokens": "9" * 15, "x-ratelimit-reset-tokens": reset}
    pacer.on_success(0.0, huge)
    pacer.on_throttled(0.0, huge)
    after = pacer.reserve(0.0, 100, 0.0, math.inf)
    assert before is not None and after is not None
    assert after - before == pytest.approx(100 / RATE)


def test_token_pacing_switches_itself_off_when_not_binding() -> None:
    pacer = engaged()
    assert pacer.reserve(DISENGAGE_AFTER + 1.0, 10, DISENGAGE_AFTER + 1.0, math.inf) == 0.0
    assert not pacer.engaged


# -- one guard, two dimensions ---------------------------------------------------------------------


def test_a_token_429_paces_tokens_and_leaves_request_pacing_alone() -> None:
    guard = Endpoints(RetryPolicy()).guard("http://x/v1", "m")
    assert not guard.pacing_tokens()
    guard.throttled(0.0, 5.0, TOKENS, "tokens")
    assert guard.pacing() and guard.pacing_tokens()
    # No Retry-After gate for everyone: the token schedule alone holds sends back.
    assert guard.slot_delay(0.0, math.inf, 100) == pytest.approx(100 / RATE)


def test_a_request_429_paces_requests_only() -> None:
    guard = Endpoints(RetryPolicy()).guard("http://x/v1", "m")
    guard.throttled(0.0, 0.5, TOKENS, "requests")
    assert guard.pacing() and not guard.pacing_tokens()
    assert guard.slot_delay(0.0, math.inf, 10**6) == pytest.approx(0.5), "the gate, no tokens"


def test_a_token_429_without_token_headers_paces_tokens_not_requests() -> None:
    guard = Endpoints(RetryPolicy()).guard("http://x/v1", "m")
    guard.throttled(0.0, 0.5, {"retry-after-ms": "500"}, "tokens")
    assert guard.pacing() and guard.pacing_tokens()
    assert isinstance(guard, LocalGuard) and guard.limiter is not None
    assert not guard.limiter.engaged, "a request rate would skew the token rate measured"


def test_the_slot_is_the_later_of_the_request_and_the_token_slot() -> None:
    guard = Endpoints(RetryPolicy()).guard("http://x/v1", "m")
    guard.throttled(0.0, 0.5, None, "requests")  # a gate for everyone until 0.5 s
    guard.throttled(0.0, None, TOKENS, "tokens")
    assert guard.slot_delay(0.0, math.inf, 100) == pytest.approx(0.5)  # tokens there by then
    assert guard.slot_delay(0.0, math.inf, 900) == pytest.approx(1000 / RATE)


class Cost:
    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.asked = 0

    def estimate(self) -> int:
        self.asked += 1
        return self.tokens

    def used(self, result: object) -> int | None:
        return None

    def used_later(self, charge: Callable[[int], None]) -> None:
        pass


def test_a_call_estimates_its_tokens_only_while_tokens_are_paced() -> None:
    cost = Cost(300)
    guard = Endpoints(RetryPolicy()).guard("http://x/v1", "m")
    assert take_slot(guard, 0.0, math.inf, cost) == (0.0, None, 0)
    assert take_slot(NULL_GUARD, 0.0, math.inf, cost) == (0.0, None, 0)
    guard.throttled(0.0, 0.5, None, "requests")
    assert take_slot(guard, 0.0, math.inf, cost) == (0.5, "delayed", 0)
    assert cost.asked == 0, "no estimate while only requests are paced"
    guard.throttled(0.0, None, TOKENS, "tokens")
    delay, result, reserved = take_slot(guard, 0.0, math.inf, cost)
    assert (result, reserved, cost.asked) == ("delayed", 300, 1)
    assert delay == pytest.approx(0.5)
    assert take_slot(guard, 0.0, 0.1, cost) == (None, "rejected", 0)
    other = Endpoints(RetryPolicy()).guard("http://x/v1", "n")
    other.throttled(0.0, None, TOKENS, "tokens")
    other.throttled(0.0, 5.0, None, "requests")  # a gate beyond the booking horizon
    delay, result, reserved = take_slot(other, 0.0, math.inf, cost)
    assert delay is not None and delay < 0, "ask again"
    assert (result, reserved) == ("delayed", 0), "nothing booked, so no tokens reserved"


# -- what an answer says it cost -------------------------------------------------------------------


def test_usage_of_each_kind_of_answer() -> None:
    chat = ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
        }
    )
    assert used_tokens(chat) == 42
    responses = Response.model_construct(
        usage=ResponseUsage.model_construct(input_tokens=7, output_tokens=5, total_tokens=12)
    )
    assert used_tokens(responses) == 12
    embeddings = CreateEmbeddingResponse.model_validate(
        {
            "object": "list",
            "data": [],
            "model": "m",
            "usage": {"prompt_tokens": 9, "total_tokens": 9},
        }
    )
    assert used_tokens(embeddings) == 9
    assert used_tokens(chat.model_copy(update={"usage": None})) is None
    assert used_tokens(object()) is None, "a stream, or what is no answer"
