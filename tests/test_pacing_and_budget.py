"""The pure parts of pacing and the retry budget, driven by an explicit clock."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable

import pytest

from otel_openai_retry import ConfigurationError, RetryPolicy
from otel_openai_retry._budget import RetryBudget
from otel_openai_retry._endpoints import NULL_GUARD, EndpointGuard, Endpoints, LocalGuard
from otel_openai_retry._pacing import (
    DECREASE_FACTOR,
    DISENGAGE_AFTER,
    ENGAGE_FACTOR,
    HORIZON,
    INCREASE_FRACTION,
    INCREASE_PER_SUCCESS,
    START_FLOOR,
    AdaptiveLimiter,
    parse_duration,
    refill_rate,
)
from otel_openai_retry._pacing_evidence import (
    RETRIAL_AFTER,
    TRIAL_MARGIN,
    TRIAL_MIN_ANSWERS,
    held,
    reference_suffices,
)
from otel_openai_retry._rate_headers import shared_gate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20ms", 0.02), ("1s", 1.0), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("0.25", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-1", "5x", "1s junk", "nan"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    ("retry_after", "hinted", "gate"),
    [
        (0.25, None, 0.25),  # no rate: the hint as it is
        (1.0, 10.0, 0.1),  # a whole second rounded up: one interval of the server's rate
        (0.05, 10.0, 0.05),  # already within one
        (0.0, None, 0.0),
        (None, 10.0, None),
        (121.0, None, None),  # past max_retry_after: ignored, never a long stall
        (-1.0, None, None),
        (math.inf, None, None),
        (math.nan, None, None),
    ],
)
def test_a_retry_after_closes_the_endpoint_for_everyone_no_longer_than_its_rate_needs(
    retry_after: float | None, hinted: float | None, gate: float | None
) -> None:
    assert shared_gate(retry_after, hinted, 120.0) == (
        gate if gate is None else pytest.approx(gate)
    )


HUNDRED_A_SECOND = {
    "x-ratelimit-limit-requests": "101",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1s",
}
"""A 100/s limit as its headers say it: the floored count hides up to one request."""


def test_refill_rate_from_openai_headers() -> None:
    headers = HUNDRED_A_SECOND
    assert refill_rate(headers) == pytest.approx(100.0)
    assert refill_rate({**headers, "x-ratelimit-remaining-requests": "101"}) is None
    assert refill_rate({**headers, "x-ratelimit-reset-requests": "soon"}) is None
    assert refill_rate({}) is None


def test_a_refill_rate_is_never_above_the_servers() -> None:
    """The remaining count is floored: a bucket of 10 refilled at 100/s, with 9.5 left, says
    "9 left, full in 5 ms" (200/s, were the count taken as exact). Read as what it bounds, it
    says nothing; with the bucket empty, at most 100/s."""
    nearly_full = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "5ms",
    }
    assert refill_rate(nearly_full) is None
    empty = {
        **nearly_full,
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "95ms",
    }
    rate = refill_rate(empty)
    assert rate == pytest.approx(9 / 0.095)
    assert rate is not None and rate <= 100.0


def test_limiter_costs_nothing_until_a_429() -> None:
    limiter = AdaptiveLimiter()
    assert all(limiter.reserve(t / 100) == 0.0 for t in range(100))
    limiter.on_success(1.0, None)
    assert not limiter.engaged


def test_a_429_gates_everyone_until_retry_after() -> None:
    limiter = AdaptiveLimiter()
    for i in range(50):  # 50 requests/s
        limiter.reserve(10.0 + i / 50)
    limiter.on_throttled(10.99, 0.5, None)
    assert limiter.engaged
    assert limiter.rate == pytest.approx(max(START_FLOOR, 50 * ENGAGE_FACTOR), rel=0.02)
    # Everyone waits for the gate; then, with no header rates, the engagement first measures
    # the rates unpaced (a trial of whether our rate matters follows).
    assert [slot(limiter, 10.99) for _ in range(3)] == pytest.approx([0.5] * 3)


def test_with_header_rates_a_429_paces_at_their_rate_not_behind_a_gate() -> None:
    """A whole-second ``Retry-After`` is rounded up: closing the gate for it would idle the
    endpoint for most of a second. The refill rate beside it is what the schedule follows (the
    caller that got the 429 still waits its own ``Retry-After``)."""
    limiter = AdaptiveLimiter()
    limiter.on_throttled(1.0, 1.0, HUNDRED_A_SECOND)
    delays = [slot(limiter, 1.0) for _ in range(3)]
    assert limiter.rate == pytest.approx(100 * 0.98)
    interval = 1 / 100  # the headers' rate: the gate closes for one interval of it, not 1 s
    assert delays == pytest.approx(
        [interval, interval + 1 / limiter.rate, interval + 2 / limiter.rate]
    )


def slot(limiter: AdaptiveLimiter | EndpointGuard, now: float) -> float:
    """How long until the send slot from ``now``, asking again as told: a slot beyond the
    booking horizon is asked for again nearer its turn, as the retry loop does."""
    asked = now
    while True:
        delay = (
            limiter.reserve(now)
            if isinstance(limiter, AdaptiveLimiter)
            else limiter.slot_delay(now, math.inf)
        )
        assert delay is not None
        if delay >= 0:
            return now + delay - asked
        now -= delay


def test_a_slot_beyond_the_horizon_is_asked_for_again_at_the_rate_of_then() -> None:
    """Fifty callers into a schedule at 10 a second: those whose turn is within the horizon
    are booked, the others are told to ask again, nothing booked for them. Pacing stands aside
    meanwhile (the 429s were not ours): asking again, they go at once, not after the queue."""
    limiter = AdaptiveLimiter()
    limiter.on_throttled(0.0, None, {**HUNDRED_A_SECOND, "x-ratelimit-limit-requests": "11"})
    assert limiter.rate == pytest.approx(9.8)
    delays = [limiter.reserve(0.0) for _ in range(50)]
    booked = [d for d in delays if d is not None and d >= 0]
    within = math.floor(HORIZON * limiter.rate) + 1  # the first goes at once
    assert len(booked) == within and max(booked) <= HORIZON
    assert all(d is not None and d < 0 for d in delays[within:]), "asked to ask again"
    limiter.stand_aside(0.1)
    assert limiter.reserve(0.5) == 0.0


def test_a_caller_who_cannot_wait_for_a_slot_books_none() -> None:
    """With a deadline before the gate opens, the caller goes at once (``None``) and the next
    caller's slot is where it would have been without it."""
    limiter = AdaptiveLimiter()
    limiter.on_throttled(0.0, 10.0, None)
    for _ in range(200):
        assert limiter.reserve(0.0, latest=1.0) is None
    assert slot(limiter, 0.0) == pytest.approx(10.0)


def test_headers_set_the_rate() -> None:
    limiter = AdaptiveLimiter()
    limiter.on_throttled(0.0, None, HUNDRED_A_SECOND)
    assert limiter.rate == pytest.approx(98.0)
    first, second = slot(limiter, 0.0), slot(limiter, 0.0)
    assert second - first == pytest.approx(1 / 98.0)


def test_the_highest_header_rate_of_an_engagement_is_kept() -> None:
    """Each header rate is a lower bound: a later, lower one (few requests used, so a coarse
    bound) does not slow the schedule."""
    limiter = AdaptiveLimiter()
    limiter.on_throttled(0.0, None, HUNDRED_A_SECOND)
    coarse = {
        **HUNDRED_A_SECOND,
        "x-ratelimit-remaining-requests": "98",
        "x-ratelimit-reset-requests": "25ms",
    }
    limiter.on_success(0.1, coarse)  # 2 used, 25 ms to refill: at least 40/s
    assert limiter.rate == pytest.approx(98.0)


def test_aimd_without_headers() -> None:
    limiter = AdaptiveLimiter()
    limiter.on_throttled(0.0, None, None)
    start = limiter.rate
    limiter.on_throttled(0.1, None, None)  # inside the guard: requests already in flight
    limiter.on_success(0.1, None)
    assert limiter.rate == start, "no change while answers to the old rate arrive"
    limiter.on_success(0.3, None)
    assert limiter.rate == pytest.approx(
        start + max(INCREASE_PER_SUCCESS, start * INCREASE_FRACTION)
    )


def test_far_over_a_limit_the_rate_drops_to_what_gets_through() -> None:
    """429s the majority: straight to the rate the successes come at, not step by step."""
    limiter = AdaptiveLimiter()
    for i in range(400):
        limiter.reserve(i / 400)  # 400 requests/s
    limiter.on_throttled(1.0, None, None)
    assert limiter.rate == pytest.approx(400 * DECREASE_FACTOR, rel=0.05)
    for i in range(50):  # 0.5 s: 10 successes and 40 429s
        now = 1.0 + i / 100
        if i % 5:
            limiter.on_throttled(now, None, None)
        else:
            limiter.on_success(now, None)
    assert limiter.rate == pytest.approx(10 / 0.5, rel=0.2)


def test_pacing_switches_itself_off_when_not_binding() -> None:
    limiter = AdaptiveLimiter()
    limiter.on_throttled(0.0, None, None)
    assert limiter.engaged
    assert limiter.reserve(DISENGAGE_AFTER + 1.0) == 0.0
    assert not limiter.engaged


def test_budget_caps_retries_at_ratio_plus_reserve() -> None:
    budget = RetryBudget(0.1, window=10.0, reserve_per_second=1.0)
    allowed = 0
    for i in range(1000):
        now = i * 0.005  # 1,000 requests within 5 s, each failing
        budget.record_request(now)
        if budget.try_retry(now):
            allowed += 1
            budget.record_request(now)
    # retries <= 0.1 * (requests + retries) + 10
    assert allowed == pytest.approx((0.1 * 1000 + 10) / 0.9, abs=2)


def test_budget_deposits_expire_with_the_window() -> None:
    budget = RetryBudget(0.1, window=10.0, reserve_per_second=0.0)
    for _ in range(100):
        budget.record_request(0.0)
    assert budget.try_retry(0.0)
    assert not budget.try_retry(30.0), "credit from 30 s ago is gone"


def test_policy_reads_budget_and_adaptive() -> None:
    policy = RetryPolicy.from_env(
        {"OTEL_OPENAI_RETRY_BUDGET": "0", "OTEL_OPENAI_RETRY_ADAPTIVE": "false"}
    )
    assert policy.budget == 0
    assert policy.adaptive is False
    with pytest.raises(ConfigurationError, match="OTEL_OPENAI_RETRY_BUDGET='-1'"):
        RetryPolicy.from_env({"OTEL_OPENAI_RETRY_BUDGET": "-1"})
    with pytest.raises(ConfigurationError, match="OTEL_OPENAI_RETRY_ADAPTIVE='sometimes'"):
        RetryPolicy.from_env({"OTEL_OPENAI_RETRY_ADAPTIVE": "sometimes"})


# -- the gate never holds anyone longer than the policy's max_retry_after --------------------------


@pytest.mark.parametrize("hint", [86_400.0, 1e300, math.inf, math.nan, -5.0])
def test_a_hint_beyond_the_cap_closes_no_gate(hint: float) -> None:
    """A ``retry-after`` the policy would not honour (or no number at all) holds nobody back."""
    limiter = AdaptiveLimiter(max_gate=120.0)
    limiter.on_throttled(0.0, hint, None)
    assert limiter.engaged
    assert slot(limiter, 0.0) == 0.0


def test_no_slot_is_further_away_than_the_cap() -> None:
    limiter = AdaptiveLimiter(max_gate=1.0)
    limiter.on_throttled(0.0, 0.5, None)
    delays = [slot(limiter, 0.0) for _ in range(1000)]  # far more callers than the rate serves
    assert max(delays) <= 1.0
    assert delays[0] == pytest.approx(0.5)
    assert delays == sorted(delays)


def test_endpoints_cap_the_gate_at_max_retry_after() -> None:
    endpoints = Endpoints(RetryPolicy(max_retry_after=2.0))
    refused, honoured = endpoints.guard("http://x/v1", "a"), endpoints.guard("http://x/v1", "b")
    refused.throttled(0.0, 86_400.0, None)  # x-should-retry: false with a day's hint
    assert refused.slot_delay(0.0, math.inf) == 0.0
    honoured.throttled(0.0, 1.5, None)
    assert slot(honoured, 0.0) == pytest.approx(1.5)


def test_one_guard_per_pacing_key_and_none_at_all_when_both_are_off() -> None:
    """Pacing and the budget live in one guard per base URL and model; with both off, every call
    shares the null guard: never delays, always lets a retry go."""
    endpoints = Endpoints(RetryPolicy())
    assert endpoints.guard("http://x/v1", "a") is endpoints.guard("http://x/v1", "a")
    assert endpoints.guard("http://x/v1", "a") is not endpoints.guard("http://x/v1", "b")
    off = Endpoints(RetryPolicy(adaptive=False, budget=0))
    assert off.guard("http://x/v1", "a") is NULL_GUARD
    NULL_GUARD.throttled(0.0, 30.0, None)
    assert NULL_GUARD.slot_delay(0.0, math.inf) == 0.0
    assert NULL_GUARD.may_retry(0.0, 500)


def test_a_429_is_left_to_the_pacer_never_charged_to_the_budget() -> None:
    guard = LocalGuard(None, RetryBudget(0.0, reserve_per_second=0.0))
    assert guard.may_retry(0.0, 429)
    assert not guard.may_retry(0.0, 503)
    assert not guard.may_retry(0.0, None)  # a connection error is a failure


# -- rate-independent 429s are not paced; a token bucket still is ----------------------------------

Server = Callable[[float], tuple[bool, float | None]]


def random_rejections(fraction: float, seed: int = 7) -> Server:
    """A limit shared with other applications: 429 (hint 100 ms) to a fraction, at any rate."""
    rng = random.Random(seed)
    return lambda now: (rng.random() >= fraction, 0.1)


def token_bucket(rate: float, burst: int, hints: bool) -> Server:
    tokens, updated = float(burst), 0.0

    def decide(now: float) -> tuple[bool, float | None]:
        nonlocal tokens, updated
        tokens, updated = min(burst, tokens + (now - updated) * rate), now
        if tokens >= 1:
            tokens -= 1
            return True, None
        return False, (1 - tokens) / rate if hints else None

    return decide


def simulate(
    server: Server, workers: int, calls: int, latency: float, paced: bool
) -> tuple[float, float, int]:
    """Closed-loop callers on a fake clock, as the retry loop drives the limiter: reserve, wait
    (or wait and ask again), send; a 429 is retried after its hint (else 50 ms). Returns the
    time the last call ended, the total pacing delay and the 429s received."""
    limiter = AdaptiveLimiter()
    events: list[tuple[float, int, int, str, float | None]] = []
    order = 0

    def at(when: float, worker: int, kind: str, hint: float | None = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (when, order, worker, kind, hint))

    for worker in range(workers):
        at(0.0, worker, "reserve")
    done, delayed, throttled, end = [0] * workers, 0.0, 0, 0.0
    while events:
        now, _, worker, kind, hint = heapq.heappop(events)
        if kind == "reserve":
            delay = (limiter.reserve(now) or 0.0) if paced else 0.0
            delayed += abs(delay)
            if delay < 0:  # beyond the booking horizon: ask again then
                at(now - delay, worker, "reserve")
                continue
            accepted, hint = server(now + delay)
            if accepted:
                at(now + delay + latency, worker, "ok")
            else:
                at(now + delay + 0.005, worker, "429", hint)
        elif kind == "ok":
            limiter.on_success(now, None)
            done[worker] += 1
            end = max(end, now)
            if done[worker] < calls:
                at(now, worker, "reserve")
        else:
            throttled += 1
            limiter.on_throttled(now, hint, None)
            at(now + (0.05 if hint is None else hint), worker, "reserve")
    return end, delayed, throttled


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3, 0.4, 0.5])
def test_pacing_stands_aside_for_rate_independent_429s(fraction: float) -> None:
    """64 callers x 50 calls, a random share answered 429 however slowly they send: pacing
    adds little delay next to the work, and the calls end about when they do without it."""
    latency = 0.2
    paced_end, delayed, throttled = simulate(random_rejections(fraction), 64, 50, latency, True)
    free_end, _, _ = simulate(random_rejections(fraction), 64, 50, latency, False)
    work = 64 * 50 * latency
    assert throttled > 0
    assert delayed <= 0.1 * work, (delayed, work)
    assert paced_end <= 1.1 * free_end, (paced_end, free_end)


@pytest.mark.parametrize("fraction", [0.7, 0.9])
def test_most_requests_refused_whatever_the_rate_are_not_slowed(fraction: float) -> None:
    """64 callers x 20 calls, most answered 429 however slowly they send (a limit shared with
    other applications, nearly spent by them). 429s far over the successes look like a limit
    far over, which is paced at once at the success rate, without a trial: at 90 %, it then
    never saw a fall it could judge by, sent a tenth of what unpaced callers send, and the calls
    ended 17 times later on the mean of five draws. Paced that way, the answers are now judged
    as a trial's, and judged early once their 429s could not fall by half: over five draws the
    mean end is within the design's tenth of unpaced. (Which caller meets the longest run of
    429s is chance, and pacing changes who draws what: single draws vary more.)"""
    paced, free = [], []
    for seed in range(1, 6):
        paced.append(simulate(random_rejections(fraction, seed), 64, 20, 0.2, True)[0])
        free.append(simulate(random_rejections(fraction, seed), 64, 20, 0.2, False)[0])
    assert sum(paced) <= 1.1 * sum(free), (paced, free)


@pytest.mark.parametrize("limit", [False, True])
def test_a_limit_far_over_paced_without_a_trial_is_judged_by_its_answers(limit: bool) -> None:
    """Nine 429s in ten, 100 answers a second: far over a limit, paced at once at the success
    rate, without a trial. If the 429s stay nine in ten, pacing stands aside as soon as that
    many could not be a fall by half (before a trial's full count); if they vanish once paced
    (``limit``: a limit), it paces on."""
    limiter, now, count = AdaptiveLimiter(), 0.0, 0
    while count < 5 * TRIAL_MIN_ANSWERS:
        count += 1
        now += 0.01
        refused = count % 10 != 0 and not (limit and now > 0.5)
        if refused:
            limiter.on_throttled(now, None, None)
        else:
            limiter.on_success(now, None)
        if not limiter.engaged:
            break
    if limit:
        assert limiter.engaged, "a limit is paced on"
    else:
        assert not limiter.engaged, "stood aside"
        # Paced from about the 50th answer; then the trial's lag (30 answers) and the answers
        # that show the 429s held (10 to 20). Judged only by the watch, 160.
        assert count <= 120, count


@pytest.mark.parametrize(
    ("throttled", "answers", "trial_throttled", "trial_answers", "shown"),
    [
        (90, 100, 18, 20, True),  # as many 429s as before: no fall by half, already
        (90, 100, 9, 9, False),  # too few answers to tell, however many 429s
        (90, 100, 2, 20, False),  # fallen
        (50, 100, 10, 20, False),  # 50 % against 50 %: 20 answers are noise still
        (50, 100, 15, 30, True),
        (10, 100, 2, 20, False),  # 10 % is never shown held in so few
    ],
)
def test_a_trial_shows_early_that_its_429s_did_not_fall(
    throttled: int, answers: int, trial_throttled: int, trial_answers: int, shown: bool
) -> None:
    assert held(throttled, answers, trial_throttled, trial_answers) is shown


@pytest.mark.parametrize("hints", [True, False])
def test_pacing_still_paces_a_token_bucket(hints: bool) -> None:
    """100 callers into a 100 requests/s bucket: pacing holds them back and saves most of the
    429s, and the calls still end no later than without it."""
    server = token_bucket(100.0, 10, hints)
    paced_end, delayed, paced_429s = simulate(server, 100, 10, 0.02, True)
    free_end, _, free_429s = simulate(token_bucket(100.0, 10, hints), 100, 10, 0.02, False)
    assert delayed > 0
    assert paced_429s <= 0.2 * free_429s, (paced_429s, free_429s)
    assert paced_end <= 1.05 * free_end, (paced_end, free_end)


def lucky_while(server: Server, start: float, end: float) -> Server:
    """``server``, except that every request sent between ``start`` and ``end`` gets through."""
    return lambda now: (True, None) if start <= now < end else server(now)


def test_a_wrong_verdict_that_our_rate_matters_is_withdrawn_quickly() -> None:
    """Rate-independent 429s that by chance stop while the trial runs: the trial judges that
    our rate matters. Once pacing has slowed far below what got through and the 429s stayed,
    pacing stands aside, well before a new trial would be due: the calls end about when they do
    without pacing (64 callers x 50 calls take about 11 s)."""
    latency = 0.2
    paced_end, _, _ = simulate(lucky_while(random_rejections(0.1), 0.4, 1.6), 64, 50, latency, True)
    free_end, _, _ = simulate(lucky_while(random_rejections(0.1), 0.4, 1.6), 64, 50, latency, False)
    assert paced_end <= 1.1 * free_end, (paced_end, free_end)


@pytest.mark.parametrize(
    ("throttled", "answers", "enough"),
    [
        (10, 19, False),  # too few answers to know the success rate the trial sends at
        (8, 20, True),  # 40 %: a trial that removes them shows it after 20
        (2, 20, False),  # 10 %: 20 answers are noise
        (10, 99, False),
        (0, TRIAL_MIN_ANSWERS, True),  # at most this many, whatever they say
    ],
)
def test_a_reference_lasts_as_long_as_a_verdict_needs(
    throttled: int, answers: int, enough: bool
) -> None:
    """The reference is measured unpaced: every 429 in it is one pacing did not save. With
    many, a short one is enough for a trial that removes them to prove it did."""
    assert reference_suffices(throttled, answers) is enough


def test_a_trial_that_heard_no_answer_judges_nothing() -> None:
    """A trial of whether our rate matters, begun, then no answer at all for longer than its
    window counts (the callers stalled): its verdict is not a division by nothing in the
    caller's success, and pacing stays on (nothing showed that it does not help)."""
    limiter = AdaptiveLimiter()
    limiter.on_throttled(0.0, None, None)
    for i in range(44):  # a few 429s among many successes, the second before the trial
        now = 4.5 + i / 100
        if i % 11:
            limiter.on_success(now, None)
        else:
            limiter.on_throttled(now, None, None)
    limiter.on_success(5.2, None)  # the reference is in: the trial begins
    assert limiter.engaged and limiter.rate < 44
    limiter.on_success(13.5, None)  # its window holds no answer when it is judged
    assert limiter.engaged and not limiter.independent


def far_over_at_once(limiter: AdaptiveLimiter) -> float:
    """A crowd of 100 into a bucket of 10: 90 answered 429 at once, 10 served after 20 ms, the
    first retries into the empty bucket; the time of the last answer (pacing, provisional)."""
    for _ in range(100):
        limiter.reserve(0.0)
    for _ in range(90):
        limiter.on_throttled(0.005, None, None)
    for _ in range(10):
        limiter.on_success(0.02, None)
    for now in (0.03, 0.05, 0.07, 0.09, 0.106):
        limiter.on_throttled(now, None, None)
    return 0.106


def test_a_provisional_rate_that_met_no_429_is_no_ceiling() -> None:
    """Far over a limit, pacing starts at once at a share of the success rate. Successes that
    then come with no 429 among them came at the rate pacing let out, under the limit: taken
    as the limit's rate, they held the schedule there, probing up 3 % a second (a real run:
    68 requests/s for six seconds against a limit of 100). They are a floor to grow from."""
    limiter = AdaptiveLimiter()
    now = far_over_at_once(limiter)
    provisional = limiter.rate
    while now < 3.0:  # 60 a second let out, all served
        now += 1 / 60
        limiter.on_success(now, None)
    assert limiter.rate >= 1.3 * max(provisional, 60), (limiter.rate, provisional)


def test_a_provisional_rate_corrected_while_the_limit_refuses_is_its_rate() -> None:
    """While 429s keep coming beside the successes, these come at the limit's rate: the
    schedule goes under it by a trial's margin while its answers are judged (a short window
    overstates the rate, and a pace a little over the limit keeps half the 429s: a real
    limit judged not ours, in a real run, and 65 of 1,000 calls out of attempts). Once the
    429s have clearly fallen, it goes to the usual margin under the limit."""
    limiter = AdaptiveLimiter()
    now = far_over_at_once(limiter)
    for _ in range(20):  # 40 successes and 60 429s a second
        now += 0.01
        if round(now * 100) % 5 < 2:
            limiter.on_success(now, None)
        else:
            limiter.on_throttled(now, None, None)
    trial = limiter.rate
    assert trial == pytest.approx(40 * TRIAL_MARGIN, rel=0.2)
    while now < 1.5:  # under the limit: every answer a success
        now += 1 / trial
        limiter.on_success(now, None)
    assert limiter.engaged
    assert trial * 1.1 < limiter.rate <= 40, (trial, limiter.rate)


def held_back(limiter: AdaptiveLimiter, now: float) -> bool:
    """Whether the schedule holds a second send at this instant back (measuring a trial's
    reference, unpaced, it holds nobody)."""
    limiter.reserve(now)
    return (limiter.reserve(now) or 0.0) > 0.0


def test_a_verdict_pacing_keeps_proving_is_not_tried_again() -> None:
    """Paced against a limit, the 429s fell from the reference's and stay low (AIMD meets one
    now and then): that is the trial passing all along. Re-measuring unpaced every
    ``RETRIAL_AFTER`` would send a crowd's worth of 429s each time (about 100 here in a real
    run, every ten seconds). Pacing goes on without a pause."""
    limiter = AdaptiveLimiter()
    now, answered = far_over_at_once(limiter), 0
    while now < 3 * RETRIAL_AFTER:
        now += 0.01
        answered += 1
        if answered % 200:
            limiter.on_success(now, None)
        else:
            limiter.on_throttled(now, None, None)
        if answered % 10 == 0:
            assert held_back(limiter, now), now
