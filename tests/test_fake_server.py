"""The fake server, driven by the real ``openai`` SDK over real HTTP.

Every client here has ``max_retries=0``: each SDK call is exactly one request, so a test reads the
server's journal one-to-one against what it scripted, whatever else patches the SDK.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.responses import ResponseStreamEvent

from otel_openai_retry.testing import FakeOpenAIServer, FakeServerProcess, Fault, RecordedRequest
from otel_openai_retry.testing._script import parse_script

from .helpers import STREAM_CUT_ERROR

_T = TypeVar("_T")

MODEL = "gpt-4o-mini"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello fake world"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[OpenAI]:
    with OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as sync_client:
        yield sync_client


@pytest.fixture
async def aclient(server: FakeOpenAIServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        api_key="sk-test", base_url=server.base_url, max_retries=0
    ) as async_client:
        yield async_client


def _raw(
    server: FakeOpenAIServer, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    """A request without the SDK, to see the exact status, headers and body."""
    request = urllib.request.Request(f"{server.base_url}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        status, headers, raw = err.code, dict(err.headers), err.read()
        err.close()
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw)


def _drain(items: Iterable[_T], into: list[_T]) -> None:
    """Collect what a stream yields before it fails, for asserting on after the failure."""
    for item in items:
        into.append(item)


async def _adrain(items: AsyncIterable[_T], into: list[_T]) -> None:
    async for item in items:
        into.append(item)


# -- endpoints -------------------------------------------------------------------------------


def test_chat_completion_sync(client: OpenAI, server: FakeOpenAIServer) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=USER)

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert completion.choices[0].message.content == "Echo: hello fake world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 4)
    assert completion.usage.total_tokens == 7
    assert server.request_count == 1


async def test_chat_completion_async_with_n(aclient: AsyncOpenAI) -> None:
    completion = await aclient.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "two parts"}]},
        ],
        n=2,
    )

    assert [c.index for c in completion.choices] == [0, 1]
    assert {c.message.content for c in completion.choices} == {"Echo: two parts"}
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    assert completion.usage.completion_tokens == 2 * 3


async def test_chat_stream_with_usage(aclient: AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(
        model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello fake world"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 4
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 7
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_without_usage_chunk(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))

    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_chat_stream_helper_sync(client: OpenAI) -> None:
    with client.chat.completions.stream(model=MODEL, messages=USER) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()

    assert "".join(deltas) == "Echo: hello fake world"
    assert final.choices[0].message.content == "Echo: hello fake world"


async def test_chat_stream_helper_async(aclient: AsyncOpenAI) -> None:
    async with aclient.chat.completions.stream(
        model=MODEL, messages=USER, stream_options={"include_usage": True}
    ) as stream:
        final = await stream.get_final_completion()

    assert final.choices[0].message.content == "Echo: hello fake world"
    assert final.usage is not None
    assert final.usage.completion_tokens == 4


def test_completions_plain_and_stream(client: OpenAI) -> None:
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say this")

    assert completion.object == "text_completion"
    assert completion.choices[0].text == "Echo: say this"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2

    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="say this",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: say this"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


async def test_embeddings_default_encoding_is_base64_and_parses(
    aclient: AsyncOpenAI, server: FakeOpenAIServer
) -> None:
    default = await aclient.embeddings.create(model="text-embedding-3-small", input=["a", "b c"])
    floats = await aclient.embeddings.create(
        model="text-embedding-3-small", input=["a", "b c"], encoding_format="float"
    )

    assert server.requests[0].body["encoding_format"] == "base64"
    assert [d.index for d in default.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in default.data)
    assert all(isinstance(x, float) for x in default.data[0].embedding)
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert default.data[0].embedding != default.data[1].embedding
    assert default.model == "text-embedding-3-small"
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (3, 3)


def test_embeddings_single_string_and_dimensions(client: OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=3)

    assert len(result.data) == 1
    assert len(result.data[0].embedding) == 3


def test_responses_create(client: OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="hello responses")

    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == MODEL
    assert response.output_text == "Echo: hello responses"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (2, 3)
    assert response.usage.total_tokens == 5
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0


async def test_responses_stream_events(aclient: AsyncOpenAI) -> None:
    stream = await aclient.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "streamed reply"}]}],
        stream=True,
    )
    events = [event async for event in stream]

    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[4:7] == ["response.output_text.delta"] * 3
    assert types[7:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == "Echo: streamed reply"
    assert completed.response.usage is not None
    assert completed.response.usage.output_tokens == 3


def test_responses_stream_helper_sync(client: OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="via helper") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()

    assert "".join(deltas) == "Echo: via helper"
    assert final.output_text == "Echo: via helper"
    assert final.usage is not None


async def test_responses_stream_helper_async(aclient: AsyncOpenAI) -> None:
    async with aclient.responses.stream(
        model=MODEL, input="async helper", instructions="be nice"
    ) as stream:
        final = await stream.get_final_response()

    assert final.output_text == "Echo: async helper"
    assert final.instructions == "be nice"
    assert final.usage is not None
    assert final.usage.input_tokens == 4


def test_with_raw_response(client: OpenAI, server: FakeOpenAIServer) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=USER)

    assert raw.status_code == 200
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-request-id"] == server.requests[0].request_id
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.parse().choices[0].message.content == "Echo: hello fake world"


async def test_models_list_and_retrieve(aclient: AsyncOpenAI, server: FakeOpenAIServer) -> None:
    models = [model async for model in aclient.models.list()]
    one = await aclient.models.retrieve("gpt-4o")

    assert MODEL in {m.id for m in models}
    assert all(m.object == "model" for m in models)
    assert one.id == "gpt-4o"
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/v1/models"),
        ("GET", "/v1/models/gpt-4o"),
    ]


def test_unknown_path_is_an_openai_404(server: FakeOpenAIServer) -> None:
    status, headers, body = _raw(server, "POST", "/nope", b"{}")

    assert status == 404
    assert headers["x-request-id"].startswith("req_")
    assert body == {
        "error": {
            "message": "Invalid URL (POST /v1/nope)",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }
    assert server.requests[0].path == "/v1/nope"


def test_bad_json_and_missing_model_are_400s(server: FakeOpenAIServer) -> None:
    status, _, body = _raw(server, "POST", "/chat/completions", b"{not json")
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"

    status, _, body = _raw(server, "POST", "/embeddings", json.dumps({"input": "x"}).encode())
    assert status == 400
    assert body["error"]["param"] == "model"


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.rate_limit(retry_after_ms=50), {"retry-after-ms": "50"}),
        (Fault.rate_limit(retry_after=2), {"retry-after": "2"}),
        (Fault.rate_limit(retry_after=0.5), {"retry-after": "0.5"}),
        (Fault.rate_limit(retry_after="abc"), {"retry-after": "abc"}),
        (Fault.rate_limit(), {}),
    ],
    ids=["ms", "seconds", "fractional", "hostile", "no-hint"],
)
async def test_rate_limit_headers(
    aclient: AsyncOpenAI, server: FakeOpenAIServer, fault: Fault, expected: dict[str, str]
) -> None:
    server.script(fault)

    with pytest.raises(openai.RateLimitError) as caught:
        await aclient.chat.completions.create(model=MODEL, messages=USER)

    headers = caught.value.response.headers
    for name in ("retry-after", "retry-after-ms"):
        assert headers.get(name) == expected.get(name)
    assert headers["x-request-id"].startswith("req_")
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "requests"


def test_rate_limit_with_http_date(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.script(Fault.rate_limit(retry_after_date_in=30))

    before = time.time()
    with pytest.raises(openai.RateLimitError) as caught:
        client.models.list()
    after = time.time()

    # 30 s after the moment it was sent (within the call), to the second an HTTP date has.
    parsed = email.utils.parsedate_to_datetime(caught.value.response.headers["retry-after"])
    assert int(before + 30) <= parsed.timestamp() <= after + 30


@pytest.mark.parametrize(
    ("code", "exception", "error_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "invalid_request_error"),
        (403, openai.PermissionDeniedError, "invalid_request_error"),
        (404, openai.NotFoundError, "invalid_request_error"),
        (409, openai.ConflictError, "invalid_request_error"),
        (422, openai.UnprocessableEntityError, "invalid_request_error"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
    ],
)
def test_status_faults_raise_the_sdk_exception(
    client: OpenAI,
    server: FakeOpenAIServer,
    code: int,
    exception: type[openai.APIStatusError],
    error_type: str,
) -> None:
    server.script(Fault.status(code))

    with pytest.raises(exception) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="x")

    assert caught.value.status_code == code
    assert caught.value.type == error_type
    assert isinstance(caught.value.body, dict)
    assert set(caught.value.body) == {"message", "type", "param", "code"}


def test_408_and_server_error_constructor(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.script(Fault.status(408), Fault.server_error(502))

    with pytest.raises(openai.APIStatusError) as first:
        client.models.list()
    with pytest.raises(openai.InternalServerError) as second:
        client.models.list()

    assert first.value.status_code == 408
    assert second.value.status_code == 502


def test_should_retry_and_custom_headers(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.script(
        Fault.status(503, should_retry=False),
        Fault.status(400, headers={"X-Custom": "1"}, should_retry=True),
        Fault.status(200, headers={"x-on-success": "yes"}),
    )

    with pytest.raises(openai.InternalServerError) as first:
        client.models.list()
    with pytest.raises(openai.BadRequestError) as second:
        client.models.list()
    ok = client.models.with_raw_response.list()

    assert first.value.response.headers["x-should-retry"] == "false"
    assert second.value.response.headers["x-should-retry"] == "true"
    assert second.value.response.headers["x-custom"] == "1"
    assert ok.headers["x-on-success"] == "yes"


async def test_delay_longer_than_timeout_is_a_client_timeout(
    aclient: AsyncOpenAI, server: FakeOpenAIServer
) -> None:
    server.script(Fault.delay(30.0))

    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await aclient.chat.completions.create(model=MODEL, messages=USER, timeout=0.2)

    assert time.monotonic() - started < 30.0, "the client gave up before the answer came"
    assert server.requests[0].fault == Fault.delay(30.0)


def test_short_delay_then_normal_answer(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.script(Fault.delay(0.15))

    started = time.monotonic()
    completion = client.chat.completions.create(model=MODEL, messages=USER)

    assert time.monotonic() - started >= 0.15
    assert completion.choices[0].message.content == "Echo: hello fake world"


def test_drop_is_a_connection_error_sync(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.script(Fault.drop())

    with pytest.raises(openai.APIConnectionError) as caught:
        client.chat.completions.create(model=MODEL, messages=USER)

    assert not isinstance(caught.value, openai.APITimeoutError)
    assert server.requests[0].request_id is None
    # The next request, on a fresh connection, succeeds.
    assert client.chat.completions.create(model=MODEL, messages=USER).choices


async def test_drop_is_a_connection_error_async(
    aclient: AsyncOpenAI, server: FakeOpenAIServer
) -> None:
    server.script(Fault.drop())

    with pytest.raises(openai.APIConnectionError):
        await aclient.responses.create(model=MODEL, input="x")


async def test_stream_break_after_three_chunks_async(
    aclient: AsyncOpenAI, server: FakeOpenAIServer
) -> None:
    server.script(Fault.stream_break(after_chunks=3))
    received: list[ChatCompletionChunk] = []

    stream = await aclient.chat.completions.create(model=MODEL, messages=USER, stream=True)
    with pytest.raises(STREAM_CUT_ERROR):
        await _adrain(stream, into=received)

    assert len(received) == 3
    assert received[0].choices[0].delta.role == "assistant"


def test_stream_break_after_three_chunks_sync_responses(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    server.script(Fault.stream_break(after_chunks=3))
    received: list[ResponseStreamEvent] = []

    stream = client.responses.create(model=MODEL, input="break me", stream=True)
    with pytest.raises(STREAM_CUT_ERROR):
        _drain(stream, into=received)

    assert [event.type for event in received] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ]


def test_stream_break_past_the_end_still_never_finishes(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    server.script(Fault.stream_break(after_chunks=100))
    received: list[Completion] = []

    stream = client.completions.create(model=MODEL, prompt="a b", stream=True)
    with pytest.raises(STREAM_CUT_ERROR):
        _drain(stream, into=received)

    assert received[-1].choices[0].finish_reason == "stop"


def test_break_on_a_non_streamed_answer_cuts_the_body(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    server.script(Fault.stream_break(after_chunks=0))

    with pytest.raises(openai.APIConnectionError):
        client.embeddings.create(model="text-embedding-3-small", input="x")


def test_faults_leave_aiohttp_silent(
    client: OpenAI, server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Drops and breaks are deliberate: they must not fill a user's test log with tracebacks."""
    server.script(Fault.drop(), Fault.stream_break(2), Fault.stream_break(0), Fault.delay(1))
    with caplog.at_level(logging.DEBUG, logger="aiohttp"):
        with pytest.raises(openai.APIConnectionError):
            client.models.list()
        with pytest.raises(STREAM_CUT_ERROR):
            list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
        with pytest.raises(openai.APIConnectionError):
            client.models.list()
        with pytest.raises(openai.APITimeoutError):
            client.models.list(timeout=0.1)
        assert client.models.list().data
        assert server.wait_for_requests(5)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- recording -------------------------------------------------------------------------------


def test_requests_are_recorded(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.script(Fault.server_error())
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=USER, temperature=0.5)
    client.chat.completions.create(
        model=MODEL,
        messages=USER,
        extra_headers={"x-stainless-retry-count": "2"},
    )

    first, second = server.requests
    assert isinstance(first, RecordedRequest)
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in first.headers)
    assert first.body == {"model": MODEL, "messages": USER, "temperature": 0.5}
    assert first.retry_count == 0
    assert first.fault == Fault.server_error()
    assert second.retry_count == 2
    assert second.fault == Fault.ok()
    assert first.received_at <= second.received_at <= time.monotonic()
    assert "POST /v1/chat/completions" in repr(first)


def test_requests_is_a_copy_and_reset_clears(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.script(Fault.status(400), Fault.status(401))
    with pytest.raises(openai.BadRequestError):
        client.models.list()
    snapshot = server.requests
    snapshot.clear()

    assert server.request_count == 1
    assert server.pending_faults == 1
    server.reset()
    assert (server.request_count, server.pending_faults) == (0, 0)
    assert client.models.list().data  # the unused 401 went with the reset


def test_path_queue_is_consulted_before_the_global_one(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    server.script(Fault.status(400))
    server.script(Fault.status(503), path="/v1/embeddings")
    server.script(Fault.status(404), path="/embeddings")  # the SDK's spelling of the same path

    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError):  # path queue empty: the global one
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert client.embeddings.create(model="text-embedding-3-small", input="x").data

    assert [r.fault.status_code for r in server.requests] == [503, 404, 400, 200]


async def test_path_queue_leaves_other_paths_alone(
    aclient: AsyncOpenAI, server: FakeOpenAIServer
) -> None:
    server.script(Fault.drop(), path="/v1/responses")

    chat = await aclient.chat.completions.create(model=MODEL, messages=USER)
    assert chat.choices
    assert server.pending_faults == 1


async def test_concurrent_requests_each_take_one_fault(
    aclient: AsyncOpenAI, server: FakeOpenAIServer
) -> None:
    server.script(*[Fault.server_error()] * 5)

    results = await asyncio.gather(
        *(aclient.models.list() for _ in range(20)), return_exceptions=True
    )

    assert sum(isinstance(r, openai.InternalServerError) for r in results) == 5
    assert [r.fault.status_code for r in server.requests] == [500] * 5 + [200] * 15


def test_on_request_sees_each_request_as_it_arrives() -> None:
    seen: list[RecordedRequest] = []
    server = FakeOpenAIServer(on_request=seen.append)
    with server, OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as c:
        c.models.list()
    assert seen == server.requests


def test_wait_for_requests(client: OpenAI, server: FakeOpenAIServer) -> None:
    assert server.wait_for_requests(1, timeout=0.05) is False

    thread = threading.Thread(target=client.models.list)
    thread.start()
    try:
        assert server.wait_for_requests(1, timeout=5.0) is True
    finally:
        thread.join()


# -- lifecycle -------------------------------------------------------------------------------


def test_start_and_stop_are_idempotent() -> None:
    server = FakeOpenAIServer()
    with pytest.raises(RuntimeError):
        _ = server.base_url
    server.stop()
    server.start()
    port = server.port
    server.start()
    try:
        assert server.port == port
        assert server.base_url == f"http://127.0.0.1:{port}/v1"
        assert server.host == "127.0.0.1"
        assert server.is_running
    finally:
        server.stop()
        server.stop()
    assert not server.is_running
    assert repr(server) == "<FakeOpenAIServer not running>"


async def test_async_context_manager_serves_the_current_loop() -> None:
    server = FakeOpenAIServer()
    async with server, AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as c:
        completion = await c.chat.completions.create(model=MODEL, messages=USER)
    assert completion.choices[0].message.content == "Echo: hello fake world"
    assert not server.is_running


async def test_sync_client_inside_async_test_does_not_deadlock(server: FakeOpenAIServer) -> None:
    # A sync SDK call blocks this loop; the server must not depend on it.
    with OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as sync_client:
        assert sync_client.models.list().data
    await asyncio.sleep(0)


def test_stop_cancels_a_delayed_answer() -> None:
    server = FakeOpenAIServer()
    server.start()
    server.script(Fault.delay(30))
    errors: list[BaseException] = []

    def call() -> None:
        with OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as c:
            try:
                c.models.list()
            except openai.APIConnectionError as err:
                errors.append(err)

    thread = threading.Thread(target=call)
    thread.start()
    assert server.wait_for_requests(1)
    started = time.monotonic()
    server.stop()
    thread.join(timeout=30)

    assert time.monotonic() - started < 30, "stop() did not wait out the delay"
    assert not thread.is_alive()
    assert len(errors) == 1


def test_restart_after_stop_keeps_the_journal() -> None:
    server = FakeOpenAIServer()
    with server, OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as c:
        c.models.list()
    with server, OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as c:
        c.models.list()
    assert server.request_count == 2


def test_port_in_use_is_reported() -> None:
    with FakeOpenAIServer() as first:
        second = FakeOpenAIServer(port=first.port)
        with pytest.raises(RuntimeError, match="could not listen"):
            second.start()
        assert not second.is_running


# -- Fault values ----------------------------------------------------------------------------


def test_fault_values_are_frozen_hashable_and_readable() -> None:
    fault = Fault.rate_limit(retry_after_ms=50, retry_after=1)

    assert fault == Fault.rate_limit(retry_after_ms=50, retry_after=1)
    assert len({fault, Fault.ok(), Fault.ok()}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        fault.status_code = 500  # type: ignore[misc]
    assert repr(fault) == "Fault(429, retry-after: 1, retry-after-ms: 50)"
    assert repr(Fault.ok()) == "Fault(200)"
    assert repr(Fault.drop()) == "Fault(drop)"
    assert repr(Fault.delay(2)) == "Fault(200, delay 2s)"
    assert repr(Fault.stream_break(3)) == "Fault(200, break after 3)"
    assert repr(Fault.rate_limit(retry_after_date_in=5)) == "Fault(429, retry-after: <date in 5s>)"
    assert repr(Fault.status(503, should_retry=True)) == "Fault(503, x-should-retry: true)"
    assert Fault.server_error().status_code == 500
    assert Fault.status(400).is_error
    assert not Fault.drop().is_error


@pytest.mark.parametrize(
    "make",
    [
        lambda: Fault.status(99),
        lambda: Fault.status(600),
        lambda: Fault.delay(-1),
        lambda: Fault.stream_break(-1),
        lambda: Fault.server_error(429),
        lambda: Fault.rate_limit(retry_after=1, retry_after_date_in=1),
        lambda: Fault(drop_connection=True, break_after=1),
    ],
)
def test_invalid_faults_are_refused_when_written(make: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        make()


def test_script_only_takes_faults(server: FakeOpenAIServer) -> None:
    with pytest.raises(TypeError):
        server.script(429)  # type: ignore[arg-type]


# -- command line ----------------------------------------------------------------------------


def test_parse_script() -> None:
    faults = parse_script(
        "429:retry-after-ms=50, 500,ok,drop,delay=2,400,break=3,"
        "503:should-retry=false:retry-after=1,429:retry-after-date=5"
    )

    assert faults == [
        Fault.rate_limit(retry_after_ms=50),
        Fault.status(500),
        Fault.ok(),
        Fault.drop(),
        Fault.delay(2),
        Fault.status(400),
        Fault.stream_break(3),
        Fault.status(503, headers={"retry-after": "1"}, should_retry=False),
        Fault.rate_limit(retry_after_date_in=5),
    ]
    assert parse_script("") == []


@pytest.mark.parametrize("text", ["nope", "429:retry-after-ms", "429:colour=red", "delay=x", "99"])
def test_parse_script_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad fault"):
        parse_script(text)


def test_cli_help_and_bad_script(capsys: pytest.CaptureFixture[str]) -> None:
    from otel_openai_retry.testing.__main__ import main

    with pytest.raises(SystemExit) as helped:
        main(["--help"])
    assert helped.value.code == 0
    assert "retry-after-ms=N" in capsys.readouterr().out

    with pytest.raises(SystemExit) as refused:
        main(["--script", "418:teapot"])
    assert refused.value.code == 2
    assert "bad fault" in capsys.readouterr().err


def test_cli_serves_until_sigterm(capfd: pytest.CaptureFixture[str]) -> None:
    # FakeServerProcess is the CLI: it reads the "listening on" line, and stops it with SIGTERM.
    with FakeServerProcess(options=["--script", "500,ok"], log_requests=True) as process:
        assert process.base_url.startswith("http://127.0.0.1:")
        with OpenAI(api_key="sk-test", base_url=process.base_url, max_retries=0) as c:
            with pytest.raises(openai.InternalServerError):
                c.models.list()
            assert c.chat.completions.create(model=MODEL, messages=USER).choices
    stderr = capfd.readouterr().err

    assert process.returncode == 0
    assert "GET /v1/models retry=0 -> Fault(500)" in stderr
    assert "POST /v1/chat/completions retry=0 -> Fault(200)" in stderr


# -- the server in a process of its own ------------------------------------------------------


@pytest.fixture(scope="module")
def process() -> Iterator[FakeServerProcess]:
    with FakeServerProcess() as running:
        yield running


@pytest.fixture
def pclient(process: FakeServerProcess) -> Iterator[OpenAI]:
    process.reset()
    with OpenAI(api_key="sk-test", base_url=process.base_url, max_retries=0) as sync_client:
        yield sync_client


def test_a_process_is_scripted_and_journaled_like_the_server(
    process: FakeServerProcess, pclient: OpenAI
) -> None:
    process.script(Fault.rate_limit(retry_after_ms=5), path="/chat/completions")
    process.script(Fault.status(503, headers={"x-a": "b"}, message="down"), Fault.drop())
    assert process.pending_faults == 3
    before = time.monotonic()

    with pytest.raises(openai.InternalServerError, match="down"):
        pclient.models.list()
    with pytest.raises(openai.RateLimitError):
        pclient.chat.completions.create(model=MODEL, messages=USER)
    with pytest.raises(openai.APIConnectionError):
        pclient.chat.completions.create(model=MODEL, messages=USER)
    pclient.chat.completions.create(model=MODEL, messages=USER)
    after = time.monotonic()

    requests = process.requests
    assert [(r.method, r.path, r.fault) for r in requests] == [
        ("GET", "/v1/models", Fault.status(503, headers={"x-a": "b"}, message="down")),
        ("POST", "/v1/chat/completions", Fault.rate_limit(retry_after_ms=5)),
        ("POST", "/v1/chat/completions", Fault.drop()),
        ("POST", "/v1/chat/completions", Fault.ok()),
    ]
    chat = requests[-1]
    assert chat.body == {"model": MODEL, "messages": USER}
    assert json.loads(chat.raw_body) == chat.body
    assert chat.headers["authorization"] == "Bearer sk-test"
    assert chat.retry_count == 0
    assert chat.request_id is not None
    assert requests[2].request_id is None
    # One monotonic clock for every process: the child's readings fall within the caller's.
    assert before <= requests[0].received_at <= requests[-1].received_at <= after
    assert process.request_count == 4
    assert process.pending_faults == 0
    assert process.status_counts() == {"503": 1, "429": 1, "drop": 1, "200": 1}


def test_a_process_journals_uploads_byte_for_byte(
    process: FakeServerProcess, pclient: OpenAI
) -> None:
    data = b"line one\r\n\x00\xff--not-a-boundary\r\n"
    pclient.files.create(file=("data.jsonl", data), purpose="batch")

    (upload,) = process.requests
    assert upload.form["file"].data == data
    assert upload.form["purpose"].text == "batch"


def test_a_process_waits_for_requests_without_holding_them_up(
    process: FakeServerProcess, pclient: OpenAI
) -> None:
    assert process.wait_for_requests(1, timeout=0.05) is False

    thread = threading.Thread(target=pclient.models.list)
    thread.start()
    try:
        assert process.wait_for_requests(1, timeout=5.0) is True
    finally:
        thread.join()


def test_a_process_takes_the_servers_conditions(
    process: FakeServerProcess, pclient: OpenAI
) -> None:
    process.set_latency(0.2)
    started = time.monotonic()
    pclient.models.list()
    assert time.monotonic() - started >= 0.2

    process.set_latency(0)
    process.set_random_rejections(1.0, seed=1, retry_after_ms=7)
    with pytest.raises(openai.RateLimitError) as rejected:
        pclient.models.list()
    assert rejected.value.response.headers["retry-after-ms"] == "7"
    assert rejected.value.type == "requests"
    process.set_random_rejections(1.0, seed=1, limit="tokens")  # a token quota shared with others
    with pytest.raises(openai.RateLimitError) as rejected:
        pclient.models.list()
    assert rejected.value.type == "tokens"

    process.set_random_rejections(None)
    process.set_rate_limit(0.001, burst=1)
    pclient.models.list()
    with pytest.raises(openai.RateLimitError) as limited:
        pclient.models.list()
    assert limited.value.response.headers["x-ratelimit-limit-requests"] == "1"

    process.set_rate_limit(None)
    process.start_outage(30, status=502)
    with pytest.raises(openai.InternalServerError):
        pclient.models.list()

    process.reset()
    assert pclient.models.list().data
    assert process.status_counts() == {"200": 1}


def test_a_process_refuses_what_the_server_refuses(process: FakeServerProcess) -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        process.set_rate_limit(0)
    with pytest.raises(ValueError, match="latency must be >= 0"):
        process.set_latency(-1)
    with pytest.raises(TypeError, match="takes Fault values"):
        process.script("429")  # type: ignore[arg-type]


def test_a_process_counts_its_own_cpu_time(process: FakeServerProcess, pclient: OpenAI) -> None:
    before = process.cpu_seconds()
    for _ in range(20):
        pclient.chat.completions.create(model=MODEL, messages=USER)
    after = process.cpu_seconds()

    assert 0 < before < after
    assert process.pid != os.getpid()


def test_a_process_that_cannot_listen_says_so() -> None:
    with FakeOpenAIServer() as taken:
        blocked = FakeServerProcess(port=taken.port)
        with pytest.raises(RuntimeError, match="did not start"):
            blocked.start()
    assert not blocked.is_running
    with pytest.raises(RuntimeError, match="not running"):
        _ = blocked.base_url
    assert repr(blocked) == "<FakeServerProcess not running>"
