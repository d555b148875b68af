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
from otel_openai_retry._endpoints import NULL_GUARD, Endpoints
from otel_openai_retry._pacing_trial import DISENGAGE_AFTER
from otel_openai_retry._rate_headers import Limit, read_limit, refill_rate
from otel_openai_retry._slots import take_slot
from otel_openai_retry._token_pacing import HINT_MARGIN, TokenPacer

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
    assert pacer.on_throttled(0.0, TOKENS)
    return pacer


def test_a_token_429_without_a_known_rate_is_left_to_request_pacing() -> None:
    pacer = TokenPacer(max_gate=120.0)
    assert not pacer.on_throttled(0.0, None)
    assert not pacer.on_throttled(0.0, {"retry-after-ms": "100"})
    assert not pacer.engaged
    assert pacer.reserve(0.0, 10**6, 0.0, math.inf) == 0.0


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
    assert pacer.on_throttled(0.0, huge)
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


def test_a_token_429_without_token_headers_falls_back_to_request_pacing() -> None:
    guard = Endpoints(RetryPolicy()).guard("http://x/v1", "m")
    guard.throttled(0.0, 0.5, {"retry-after-ms": "500"}, "tokens")
    assert guard.pacing() and not guard.pacing_tokens()
    assert guard.slot_delay(0.0, math.inf) == pytest.approx(0.5)


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
