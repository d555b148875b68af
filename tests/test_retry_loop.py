"""The retrying call end to end, sync and async: the real SDK, real HTTP to the fake server, real
spans; what is retried, what stops it, what the caller gets, and what is left behind."""

from __future__ import annotations

import asyncio
import gc
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import replace

import openai
import pytest
from openai._base_client import AsyncAPIClient, SyncAPIClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_openai_retry import RetryPolicy
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import (
    API_KEY,
    FAST,
    MESSAGES,
    Client,
    Instrument,
    Sdk,
    async_client,
    attrs,
    one_call,
    sync_client,
)


def chat(client: Client) -> Callable[[], object]:
    """A plain chat call of ``client``, for a test that only needs it to fail or succeed."""
    return lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


async def test_429_twice_then_success_honours_retry_after_ms(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument()
    server.script(Fault.rate_limit(retry_after_ms=50), Fault.rate_limit(retry_after_ms=50))
    client = sdk.client(server)
    started = time.monotonic()
    completion = await sdk(
        lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    )
    wall = time.monotonic() - started

    assert completion.choices[0].message.content
    call = one_call(exporter.get_finished_spans())
    assert call.span.name == "chat gpt-4o-mini"
    assert call.attr("openai_retry.attempts") == 3
    assert call.attr("openai_retry.outcome") == "success"
    assert call.attr("gen_ai.operation.name") == "chat"
    assert call.attr("gen_ai.provider.name") == "openai"
    assert call.attr("gen_ai.request.model") == "gpt-4o-mini"
    assert call.attr("gen_ai.response.model") == "gpt-4o-mini"
    assert call.attr("gen_ai.response.id") == completion.id
    assert completion.usage is not None
    assert call.attr("gen_ai.usage.input_tokens") == completion.usage.prompt_tokens
    assert call.attr("gen_ai.usage.output_tokens") == completion.usage.completion_tokens
    assert call.attr("gen_ai.response.finish_reasons") == ("stop",)
    assert call.attr("server.address") == "127.0.0.1"
    assert call.attr("server.port") == server.port
    assert call.span.status.status_code is StatusCode.UNSET

    sleeps = []
    for number, attempt in enumerate(call.attempts[:2], start=1):
        a = attrs(attempt)
        assert attempt.status.status_code is StatusCode.ERROR
        assert a["error.type"] == "openai.RateLimitError"
        assert a["http.response.status_code"] == 429
        assert a["openai_retry.attempt"] == number
        assert a["openai_retry.retry_after"] == pytest.approx(0.05)
        sleep = a["openai_retry.sleep"]
        assert isinstance(sleep, float)
        assert 0.050 <= sleep <= 0.055
        sleeps.append(sleep)
        assert attempt.events == ()  # exception events are deprecated (recording-errors.md)
        assert attempt.status.description == (
            "openai.RateLimitError: HTTP 429, type requests, code rate_limit_exceeded"
        )
    last = attrs(call.attempts[2])
    assert last["http.response.status_code"] == 200
    assert last["http.request.resend_count"] == 2
    assert "openai_retry.sleep" not in last and "error.type" not in last
    assert call.attr("openai_retry.total_sleep") == pytest.approx(sum(sleeps))

    # The sleep is the gap between attempt spans, not inside them.
    for before, after in zip(call.attempts, call.attempts[1:], strict=False):
        assert before.end_time is not None and after.start_time is not None
        gap = (after.start_time - before.end_time) / 1e9
        assert gap >= attrs(before)["openai_retry.sleep"]  # type: ignore[operator]
    assert wall >= sum(sleeps) >= 0.1

    assert [r.retry_count for r in server.requests] == [0, 1, 2]
    assert len(server.requests) == len(call.attempts)


async def test_400_is_not_retried(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument()
    server.script(Fault.status(400))
    with pytest.raises(openai.BadRequestError):
        await sdk(chat(sdk.client(server)))
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.outcome") == "non_retryable"
    assert call.attr("openai_retry.attempts") == 1
    assert call.attr("error.type") == "openai.BadRequestError"
    assert call.span.status.status_code is StatusCode.ERROR
    assert call.span.events == ()
    description = call.span.status.description
    assert description is not None and description.startswith("openai.BadRequestError: HTTP 400")
    assert attrs(call.attempts[0])["http.response.status_code"] == 400
    assert "openai_retry.sleep" not in attrs(call.attempts[0])
    assert server.request_count == 1


@pytest.mark.parametrize("status", [401, 403, 404, 422])
async def test_other_4xx_are_not_retried(
    status: int,
    sdk: Sdk,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
) -> None:
    instrument()
    server.script(Fault.status(status))
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk(chat(sdk.client(server)))
    assert raised.value.status_code == status
    assert server.request_count == 1
    assert one_call(exporter.get_finished_spans()).attr("openai_retry.outcome") == "non_retryable"


async def test_exhausted_attempts_raise_the_sdk_error_not_retry_error(
    sdk: Sdk,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_OPENAI_RETRY_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("OTEL_OPENAI_RETRY_INITIAL_WAIT", "0.01")
    instrument()  # reads the policy from the environment now
    server.script(*[Fault.server_error(500)] * 5)
    with pytest.raises(openai.InternalServerError):
        await sdk(chat(sdk.client(server)))
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.attempts") == 3
    assert call.attr("openai_retry.outcome") == "exhausted"
    assert call.attr("error.type") == "openai.InternalServerError"
    assert server.request_count == 3
    assert "openai_retry.sleep" in attrs(call.attempts[0])
    assert "openai_retry.sleep" in attrs(call.attempts[1])
    assert "openai_retry.sleep" not in attrs(call.attempts[2]), "no sleep follows the last attempt"
    for attempt in call.attempts:
        assert attrs(attempt)["error.type"] == "openai.InternalServerError"
        assert attrs(attempt)["http.response.status_code"] == 500


async def test_explicit_max_retries_zero_means_one_attempt(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.rate_limit(retry_after_ms=10), Fault.rate_limit(retry_after_ms=10))
    with pytest.raises(openai.RateLimitError):
        await sdk(chat(sdk.client(server, max_retries=0)))
    assert server.request_count == 1
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.outcome") == "exhausted"
    assert call.attr("openai_retry.attempts") == 1


async def test_explicit_max_retries_per_request_counts_retries(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(*[Fault.server_error(503)] * 4)
    with pytest.raises(openai.InternalServerError):
        await sdk(chat(sdk.client(server).with_options(max_retries=1)))
    assert server.request_count == 2
    assert one_call(exporter.get_finished_spans()).attr("openai_retry.attempts") == 2


async def test_retry_after_beyond_the_limit_gives_up_without_sleeping(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument()
    server.script(Fault.rate_limit(retry_after=600))
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        await sdk(chat(sdk.client(server)))
    assert time.monotonic() - started < 600 / 10, "gave up instead of waiting the 600 s asked"
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.outcome") == "retry_after_too_long"
    assert call.attr("openai_retry.total_sleep") == 0.0
    assert attrs(call.attempts[0])["openai_retry.retry_after"] == 600.0
    assert server.request_count == 1


async def test_sleep_that_would_cross_the_deadline_is_not_taken(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=RetryPolicy(timeout=0.5))
    server.script(Fault.rate_limit(retry_after=2))
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        await sdk(chat(sdk.client(server)))
    assert time.monotonic() - started < 2, "fails at once, without sleeping the 2 s asked"
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.outcome") == "deadline"
    assert call.attr("openai_retry.attempts") == 1
    assert server.request_count == 1


async def test_deadline_bounds_an_attempt_that_hangs(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=RetryPolicy(timeout=0.4, initial_wait=0.01, max_wait=0.01))
    server.script(Fault.delay(3.0))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await sdk(chat(sdk.client(server)))
    assert time.monotonic() - started < 3.0, "cut at the deadline, not the server's 3 s"
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.outcome") == "deadline"
    assert attrs(call.attempts[0])["error.type"] == "openai.APITimeoutError"


async def test_cancelled_during_sleep_stops_at_once_and_ends_spans(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument()
    server.script(Fault.rate_limit(retry_after=5))
    client = async_client(server)
    task = asyncio.create_task(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    )
    await asyncio.to_thread(server.wait_for_requests, 1)
    await asyncio.sleep(0.1)  # the first attempt has failed; the 5 s sleep is under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() < server.requests[0].received_at + 5, "not after the 5 s sleep"
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.outcome") == "cancelled"
    assert call.attr("openai_retry.attempts") == 1
    assert call.span.status.status_code is StatusCode.ERROR
    assert server.request_count == 1
    # The 5 s sleep was chosen (on the attempt) but not all taken (on the call).
    chosen = attrs(call.attempts[0])["openai_retry.sleep"]
    assert isinstance(chosen, float) and chosen >= 5.0
    total = call.attr("openai_retry.total_sleep")
    assert isinstance(total, float) and 0 < total < chosen


async def test_cancelled_during_an_attempt_ends_both_spans(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument()
    server.script(Fault.delay(5))
    task = asyncio.create_task(
        async_client(server).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    )
    await asyncio.to_thread(server.wait_for_requests, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.outcome") == "cancelled"
    assert attrs(call.attempts[0])["error.type"] == "asyncio.CancelledError"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.server_error(500), "openai.InternalServerError"),
        (Fault.status(503), "openai.InternalServerError"),
        (Fault.status(408), "openai.APIStatusError"),
        (Fault.status(409), "openai.ConflictError"),
        (Fault.rate_limit(), "openai.RateLimitError"),
        (Fault.rate_limit(retry_after=0.02), "openai.RateLimitError"),
        (Fault.rate_limit(retry_after_date_in=1), "openai.RateLimitError"),
        (Fault.drop(), "openai.APIConnectionError"),
        (Fault.status(400, should_retry=True), "openai.BadRequestError"),
    ],
)
async def test_retryable_failures_are_retried(
    fault: Fault,
    error: str,
    sdk: Sdk,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
) -> None:
    instrument(policy=FAST)
    server.script(fault)
    await sdk(chat(sdk.client(server)))
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.attempts") == 2
    assert call.attr("openai_retry.outcome") == "success"
    assert attrs(call.attempts[0])["error.type"] == error
    assert server.request_count == 2


async def test_server_saying_do_not_retry_wins(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.status(503, should_retry=False))
    with pytest.raises(openai.InternalServerError):
        await sdk(chat(sdk.client(server)))
    assert server.request_count == 1
    assert one_call(exporter.get_finished_spans()).attr("openai_retry.outcome") == "non_retryable"


async def test_client_timeout_is_retried(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.delay(2.0))
    await sdk(chat(sdk.client(server, timeout=0.2)))
    call = one_call(exporter.get_finished_spans())
    assert attrs(call.attempts[0])["error.type"] == "openai.APITimeoutError"
    assert "http.response.status_code" not in attrs(call.attempts[0])
    assert call.attr("openai_retry.attempts") == 2


async def test_uninstrument_restores_the_sdk_exactly(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    originals = {
        (cls, name): cls.__dict__[name]
        for cls in (AsyncAPIClient, SyncAPIClient)
        for name in ("request", "_process_response")
    }
    instrumentor = instrument()
    instrument()  # a second instrument() changes nothing
    assert AsyncAPIClient.__dict__["request"] is not originals[(AsyncAPIClient, "request")]
    server.script(Fault.server_error(500))
    await sdk(chat(sdk.client(server)))
    assert len(exporter.get_finished_spans()) == 3, (
        "one logical span, two attempts: no double patch"
    )

    instrumentor.uninstrument()
    for (cls, name), original in originals.items():
        assert cls.__dict__[name] is original
    exporter.clear()
    server.reset()
    server.script(Fault.rate_limit(retry_after_ms=10))
    await sdk(chat(sdk.client(server)))
    assert exporter.get_finished_spans() == ()
    # The SDK's own loop is back: its retry count header, its retry.
    assert [r.retry_count for r in server.requests] == [0, 1]


async def test_with_raw_response_gets_the_same_spans(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.server_error(502))
    client = sdk.client(server)
    raw = await sdk(
        lambda: client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0.2, max_tokens=50, stop=["END"]
        )
    )
    completion = raw.parse()
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.attempts") == 2
    assert call.attr("gen_ai.response.id") == completion.id
    assert call.attr("gen_ai.usage.input_tokens") == completion.usage.prompt_tokens  # type: ignore[union-attr]
    assert call.attr("gen_ai.request.temperature") == 0.2
    assert call.attr("gen_ai.request.max_tokens") == 50
    assert call.attr("gen_ai.request.stop_sequences") == ("END",)
    assert attrs(call.attempts[1])["http.response.status_code"] == raw.status_code


async def test_every_genai_endpoint_is_named_by_its_operation(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = sdk.client(server)
    await sdk(
        lambda: client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", seed=7)
    )
    embeddings = await sdk(
        lambda: client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    )
    response = await sdk(lambda: client.responses.create(model="gpt-4.1-mini", input="Say hi"))
    list_models: Callable[[], object] = client.models.list  # a page, or an awaitable one
    await sdk(list_models)
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans if not s.name.startswith("attempt")]
    assert names == [
        "text_completion gpt-3.5-turbo-instruct",
        "embeddings text-embedding-3-small",
        "chat gpt-4.1-mini",
        "GET /models",
    ]
    by_name = {s.name: attrs(s) for s in spans}
    assert by_name["text_completion gpt-3.5-turbo-instruct"]["gen_ai.request.seed"] == 7
    emb = by_name["embeddings text-embedding-3-small"]
    assert emb["gen_ai.operation.name"] == "embeddings"
    assert emb["gen_ai.usage.input_tokens"] == embeddings.usage.prompt_tokens
    resp = by_name["chat gpt-4.1-mini"]
    assert resp["gen_ai.response.id"] == response.id
    assert response.usage is not None
    assert resp["gen_ai.usage.output_tokens"] == response.usage.output_tokens
    models = by_name["GET /models"]
    assert "gen_ai.operation.name" not in models
    assert models["openai_retry.outcome"] == "success"


async def test_no_secret_reaches_any_span(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = sdk.client(server, default_headers={"x-custom-secret": "hush-9d8c7b"})
    server.script(Fault.rate_limit(retry_after_ms=5), Fault.drop(), Fault.server_error(500))
    await sdk(chat(client))
    for fault in (Fault.status(401), Fault.status(400)):
        server.script(fault)
        with pytest.raises(openai.APIStatusError):
            await sdk(chat(client))
    assert any(r.headers.get("authorization") == f"Bearer {API_KEY}" for r in server.requests)
    exported = "".join(span.to_json() for span in exporter.get_finished_spans())
    assert len(exporter.get_finished_spans()) == 9  # 1+4, 1+1, 1+1
    for secret in (API_KEY, API_KEY[-8:], "Bearer", "hush-9d8c7b"):
        assert secret not in exported


async def test_attempt_spans_equal_requests_under_concurrency(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """40 calls at once: tasks on one loop, or threads sharing one sync client. The faults go
    to whichever request comes next, so attempts enough for all of them: threads start slowly
    on a busy machine, and the first few can take every fault between them."""
    instrument(policy=replace(FAST, max_attempts=31))
    faults = [Fault.rate_limit(retry_after_ms=5), Fault.server_error(500), Fault.drop()] * 10
    server.script(*faults)
    results = await sdk.gather(*[chat(sdk.client(server))] * 40)
    assert len(results) == 40
    spans = exporter.get_finished_spans()
    attempts = [s for s in spans if s.name.startswith("attempt")]
    assert len(attempts) == server.request_count == 70


def test_a_stop_iteration_from_the_attempt_reaches_the_caller_as_itself() -> None:
    """Drivers step tenacity directly (no generator), so Python does not turn a StopIteration
    raised by an attempt (an exhausted mock side effect, say) into a RuntimeError."""
    from otel_openai_retry._call_state import CallState
    from otel_openai_retry._loop import run_sync
    from otel_openai_retry._strategies import Strategies

    def send(attempt: int) -> object:
        raise StopIteration

    policy = RetryPolicy()
    state = CallState(Strategies(policy), (), policy.max_attempts)
    with pytest.raises(StopIteration):
        run_sync(state, send)


async def garbage_left_by(calls: Callable[[], Awaitable[None]]) -> list[str]:
    """Types of ours, tenacity's and OpenTelemetry's that only the cyclic garbage collector
    could free after ``calls`` (other garbage, e.g. earlier tests' clients, is not ours)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await calls()
        gc.collect()
        found = {type(thing) for thing in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    packages = ("otel_openai_retry", "tenacity", "opentelemetry")
    return sorted(
        f"{t.__module__}.{t.__qualname__}" for t in found if t.__module__.startswith(packages)
    )


async def test_no_call_leaves_anything_for_the_garbage_collector(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """Each call's state, tenacity object and spans are freed as it returns or raises, not kept
    (spans included) until a collection, as the bare SDK's are: no reference cycle per call,
    sync or async, succeeding at once, after a retry, or failing after its last attempt."""
    instrument(policy=RetryPolicy(initial_wait=0.01, max_wait=0.05, max_attempts=2))
    aclient, sclient = async_client(server), sync_client(server)

    async def calls() -> None:
        for _ in range(3):
            await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            sclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            server.script(Fault.rate_limit(retry_after_ms=1))
            await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            server.script(Fault.rate_limit(retry_after_ms=1))
            sclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            server.script(*[Fault.status(503)] * 4)  # two attempts each
            with pytest.raises(openai.InternalServerError):
                await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            with pytest.raises(openai.InternalServerError):
                sclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    await calls()  # connections and caches warm
    exporter.clear()

    assert await garbage_left_by(calls) == []
    # 6 calls of each kind, each a logical span and an attempt span per request
    assert len(exporter.get_finished_spans()) == 6 * 2 + 6 * 3 + 6 * 3


async def test_the_exception_raised_after_the_last_attempt_carries_no_retry_machinery(
    sdk: Sdk, server: FakeOpenAIServer, instrument: Instrument
) -> None:
    """When the attempts run out, the caller gets the last attempt's own exception; its
    traceback goes through our driver into the SDK, with no tenacity frame and no ``RetryError``
    chained to it."""
    instrument(policy=RetryPolicy(initial_wait=0.01, max_wait=0.05, max_attempts=2))
    server.script(Fault.status(503), Fault.status(503))

    with pytest.raises(openai.InternalServerError) as raised:
        await sdk(chat(sdk.client(server)))

    files = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(raised.value.__traceback__)]
    assert any(name.endswith("otel_openai_retry/_loop.py") for name in files)
    assert any("/openai/" in name for name in files)
    assert not any("/tenacity/" in name for name in files)
    assert raised.value.__cause__ is None
    assert server.request_count == 2
