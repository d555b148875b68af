"""The pure parts of pacing and the retry budget, driven by an explicit clock."""

from __future__ import annotations

import pytest

from otel_openai_retry import ConfigurationError, RetryPolicy
from otel_openai_retry._budget import RetryBudget
from otel_openai_retry._pacing import (
    DECREASE_FACTOR,
    DISENGAGE_AFTER,
    INCREASE_FRACTION,
    INCREASE_PER_SUCCESS,
    START_FLOOR,
    AdaptiveLimiter,
    parse_duration,
    refill_rate,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20ms", 0.02), ("1s", 1.0), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("0.25", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-1", "5x", "1s junk", "nan"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    assert parse_duration(text) is None


def test_refill_rate_from_openai_headers() -> None:
    headers = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "100ms",
    }
    assert refill_rate(headers) == pytest.approx(100.0)
    assert refill_rate({**headers, "x-ratelimit-remaining-requests": "10"}) is None
    assert refill_rate({**headers, "x-ratelimit-reset-requests": "soon"}) is None
    assert refill_rate({}) is None


def test_limiter_costs_nothing_until_a_429() -> None:
    limiter = AdaptiveLimiter()
    assert all(limiter.reserve(t / 100) == 0.0 for t in range(100))
    limiter.on_success(1.0, None)
    assert not limiter.engaged


def test_a_429_gates_everyone_until_retry_after() -> None:
    limiter = AdaptiveLimiter()
    for _ in range(50):
        limiter.reserve(10.0)
    limiter.on_throttled(10.0, 0.5, None)
    assert limiter.engaged
    assert limiter.rate == max(START_FLOOR, 50 * DECREASE_FACTOR)
    delays = [slot(limiter, 10.0) for _ in range(3)]
    assert delays[0] == pytest.approx(0.5)
    assert delays[1] - delays[0] == pytest.approx(1 / limiter.rate)


def slot(limiter: AdaptiveLimiter, now: float) -> float:
    delay = limiter.reserve(now)
    assert delay is not None
    return delay


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
    headers = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "100ms",
    }
    limiter.on_throttled(0.0, None, headers)
    assert limiter.rate == pytest.approx(98.0)
    first, second = slot(limiter, 0.0), slot(limiter, 0.0)
    assert second - first == pytest.approx(1 / 98.0)


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
    raised = limiter.rate
    limiter.on_throttled(0.6, None, None)
    assert limiter.rate == pytest.approx(raised * DECREASE_FACTOR)


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
