"""When a call stops retrying, and what that costs everyone else.

Only a retry that is really sent is charged to the endpoint's budget; a hint the call itself
will not wait for never holds back other callers; no sleep is ever one the clock cannot take;
span names of endpoints without GenAI meaning carry no resource id and no query string.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import replace
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import Outcome, RetryPolicy
from otel_openai_retry._budget import RetryBudget
from otel_openai_retry._call_state import CallState
from otel_openai_retry._endpoints import LocalGuard
from otel_openai_retry._hooks import RetryDetails
from otel_openai_retry._loop import run_sync
from otel_openai_retry._observers import CallSummary, Observer
from otel_openai_retry._pacing import AdaptiveLimiter
from otel_openai_retry._strategies import Strategies
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import API_KEY, FAST, MESSAGES, Instrument, attrs, calls, one_call, sync_client
from .helpers import sdk_httpx as httpx  # the SDK's own HTTP stack


class Recorder(Observer):
    """An observer that keeps what the loop told it."""

    def __init__(self) -> None:
        self.summary: CallSummary | None = None
        self.sleeps: list[float] = []

    def retrying(self, details: RetryDetails, retry_state: object) -> None:
        self.sleeps.append(details.sleep)

    def finished(self, summary: CallSummary, exc: BaseException | None) -> None:
        self.summary = summary


def connection_error() -> openai.APIConnectionError:
    return openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1/v1/x"))


def status_error(status: int, headers: dict[str, str]) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/x")
    response = httpx.Response(status, headers=headers, request=request)
    return openai.APIStatusError("failed", response=response, body=None)


def run_failing(
    policy: RetryPolicy,
    max_attempts: int,
    error: BaseException,
    budget: RetryBudget | None = None,
    fail_times: int = 100,
) -> Recorder:
    recorder = Recorder()
    state = CallState(
        Strategies(policy), (recorder,), max_attempts, LocalGuard(limiter=None, budget=budget)
    )
    sent = []

    def send(attempt: int) -> str:
        sent.append(attempt)
        if len(sent) <= fail_times:
            raise error
        return "ok"

    try:
        run_sync(state, send, sleep=recorder.sleeps.append)
    except type(error):
        pass
    return recorder


def test_the_last_attempt_and_a_deadline_stop_are_not_charged_to_the_budget() -> None:
    budget = RetryBudget(0.1, reserve_per_second=0.5)  # 5 retries in reserve, no more
    for _ in range(50):  # every call gives up by attempts, none retries
        recorder = run_failing(FAST, 1, connection_error(), budget)
        assert recorder.summary is not None
        assert recorder.summary.outcome is Outcome.EXHAUSTED
    with_deadline = replace(FAST, timeout=0.5)
    for _ in range(50):  # the server's 5 s would cross the deadline: given up, not retried
        recorder = run_failing(with_deadline, 5, status_error(503, {"retry-after": "5"}), budget)
        assert recorder.summary is not None
        assert recorder.summary.outcome is Outcome.DEADLINE
    assert budget.try_retry(0.0)  # nothing was withdrawn by retries that never happened


def test_exhausted_is_not_relabelled_budget_exhausted() -> None:
    empty = RetryBudget(0.0, reserve_per_second=0.0)
    exhausted = run_failing(FAST, 1, connection_error(), empty)
    refused = run_failing(FAST, 3, connection_error(), empty)
    assert exhausted.summary is not None and refused.summary is not None
    assert exhausted.summary.outcome is Outcome.EXHAUSTED
    assert (refused.summary.outcome, refused.summary.attempts) == (Outcome.BUDGET_EXHAUSTED, 1)


def test_failed_calls_that_may_not_retry_leave_the_next_call_its_retry(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """120 failed ``max_retries=0`` calls used to withdraw 120 retries that were never sent, and
    the next call's first retry was refused."""
    instrument(policy=replace(FAST, budget=0.1))
    no_retries = sync_client(server, max_retries=0)
    for _ in range(120):
        server.script(Fault.server_error(500))
        with pytest.raises(openai.InternalServerError):
            no_retries.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    exporter.clear()

    server.script(Fault.server_error(500))
    client = sync_client(server)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).id

    call = one_call(exporter.get_finished_spans())
    assert (call.attr("openai_retry.attempts"), call.attr("openai_retry.outcome")) == (2, "success")
    assert server.request_count == 122


@pytest.mark.parametrize("hint", ["86400", "1e300", "inf"])
def test_a_hint_the_call_will_not_wait_for_holds_back_no_one(
    hint: str, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """A 429 the server says not to retry (``x-should-retry: false``) with a day-long hint: the
    call fails at once, and the endpoint's next callers are not made to wait for the hint."""
    instrument(policy=replace(FAST, adaptive=True, max_retry_after=30))
    client = sync_client(server)
    server.script(Fault.status(429, headers={"retry-after": hint}, should_retry=False))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    results: list[str] = []

    def healthy_call() -> None:
        done = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        results.append(done.id)

    threads = [threading.Thread(target=healthy_call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(results) == 4
    first, *healthy = calls(exporter.get_finished_spans())
    assert first.attr("openai_retry.outcome") == "non_retryable"
    for call in healthy:
        assert call.attr("openai_retry.outcome") == "success"
        (attempt,) = call.attempts
        held = attrs(attempt).get("openai_retry.throttle", 0.0)
        # Pacing may space the callers out (the endpoint did answer 429), by a fraction of a
        # second at its starting rate; the refused hint would have held them for all of it.
        assert isinstance(held, float) and held < 1.0


@pytest.mark.parametrize(
    "error",
    [status_error(429, {"retry-after": "1e11"}), connection_error()],
    ids=["server-hint", "backoff"],
)
def test_no_sleep_is_longer_than_the_clock_can_take(error: BaseException) -> None:
    """A policy may accept waits past ``time.sleep``'s limit (~9.2e9 s): the sleep is capped,
    never an ``OverflowError`` raised into the caller's code."""
    policy = RetryPolicy(initial_wait=1e12, max_wait=1e12, max_retry_after=1e12)
    recorder = run_failing(policy, 2, error)
    assert len(recorder.sleeps) == 2  # reported to observers, and taken
    assert all(0 < s <= threading.TIMEOUT_MAX for s in recorder.sleeps)


@pytest.mark.parametrize(
    ("make_call", "name"),
    [
        (lambda c: c.files.retrieve("file-abc123"), "GET /files/{file_id}"),
        (lambda c: c.files.content("file-abc123"), "GET /files/{file_id}/content"),
        (lambda c: c.files.list(purpose="batch"), "GET /files"),
        (lambda c: c.models.retrieve("ft:gpt-4o-mini:acme::9x"), "GET /models/{model}"),
        (lambda c: c.batches.cancel("batch_6721"), "POST /batches/{batch_id}/cancel"),
        (
            lambda c: c.vector_stores.files.retrieve("file-1", vector_store_id="vs_2"),
            "GET /vector_stores/{vector_store_id}/files/{file_id}",
        ),
    ],
)
def test_span_names_carry_the_route_not_ids_or_queries(
    make_call: Any,
    name: str,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
) -> None:
    instrument(policy=FAST)
    with contextlib.suppress(openai.APIStatusError):  # the name is what is tested
        make_call(sync_client(server))
    assert one_call(exporter.get_finished_spans()).span.name == name


@pytest.mark.parametrize(
    ("make_client", "attempts"),
    [
        (sync_client, 5),
        (lambda url: sync_client(url, max_retries=2), 3),
        (lambda url: sync_client(url, max_retries=2).copy(), 3),
        (lambda url: sync_client(url).with_options(max_retries=2), 3),
        (lambda url: sync_client(url).with_options(timeout=9), 5),
        (lambda url: sync_client(url, max_retries=1), 2),
        (
            lambda url: openai.AzureOpenAI(
                api_key=API_KEY,
                azure_endpoint=url.removesuffix("/v1"),
                api_version="2024-10-21",
                max_retries=2,
            ),
            3,
        ),
        (
            lambda url: openai.AzureOpenAI(
                api_key=API_KEY, azure_endpoint=url.removesuffix("/v1"), api_version="2024-10-21"
            ),
            5,
        ),
    ],
    ids=[
        "default",
        "explicit-2",
        "copy-of-explicit",
        "with-options-2",
        "with-options-other",
        "explicit-1",
        "azure-explicit-2",
        "azure-default",
    ],
)
def test_a_retry_count_the_caller_chose_wins_two_included(
    make_client: Any, attempts: int, server: FakeOpenAIServer, instrument: Instrument
) -> None:
    """Frameworks pass the SDK's default, 2, on purpose; only a client built without
    ``max_retries`` gets our policy (5 attempts)."""
    instrument(policy=FAST)
    client = make_client(server.base_url)
    server.script(*[Fault.server_error(503)] * 6)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert server.request_count == attempts


def test_no_caller_waits_for_its_slot_longer_than_the_cap_in_all() -> None:
    """A slot beyond the booking horizon is asked for again nearer its turn, and asked again it
    may be further away still (the rate was lowered meanwhile; here no time passes during the
    sleeps, so each answer is the first again). In all, a caller waits no longer than the
    policy's ``max_retry_after`` for its slot; then its attempt goes, and the server decides."""
    policy = replace(FAST, max_retry_after=10.0)
    limiter = AdaptiveLimiter(max_gate=policy.max_retry_after)
    limiter.on_throttled(time.monotonic(), 9.5, None)  # a gate 9.5 s away: ask again in 8.5
    state = CallState(Strategies(policy), (), 1, LocalGuard(limiter=limiter, budget=None))
    sleeps: list[float] = []
    assert run_sync(state, lambda attempt: "ok", sleep=sleeps.append) == "ok"
    assert sleeps and sum(sleeps) <= policy.max_retry_after, sleeps
