"""The pure retry decisions, including the hostile header values a server (or proxy) can send."""

from __future__ import annotations

import email.utils
import math
from unittest import mock

import openai
import pytest
import tenacity
from hypothesis import given
from hypothesis import strategies as st

from otel_openai_retry import Outcome, RetryPolicy
from otel_openai_retry._decisions import (
    classify,
    error_type,
    parse_retry_after,
    retry_after_wait,
)
from otel_openai_retry._strategies import Strategies

from .helpers import sdk_httpx as httpx2

POLICY = RetryPolicy()
NOW = 1_700_000_000.0
BACKOFF = Strategies(POLICY).backoff


def backoff_wait(attempt: int, rand: float) -> float:
    """The policy's backoff after failed attempt ``attempt``, with the random draw fixed at
    ``rand`` of the way from the floor to the ceiling."""
    state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt
    with mock.patch("random.uniform", lambda low, high: low + (high - low) * rand):
        return BACKOFF(state)


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    cls = {429: openai.RateLimitError, 400: openai.BadRequestError}.get(status)
    if cls is None:
        cls = openai.InternalServerError if status >= 500 else openai.APIStatusError
    return cls("failed", response=response, body=None)


def test_retry_after_ms_wins_over_seconds() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    date = email.utils.formatdate(NOW + 7, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=NOW) == pytest.approx(7.0)
    past = email.utils.formatdate(NOW - 100, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=NOW) == 0.0


@pytest.mark.parametrize("value", ["abc", "", "nan", "-1", "-0.5", "1e", "Tomorrow"])
def test_garbage_is_no_hint(value: str) -> None:
    assert parse_retry_after({"retry-after": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None


@pytest.mark.parametrize("value", ["abc", "", "1e", "5s"])
def test_an_unparsable_ms_hint_falls_back_to_seconds(value: str) -> None:
    assert parse_retry_after({"retry-after-ms": value, "retry-after": "2"}) == 2.0


def test_dates_beyond_any_clock_are_no_hint() -> None:
    """A numeric zone of many digits puts the date past what a float holds: not a crash."""
    digits = "9" * 400
    future = parse_retry_after({"retry-after": f"Mon, 01 Jan 2001 00:00:00 -{digits}"}, now=NOW)
    past = parse_retry_after({"retry-after": f"Mon, 01 Jan 2001 00:00:00 +{digits}"}, now=NOW)
    assert future is None
    assert past is None


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "9" * 400, "1e400"])
def test_an_infinite_hint_is_no_hint_as_the_sdk_reads_it(value: str) -> None:
    """The SDK backs off where a hint is no usable wait; a caller must not fail for it."""
    verdict = classify(status_error(429, {"retry-after": value}), POLICY)
    assert verdict.retryable
    assert verdict.retry_after is None


def test_a_finite_hint_beyond_the_policy_counts_as_too_long() -> None:
    verdict = classify(status_error(429, {"retry-after": "1e300"}), POLICY)
    assert not verdict.retryable
    assert verdict.give_up_as is Outcome.RETRY_AFTER_TOO_LONG


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_the_first_number_decides_as_the_sdk_reads_it(value: str) -> None:
    """``retry-after-ms: nan`` beside ``retry-after: 86400``: the SDK takes the NaN (no usable
    wait) and backs off; so do we, instead of giving up on the day-long second header."""
    assert parse_retry_after({"retry-after-ms": value, "retry-after": "86400"}) is None


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (529, True),
    ],
)
def test_status_classification(status: int, retryable: bool) -> None:
    verdict = classify(status_error(status), POLICY)
    assert verdict.retryable is retryable
    assert verdict.status_code == status
    assert verdict.give_up_as is (None if retryable else Outcome.NON_RETRYABLE)


@pytest.mark.parametrize("spelling", ["false", "FALSE", " False "])
def test_x_should_retry_false_in_any_casing_stops(spelling: str) -> None:
    verdict = classify(status_error(503, {"X-Should-Retry": spelling}), POLICY)
    assert not verdict.retryable


def test_x_should_retry_true_makes_400_retryable() -> None:
    assert classify(status_error(400, {"x-should-retry": "true"}), POLICY).retryable


def test_connection_errors_are_retryable_and_others_are_not() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    assert classify(openai.APITimeoutError(request=request), POLICY).retryable
    assert classify(openai.APIConnectionError(request=request), POLICY).retryable
    assert not classify(ValueError("bug"), POLICY).retryable


def test_error_type_uses_the_public_name() -> None:
    assert error_type(status_error(429)) == "openai.RateLimitError"
    assert error_type(ValueError()) == "ValueError"
    # httpx2 from openai 3, httpx before: the library the installed SDK is built on
    assert error_type(httpx2.ConnectError("x")) == f"{httpx2.__name__}.ConnectError"


def test_backoff_is_full_jitter_capped() -> None:
    assert backoff_wait(1, rand=1.0) == 0.5
    assert backoff_wait(3, rand=1.0) == 2.0
    assert backoff_wait(50, rand=1.0) == 20.0
    assert backoff_wait(5000, rand=1.0) == 20.0
    assert backoff_wait(3, rand=0.0) == 0.0
    assert backoff_wait(3, rand=0.5) == 1.0


def test_retry_after_jitter_is_upward_only() -> None:
    assert retry_after_wait(2.0, rand=lambda: 0.0) == 2.0
    assert retry_after_wait(2.0, rand=lambda: 1.0) == pytest.approx(2.2)


header_text = st.one_of(
    st.text(max_size=40),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(min_value=-1e12, max_value=1e12).map(
        lambda offset: email.utils.formatdate(min(max(NOW + offset, 0), 253402300799), usegmt=True)
    ),
)


@given(
    retry_after=st.none() | header_text,
    retry_after_ms=st.none() | header_text,
    should_retry=st.none() | st.sampled_from(["true", "false", "TRUE", "False", "maybe", ""]),
    status=st.sampled_from([400, 408, 409, 429, 500, 503]),
    attempt=st.integers(min_value=1, max_value=10_000),
    rand=st.floats(min_value=0.0, max_value=1.0),
)
def test_hostile_headers_never_crash_never_oversleep(
    retry_after: str | None,
    retry_after_ms: str | None,
    should_retry: str | None,
    status: int,
    attempt: int,
    rand: float,
) -> None:
    headers = {}
    for name, value in (
        ("retry-after", retry_after),
        ("retry-after-ms", retry_after_ms),
        ("x-should-retry", should_retry),
    ):
        if value is not None and value.isprintable() and value.isascii():
            headers[name] = value
    verdict = classify(status_error(status, headers), POLICY)
    if headers.get("x-should-retry", "").strip().lower() == "false":
        assert not verdict.retryable
    if not verdict.retryable:
        return
    hint = verdict.retry_after
    if hint is not None:
        assert 0 <= hint <= POLICY.max_retry_after
        sleep = retry_after_wait(hint, rand=lambda: rand)
        assert hint <= sleep <= hint * 1.1 + 1e-9
        assert sleep <= POLICY.max_retry_after * 1.1
    else:
        sleep = backoff_wait(attempt, rand)
        assert 0 <= sleep <= POLICY.max_wait
    assert math.isfinite(sleep)
