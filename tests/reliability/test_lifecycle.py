"""Lifecycle: instrument and uninstrument at awkward moments, every kind of client, cancellation
mid-attempt and mid-sleep, a deadline hit mid-attempt.

Every test also counts spans started and ended (:class:`SpanLedger`): whatever happens, no span
is left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial

import openai
import pytest
from openai._base_client import AsyncAPIClient, SyncAPIClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from ..helpers import (
    API_KEY,
    FAST,
    Instrument,
    Sdk,
    async_client,
    attrs,
    calls,
    one_call,
    run_python,
    sync_client,
)
from .azure import DEPLOYMENT, azure_clients
from .chaos import SpanLedger

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "lifecycle"}
]
REPLY = "Echo: lifecycle"
PATCHED = [(cls, name) for cls in (AsyncAPIClient, SyncAPIClient) for name in ("request",)]


@pytest.fixture
def ledger(tracer_provider: TracerProvider) -> Iterator[SpanLedger]:
    ledger = SpanLedger()
    tracer_provider.add_span_processor(ledger)
    yield ledger
    assert ledger.started == ledger.ended, "every span that started has ended"


# -- instrument / uninstrument ----------------------------------------------------------------


async def test_instrumenting_twice_changes_nothing(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    ledger: SpanLedger,
) -> None:
    instrument(policy=FAST)
    patched = {key: key[0].__dict__[key[1]] for key in PATCHED}
    instrument(policy=RetryPolicy(max_attempts=1))  # ignored: already instrumented
    assert {key: key[0].__dict__[key[1]] for key in PATCHED} == patched
    server.script(Fault.server_error(500))
    reply = await async_client(server).chat.completions.create(model="m", messages=MESSAGES)
    server.script(Fault.server_error(500))
    sync_reply = sync_client(server).chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == sync_reply.choices[0].message.content == REPLY
    found = calls(exporter.get_finished_spans())
    assert [len(c.attempts) for c in found] == [2, 2], "one logical span per call, one loop"
    assert server.request_count == 4


def test_uninstrumenting_twice_restores_the_sdk_once(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    originals = {key: key[0].__dict__[key[1]] for key in PATCHED}
    instrumentor = instrument(policy=FAST)
    instrumentor.uninstrument()
    instrumentor.uninstrument()  # a warning from BaseInstrumentor, nothing else
    assert {key: key[0].__dict__[key[1]] for key in PATCHED} == originals
    server.script(Fault.server_error(500))
    reply = sync_client(server).chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == REPLY
    assert exporter.get_finished_spans() == ()
    assert [r.retry_count for r in server.requests] == [0, 1], "the SDK's own loop is back"


async def test_uninstrumenting_while_calls_are_in_flight(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    ledger: SpanLedger,
) -> None:
    """Calls already inside the retry loop finish in it (mid-attempt, mid-sleep, mid-stream);
    calls made afterwards see the SDK as it was; no span is left open."""
    instrumentor = instrument(policy=FAST)
    client = async_client(server)
    # Ten calls sleeping 300 ms after a 429, ten in a 300 ms attempt, then a stream.
    server.script(*[Fault.rate_limit(retry_after_ms=300)] * 10, *[Fault.delay(0.3)] * 10)
    tasks = [
        asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
        for _ in range(20)
    ]
    assert await asyncio.to_thread(server.wait_for_requests, 20)
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    first = await stream.__anext__()
    await asyncio.sleep(0.1)  # the 429s have arrived; their sleeps have begun

    instrumentor.uninstrument()

    replies = await asyncio.gather(*tasks)
    rest = [chunk async for chunk in stream]
    assert [r.choices[0].message.content for r in replies] == [REPLY] * 20
    assert first.id == rest[0].id
    assert server.request_count == 20 + 10 + 1, "the sleeping calls made their second attempt"

    found = calls(exporter.get_finished_spans())
    assert len(found) == 21
    assert sorted(len(c.attempts) for c in found) == [1] * 11 + [2] * 10
    assert all(c.attr("openai_retry.outcome") == "success" for c in found)

    # After uninstrumenting: the SDK's own loop, no spans.
    exporter.clear()
    server.reset()
    server.script(Fault.server_error(500))
    reply = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == REPLY
    assert exporter.get_finished_spans() == ()
    assert [r.retry_count for r in server.requests] == [0, 1]


async def test_clients_created_before_instrumenting(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    ledger: SpanLedger,
) -> None:
    """Clients, and their cached ``with_raw_response`` / ``with_streaming_response`` wrappers,
    made before ``instrument()`` go through the retry loop all the same."""
    aclient, client = async_client(server), sync_client(server)
    araw, raw = (
        aclient.chat.completions.with_raw_response,
        client.chat.completions.with_raw_response,
    )
    astreaming = aclient.chat.completions.with_streaming_response
    instrument(policy=FAST)

    server.script(Fault.server_error(503))
    assert (await aclient.chat.completions.create(model="m", messages=MESSAGES)).id
    server.script(Fault.server_error(503))
    assert (await araw.create(model="m", messages=MESSAGES)).parse().id
    server.script(Fault.server_error(503))
    async with astreaming.create(model="m", messages=MESSAGES) as response:
        assert (await response.parse()).id
    server.script(Fault.server_error(503))
    assert client.chat.completions.create(model="m", messages=MESSAGES).id
    server.script(Fault.server_error(503))
    assert raw.create(model="m", messages=MESSAGES).parse().id
    found = calls(exporter.get_finished_spans())
    assert [len(c.attempts) for c in found] == [2] * 5
    assert server.request_count == 10


_DROPPED_CLIENT = """
import asyncio, functools, gc, sys, weakref
import openai
from opentelemetry.sdk.trace import TracerProvider
from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry.testing import Fault, FakeOpenAIServer

flavour = sys.argv[1]
server = FakeOpenAIServer()
server.start()
messages = [{"role": "user", "content": "hi"}]


def new_client(own_wrapper=False):
    client = (openai.AsyncOpenAI if flavour == "async" else openai.OpenAI)(
        base_url=server.base_url, api_key="sk-test", max_retries=1
    )
    if own_wrapper:  # logfire.instrument_openai(client)'s shape
        original = client.request

        @functools.wraps(original)
        def request(*args, **kwargs):
            return original(*args, **kwargs)

        client.request = request
    return [client]


async def used_then_dropped_is_freed(holder, calls=1):
    client = holder.pop()
    for _ in range(calls):
        server.script(Fault.server_error(500))
        reply = client.chat.completions.create(model="m", messages=messages)
        if flavour == "async":
            await reply
    freed = weakref.ref(client)
    del client, reply
    gc.collect()
    return freed() is None


async def main():
    early = new_client(own_wrapper=True)  # its wrapper holds the SDK's method from before us
    bare = await used_then_dropped_is_freed(new_client())
    OpenAIRetryInstrumentor().instrument(
        tracer_provider=TracerProvider(),
        policy=RetryPolicy(initial_wait=0.001, max_wait=0.002),
    )
    ours = await used_then_dropped_is_freed(new_client())
    reached = await used_then_dropped_is_freed(early, calls=2)  # the 2nd call reaches ours
    print(bare, ours, reached, server.request_count)


asyncio.run(main())
server.stop()
"""


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_client_dropped_after_its_calls_is_freed_as_without_us(flavour: str) -> None:
    """Applications that build a client per request and never close it must not keep them:
    nothing of a call (its client, its body) may outlive it in the context snapshots that the
    SDK's own timers keep (the 600 s timeout timer stays in the event loop, cancelled). In a
    process of its own: a test runner's fixtures and logs keep references of their own."""
    done = run_python("-c", _DROPPED_CLIENT, flavour)
    assert done.stdout.split() == ["True", "True", "True", "8"], done.stderr


async def test_copy_and_with_options_clients(
    sdk: Sdk,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    ledger: SpanLedger,
) -> None:
    instrument(policy=replace(FAST, max_attempts=4))
    base = sdk.client(server)
    variants: list[tuple[str, openai.OpenAI | openai.AsyncOpenAI, int]] = [
        ("copy()", base.copy(), 4),
        ("with_options(timeout=)", base.with_options(timeout=5.0), 4),
        ("copy(default_headers=)", base.copy(default_headers={"x-team": "a"}), 4),
        ("with_options(max_retries=1)", base.with_options(max_retries=1), 2),
        ("copy(max_retries=0)", base.copy(max_retries=0), 1),
    ]
    for label, client, attempts in variants:
        exporter.clear()
        server.reset()
        server.script(*[Fault.server_error(500)] * 5)
        with pytest.raises(openai.InternalServerError):
            await sdk(partial(client.chat.completions.create, model="m", messages=MESSAGES))
        assert server.request_count == attempts, label
        call = one_call(exporter.get_finished_spans())
        assert call.attr("openai_retry.attempts") == attempts, label
        assert call.attr("openai_retry.outcome") == "exhausted", label


# -- Azure --------------------------------------------------------------------------------------


async def test_azure_clients_are_retried_and_named_azure(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    ledger: SpanLedger,
) -> None:
    instrument(policy=FAST)
    client, aclient = azure_clients(server)
    server.script(Fault.rate_limit(retry_after_ms=5), Fault.server_error(502))
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    server.script(Fault.drop())
    areply = await aclient.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert reply.choices[0].message.content == areply.parse().choices[0].message.content == REPLY
    requests = server.requests
    assert [r.retry_count for r in requests] == [0, 1, 2, 0, 1]
    assert all(r.headers.get("api-key") == API_KEY for r in requests), "Azure's own auth header"
    assert all(r.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions" for r in requests)
    assert {(r.deployment, r.api_version) for r in requests} == {(DEPLOYMENT, "2024-10-21")}
    found = calls(exporter.get_finished_spans())
    assert [len(c.attempts) for c in found] == [3, 2]
    for call in found:
        assert call.attr("gen_ai.provider.name") == "azure.ai.openai"
        assert call.attr("openai_retry.outcome") == "success"
        assert call.attr("server.address") == "127.0.0.1"


# -- cancellation ---------------------------------------------------------------------------------


async def test_cancelling_many_calls_mid_attempt_and_mid_sleep(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    ledger: SpanLedger,
) -> None:
    """Twenty calls hang in an attempt or sleep after a 429 while ten others run; cancelling the
    twenty stops each at once and ends its spans; the ten are unaffected."""
    instrument(policy=FAST)
    client = async_client(server)
    # Legacy completions get the faults (a path queue of their own); chat calls get none.
    hang_s = 30.0
    server.script(
        *[Fault.delay(hang_s)] * 10,
        *[Fault.rate_limit(retry_after=hang_s)] * 10,
        path="/completions",
    )
    doomed = [
        asyncio.create_task(
            client.completions.create(model="gpt-3.5-turbo-instruct", prompt=f"p{i}")
        )
        for i in range(20)
    ]
    assert await asyncio.to_thread(server.wait_for_requests, 20)
    await asyncio.sleep(0.2)  # the 429s have come back: those ten calls are asleep
    healthy = [
        asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
        for _ in range(10)
    ]
    cancelled_at = time.monotonic()
    for task in doomed:
        task.cancel()
    outcomes = await asyncio.gather(*doomed, return_exceptions=True)
    # Not one call waited out its delay or its sleep: cancellation stopped every one of them.
    assert time.monotonic() - cancelled_at < hang_s, "cancellation stops at once"
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    replies = await asyncio.gather(*healthy)
    assert [r.choices[0].message.content for r in replies] == [REPLY] * 10

    found = calls(exporter.get_finished_spans())
    cancelled = [c for c in found if c.span.name.startswith("text_completion")]
    assert len(cancelled) == 20
    kinds = sorted(str(attrs(c.attempts[0]).get("error.type")) for c in cancelled)
    assert kinds == ["asyncio.CancelledError"] * 10 + ["openai.RateLimitError"] * 10
    for call in cancelled:
        assert call.attr("openai_retry.outcome") == "cancelled"
        assert call.attr("openai_retry.attempts") == 1
        assert call.span.status.status_code is StatusCode.ERROR
        assert len(call.attempts) == 1
    assert all(c.attr("openai_retry.outcome") == "success" for c in found if c not in cancelled)


async def test_cancelling_a_call_waiting_for_its_pacing_slot(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    ledger: SpanLedger,
) -> None:
    """A 429 with a hint closes the endpoint's gate; a call waiting at the gate is cancelled:
    it stops at once, and its logical span ends (with no attempt: none was sent)."""
    instrument(policy=FAST)
    client = async_client(server)
    hint_s = 2.0
    server.script(Fault.rate_limit(retry_after=hint_s))
    first = asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
    assert await asyncio.to_thread(server.wait_for_requests, 1)
    await asyncio.sleep(0.1)  # the 429 is back: the gate is closed for 2 s
    waiting = asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
    await asyncio.sleep(0.2)
    waiting.cancel()
    first.cancel()
    results = await asyncio.gather(first, waiting, return_exceptions=True)
    # Both stopped before the gate would have opened (the server's clock is this process's).
    assert time.monotonic() < server.requests[0].received_at + hint_s
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert server.request_count == 1, "the waiting call sent nothing"
    found = calls(exporter.get_finished_spans())
    assert sorted(len(c.attempts) for c in found) == [0, 1]
    assert all(c.attr("openai_retry.outcome") == "cancelled" for c in found)


# -- deadline -------------------------------------------------------------------------------------


def test_deadline_hit_mid_attempt_sync(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    ledger: SpanLedger,
) -> None:
    instrument(policy=RetryPolicy(timeout=0.4, initial_wait=0.01, max_wait=0.01))
    hang_s = 30.0
    server.script(Fault.delay(hang_s))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        sync_client(server).chat.completions.create(model="m", messages=MESSAGES)
    assert time.monotonic() - started < hang_s, "the deadline cut the attempt short"
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.outcome") == "deadline"
    assert attrs(call.attempts[-1])["error.type"] == "openai.APITimeoutError"
    assert server.request_count == len(call.attempts)


async def test_deadline_hit_mid_attempt_of_a_stream(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    ledger: SpanLedger,
) -> None:
    instrument(policy=RetryPolicy(timeout=0.4, initial_wait=0.01, max_wait=0.01))
    hang_s = 30.0
    server.script(Fault.server_error(500), Fault.delay(hang_s))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await async_client(server).chat.completions.create(
            model="m", messages=MESSAGES, stream=True
        )
    assert time.monotonic() - started < hang_s, "the deadline cut the attempt short"
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.outcome") == "deadline"
    # How many timed-out attempts fit before the deadline depends on how fast the machine gets
    # there (a loaded one may start a last attempt with milliseconds left): what holds is that
    # every attempt after the 500 timed out, and that each was a request the server received.
    kinds = [attrs(a)["error.type"] for a in call.attempts]
    assert kinds[0] == "openai.InternalServerError"
    assert kinds[1:] and set(kinds[1:]) == {"openai.APITimeoutError"}, kinds
    assert server.request_count == len(call.attempts)


async def test_a_deadline_bounds_the_wait_for_a_pacing_slot(
    server: FakeOpenAIServer, instrument: Instrument, ledger: SpanLedger
) -> None:
    instrument(policy=RetryPolicy(timeout=1.0, initial_wait=0.01, max_wait=0.05))
    client = async_client(server)
    hint_s = 30.0
    server.script(Fault.rate_limit(retry_after=hint_s))
    with pytest.raises(openai.RateLimitError):  # a 30 s sleep would cross the deadline
        await client.chat.completions.create(model="m", messages=MESSAGES)
    # Within its 1 s deadline: answered, or failed; not waiting for the gate to open.
    with contextlib.suppress(openai.APIError):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert time.monotonic() < server.requests[0].received_at + hint_s


def test_instrumentor_is_a_singleton() -> None:
    assert OpenAIRetryInstrumentor() is OpenAIRetryInstrumentor()
