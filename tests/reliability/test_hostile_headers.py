"""Hostile retry headers never crash, never oversleep, never retry a "no".

Property-based, in two layers:

- the rules: ``classify`` and the wait the loop's :class:`CallState` chooses, over any mix of
  ``retry-after-ms``, ``retry-after`` (numbers, HTTP dates in the past and far future, garbage)
  and ``x-should-retry`` in odd casings of both name and value;
- end to end: the same hostile headers sent by the real fake server, read by the real SDK,
  through the instrumented client, checking the spans a user would look at.

"The cap" is the policy's: a hinted sleep is the hint plus at most 10 % (never earlier than
asked), and a hint above ``max_retry_after`` means giving up at once; an unhinted sleep is at
most ``max_wait``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import itertools
import math
import time

import openai
import pytest
import tenacity
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import OpenAIRetryInstrumentor, Outcome, RetryPolicy
from otel_openai_retry._call_state import CallState
from otel_openai_retry._decisions import Verdict
from otel_openai_retry._pacing import MAX_HINT_RATE, MIN_RATE, AdaptiveLimiter, refill_rate
from otel_openai_retry._strategies import Strategies
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from ..helpers import FAST, Instrument, async_client, attrs, one_call, sync_client
from ..helpers import sdk_httpx as httpx2

NOW = time.time()
LAST_DATE = 253402300799  # 9999-12-31T23:59:59Z, the last instant an HTTP date can name

# -- hostile values ------------------------------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from(
        ["0", "-0", "0.0", "1e400", "-1e400", "1e-400", "NaN", "-inf", "+inf", "Infinity",
         "1_000", "0x10", " 5 ", "5s", "5ms", "1,5", "١٢", "9" * 400, "-" + "9" * 400]
    ),
)  # fmt: skip
instants = st.one_of(
    st.floats(min_value=0, max_value=LAST_DATE),  # from 1970 to the year 9999
    st.floats(min_value=NOW - 3600, max_value=NOW + 3600),  # near now, either side
)
dates = st.one_of(
    instants.map(lambda t: email.utils.formatdate(t, usegmt=True)),  # IMF-fixdate
    instants.map(lambda t: time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(t))),  # RFC 850
    instants.map(lambda t: time.asctime(time.gmtime(t))),  # asctime
    # A numeric zone of up to 30 digits: an offset of up to 10^26 hours, either way.
    st.tuples(instants, st.sampled_from("+-"), st.text("0123456789", min_size=1, max_size=30)).map(
        lambda parts: email.utils.formatdate(parts[0])[:-5] + parts[1] + parts[2]
    ),
    st.sampled_from(
        ["Mon, 01 Jan 10000 00:00:00 GMT", "Sun, 00 Jan 0 00:00:00 GMT", "31 Feb 2024 25:61:61",
         "Tue, 29 Feb 2100 00:00:00 GMT", "yesterday", "Sun Nov  6 08:49:37 1994 trailing"]
    ),
)  # fmt: skip


def header_values(max_codepoint: int) -> st.SearchStrategy[str]:
    """Numbers, dates, or what a proxy might put there: any printable text up to
    ``max_codepoint`` (0xFF: all that HTTP/1.1 can carry; 0x7E: plain ASCII)."""
    text = st.text(
        st.characters(min_codepoint=0x20, max_codepoint=max_codepoint, exclude_characters="\x7f")
    )
    return st.one_of(numbers, dates, text)


should_retry_values = st.one_of(
    st.sampled_from(["true", "false", "TRUE", "False", " fAlSe ", "\tfalse", "yes", "0", "", "no"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8),
)


@st.composite
def odd_case(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))


@st.composite
def hostile_headers(draw: st.DrawFn, max_codepoint: int = 0xFF) -> list[tuple[str, str]]:
    """Any subset of the three headers, names in any casing, values hostile."""
    headers = []
    for name, values in (
        ("retry-after-ms", header_values(max_codepoint)),
        ("retry-after", header_values(max_codepoint)),
        ("x-should-retry", should_retry_values),
    ):
        if draw(st.booleans()):
            headers.append((draw(odd_case(name)), draw(values)))
    return headers


def said_no(headers: list[tuple[str, str]]) -> bool:
    """``x-should-retry: false``, in the way the SDK and the library read it."""
    return any(n.lower() == "x-should-retry" and v.strip().lower() == "false" for n, v in headers)


# -- the rules ------------------------------------------------------------------------------------


def status_error(status: int, headers: list[tuple[str, str]]) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    # As bytes, the way they come off the wire; httpx decodes them as it would a real response.
    raw = [(name.encode(), value.encode()) for name, value in headers]
    response = httpx2.Response(status, headers=raw, request=request)
    exc_type = {429: openai.RateLimitError, 400: openai.BadRequestError}.get(
        status, openai.InternalServerError if status >= 500 else openai.APIStatusError
    )
    return exc_type("hostile", response=response, body=None)


def decide(
    policy: RetryPolicy, exc: BaseException, attempt: int
) -> tuple[Verdict, bool, float | None]:
    """What the loop decides after failed attempt ``attempt``: the verdict, whether it retries,
    and the sleep it chooses (``None`` when it does not retry)."""
    state = CallState(Strategies(policy), (), policy.max_attempts)
    retry_state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    retry_state.attempt_number = attempt
    state.record_failure(retry_state, attempt, exc)
    assert state.verdict is not None
    if not state.should_retry(retry_state):
        return state.verdict, False, None
    return state.verdict, True, state.wait(retry_state)


POLICIES = [RetryPolicy(), RetryPolicy(initial_wait=0.01, max_wait=0.05, max_retry_after=0.5)]


def check_decision(
    policy: RetryPolicy, headers: list[tuple[str, str]], status: int, attempt: int
) -> None:
    verdict, retries, sleep = decide(policy, status_error(status, headers), attempt)
    hint = verdict.retry_after
    if hint is not None:
        assert not math.isnan(hint) and hint >= 0, hint
    if said_no(headers):
        assert not retries, "the server said not to retry"
        assert verdict.give_up_as is Outcome.NON_RETRYABLE
    if not retries:
        assert sleep is None
        return
    assert sleep is not None and math.isfinite(sleep) and sleep >= 0
    if hint is not None:
        assert hint <= policy.max_retry_after, "a hint beyond the limit means giving up"
        assert hint <= sleep <= hint * 1.1 + 1e-12, "the hint, plus at most 10 %, never less"
        assert sleep <= policy.max_retry_after * 1.1 + 1e-12
    else:
        assert sleep <= policy.max_wait


@settings(max_examples=400, deadline=None)
@given(
    headers=hostile_headers(),
    status=st.sampled_from([400, 408, 409, 429, 500, 503]),
    attempt=st.integers(min_value=1, max_value=10_000),
    which=st.sampled_from(range(len(POLICIES))),
)
@example(headers=[("Retry-After", "inf")], status=429, attempt=1, which=0)
@example(headers=[("retry-after-ms", "NaN"), ("retry-after", "2")], status=429, attempt=1, which=0)
@example(
    headers=[("X-Should-Retry", " FALSE "), ("retry-after", "0")], status=503, attempt=1, which=0
)
@example(
    headers=[("x-should-retry", "True"), ("retry-after-ms", "1")], status=400, attempt=2, which=1
)
def test_no_header_combination_crashes_or_oversleeps(
    headers: list[tuple[str, str]], status: int, attempt: int, which: int
) -> None:
    check_decision(POLICIES[which], headers, status, attempt)


@pytest.mark.parametrize(
    "casing", ["x-should-retry", "X-Should-Retry", "X-SHOULD-RETRY", "x-sHoUlD-rEtRy"]
)
@pytest.mark.parametrize("value", ["false", "FALSE", " False ", "fAlSe"])
@pytest.mark.parametrize("status", [408, 409, 429, 500, 503])
def test_no_means_no_whatever_the_casing(casing: str, value: str, status: int) -> None:
    headers = [(casing, value), ("retry-after-ms", "1")]
    verdict, retries, _ = decide(RetryPolicy(), status_error(status, headers), 1)
    assert not retries and verdict.give_up_as is Outcome.NON_RETRYABLE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (email.utils.formatdate(NOW - 86_400 * 365 * 30, usegmt=True), "now"),
        (email.utils.formatdate(NOW - 5, usegmt=True), "now"),
        (email.utils.formatdate(NOW + 86_400, usegmt=True), "too long"),
        (email.utils.formatdate(LAST_DATE, usegmt=True), "too long"),
        ("Mon, 01 Jan 10000 00:00:00 GMT", "no hint"),  # past the year 9999: not a date
        ("Sun, 06 Nov 1994 08:49:37 GMT", "now"),
        ("Sunday, 06-Nov-94 08:49:37 GMT", "now"),
        ("Sun Nov  6 08:49:37 1994", "now"),
    ],
)
def test_dates_in_the_past_and_far_future(value: str, expected: str) -> None:
    policy = RetryPolicy()
    verdict, retries, sleep = decide(policy, status_error(429, [("retry-after", value)]), 1)
    if expected == "now":
        assert verdict.retry_after == 0.0 and retries and sleep == 0.0
    elif expected == "too long":
        assert not retries and verdict.give_up_as is Outcome.RETRY_AFTER_TOO_LONG
        assert verdict.retry_after is not None and verdict.retry_after > policy.max_retry_after
    else:
        assert verdict.retry_after is None and retries
        assert sleep is not None and 0 <= sleep <= policy.initial_wait


HUGE_ZONE = "Mon, 01 Jan 2001 00:00:00 -" + "9" * 400


def test_a_date_with_an_absurd_zone_is_no_hint_rather_than_a_crash() -> None:
    verdict, _, _ = decide(RetryPolicy(), status_error(429, [("retry-after", HUGE_ZONE)]), 1)
    assert verdict.retry_after is None or verdict.give_up_as is Outcome.RETRY_AFTER_TOO_LONG


# -- the pacer: every x-ratelimit-* header it reads --------------------------------------------

durations = st.one_of(
    numbers,
    st.sampled_from(
        ["1e400s", "9" * 400 + "h", "9" * 400 + "ms", "1." + "9" * 400 + "s", "nans", "-1s",
         "infs", "1h2m3.5s", "20ms", "0s", "0ms", "8760h", "1e3s", "1s1s1s", " 6m0s "]
    ),
    st.tuples(st.integers(0, 10**30), st.sampled_from(["ms", "s", "m", "h"])).map(
        lambda p: f"{p[0]}{p[1]}"
    ),
)  # fmt: skip
LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests")


@st.composite
def ratelimit_headers(draw: st.DrawFn) -> dict[str, str]:
    headers = {name: draw(numbers) for name in LIMIT_HEADERS if draw(st.booleans())}
    if draw(st.booleans()):
        headers["x-ratelimit-reset-requests"] = draw(durations)
    return headers


PACER_CAP = 2.0


@settings(max_examples=400, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.booleans(),  # a 429, or a success
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),  # its hint
            ratelimit_headers(),
            st.floats(min_value=0, max_value=2),  # seconds since the previous answer
        ),
        max_size=30,
    )
)
@example(
    events=[
        (
            True,
            None,
            {
                "x-ratelimit-limit-requests": "9" * 400,
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1s",
            },
            0.0,
        )
    ]
)
@example(
    events=[
        (True, 86_400.0, {}, 0.0),
        (
            False,
            None,
            {
                "x-ratelimit-limit-requests": "10",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1e400s",
            },
            0.1,
        ),
    ]
)
@example(
    events=[
        (
            True,
            math.inf,
            {
                "x-ratelimit-limit-requests": "10",
                "x-ratelimit-remaining-requests": "-" + "9" * 400,
                "x-ratelimit-reset-requests": "9" * 400 + "h",
            },
            0.0,
        )
    ]
)
def test_the_pacer_survives_any_ratelimit_header(
    events: list[tuple[bool, float | None, dict[str, str], float]],
) -> None:
    """Whatever the headers and hints: no exception, a finite rate within bounds, and no wait
    for a slot (nor before asking again for one beyond the booking horizon) beyond the cap."""
    limiter = AdaptiveLimiter(max_gate=PACER_CAP)
    now = 1000.0
    for throttled, hint, headers, gap in events:
        now += gap
        rate = refill_rate(headers)
        assert rate is None or (math.isfinite(rate) and 0 < rate <= MAX_HINT_RATE), rate
        delay = limiter.reserve(now)
        assert delay is not None and math.isfinite(delay) and abs(delay) <= PACER_CAP
        if throttled:
            limiter.on_throttled(now, hint, headers)
        else:
            limiter.on_success(now, headers)
        if limiter.engaged:
            assert math.isfinite(limiter.rate) and limiter.rate >= MIN_RATE


@pytest.mark.parametrize("status", [429, 200])
def test_a_400_digit_ratelimit_header_reaches_nobody(
    status: int, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """After a 429 (so pacing is engaged), a 429 or a 200 whose ``x-ratelimit-*`` headers hold
    absurd numbers: the call goes on as if they were absent."""
    instrument(policy=dataclasses.replace(E2E_POLICY, max_attempts=3))
    hostile = {
        "x-ratelimit-limit-requests": "9" * 400,
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }
    server.script(
        Fault.rate_limit(retry_after_ms=1),
        Fault(status_code=status, headers=tuple(hostile.items())),
        Fault.ok(),
    )
    client = sync_client(server)
    client.chat.completions.create(model="huge", messages=[{"role": "user", "content": "x"}])
    client.chat.completions.create(model="huge", messages=[{"role": "user", "content": "x"}])
    # Call 1: the 429, the hostile answer (retried if a 429), the ok; call 2: one request.
    assert server.request_count == (4 if status == 429 else 3)
    assert server.pending_faults == 0


# -- end to end: the real server, the real SDK ---------------------------------------------------

E2E_POLICY = RetryPolicy(max_attempts=2, initial_wait=0.002, max_wait=0.01, max_retry_after=0.05)
E2E_CAP = max(E2E_POLICY.max_wait, E2E_POLICY.max_retry_after * 1.1)
STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    408: openai.APIStatusError,
    409: openai.ConflictError,
    429: openai.RateLimitError,
    500: openai.InternalServerError,
    503: openai.InternalServerError,
}
_models = itertools.count()


def sendable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What aiohttp will put on the wire: header values are text without control characters;
    a name given twice (in two casings) is sent once, the last value winning."""
    merged: dict[str, tuple[str, str]] = {}
    for name, value in headers:
        merged[name.lower()] = (name, value.strip(" \t"))
    return list(merged.values())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    # ASCII: what the SDK reads is then exactly what the test wrote (no charset guessing).
    headers=hostile_headers(max_codepoint=0x7E).map(sendable),
    status=st.sampled_from(sorted(STATUS_ERRORS)),
)
@example(headers=[("retry-after", "600")], status=429)
@example(headers=[("retry-after", "-1"), ("X-SHOULD-RETRY", "FALSE")], status=503)
@example(
    headers=[("retry-after-ms", "nan"), ("retry-after", email.utils.formatdate(NOW - 9))],
    status=429,
)
@example(headers=[("retry-after", email.utils.formatdate(LAST_DATE, usegmt=True))], status=429)
def test_hostile_headers_through_the_real_sdk(
    headers: list[tuple[str, str]],
    status: int,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
) -> None:
    if not OpenAIRetryInstrumentor().is_instrumented_by_opentelemetry:  # the first example
        instrument(policy=E2E_POLICY)
    server.reset()
    exporter.clear()
    server.script(Fault(status_code=status, headers=tuple(headers)))
    # A model per example: each gets pacing state of its own (state is per base URL and model).
    model = f"hostile-{next(_models)}"
    client = sync_client(server, timeout=2.0)
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        error: BaseException | None = None
    except openai.APIStatusError as exc:
        error = exc

    requests = server.request_count
    call = one_call(exporter.get_finished_spans())
    assert len(call.attempts) == requests
    if said_no(headers):
        assert requests == 1, "the server said not to retry"
    if requests == 1:
        assert type(error) is STATUS_ERRORS[status], error
        assert call.attr("openai_retry.outcome") in ("non_retryable", "retry_after_too_long")
        assert "openai_retry.sleep" not in attrs(call.attempts[0])
    else:
        assert requests == 2 and error is None
        assert call.attr("openai_retry.outcome") == "success"
        sleep = attrs(call.attempts[0])["openai_retry.sleep"]
        throttle = attrs(call.attempts[1]).get("openai_retry.throttle", 0.0)
        assert isinstance(sleep, float) and isinstance(throttle, float)
        assert 0 <= sleep <= E2E_CAP and throttle <= E2E_CAP


@pytest.mark.parametrize(
    "fault",
    [
        Fault.rate_limit(retry_after=600),
        Fault.rate_limit(retry_after_ms=3_600_000),
        Fault.rate_limit(retry_after_date_in=86_400),
        Fault.status(
            429, headers={"retry-after": "Mon, 01 Jan 2001 00:00:00 -99999999999999999999"}
        ),
    ],
    ids=["600s", "1h-in-ms", "date-tomorrow", "date-absurd-zone"],
)
async def test_a_refused_hint_does_not_hold_up_the_next_call(
    fault: Fault, server: FakeOpenAIServer, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(fault)
    client = async_client(server)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "x"}
    ]
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert time.monotonic() - started < 60, "the caller gave up at once, not after the hint"
    # The next call to the same model: the server is fine now.
    await asyncio.wait_for(
        client.chat.completions.create(model="gpt-4o-mini", messages=messages), timeout=2.0
    )


def test_an_absurd_date_from_the_server_reaches_the_caller_as_the_sdks_error(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=E2E_POLICY)
    server.script(Fault.status(429, headers={"retry-after": HUGE_ZONE}))
    client = sync_client(server)
    # Retried (no usable hint) and answered, or given up on: both are fine.
    with contextlib.suppress(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert one_call(exporter.get_finished_spans()).attr("openai_retry.outcome") is not None
