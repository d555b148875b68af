"""Faults that act on an answer's body: per-token pacing, stalls mid-stream, malformed SSE frames
and JSON bodies, seen through the real SDK (sync and async) over real HTTP.

What the SDK raises for a malformed answer differs between SDK versions, so each test asks the
installed SDK first, with the same bytes served by an in-memory transport, and expects that.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from otel_openai_retry.testing import FakeOpenAIServer, Fault
from otel_openai_retry.testing._sending import BAD_FRAME, INVALID_JSON

from .helpers import API_KEY, Sdk, sdk_httpx

MODEL = "gpt-4o-mini"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one two three four five"}]
CHUNKS = 9
"""Role chunk, 6 words of "Echo: one two three four five", the finish chunk, the usage chunk."""


def _sdk_raises(body: bytes, content_type: str, *, stream: bool) -> type[BaseException] | None:
    """What the installed SDK raises when a 200 with ``body`` answers a chat call (``None``:
    nothing), asked through an in-memory transport: the reference for the same bytes over HTTP."""

    def answer(request: Any) -> Any:
        return sdk_httpx.Response(200, headers={"content-type": content_type}, content=body)

    client = openai.OpenAI(
        api_key=API_KEY,
        base_url="http://sdk.invalid/v1",
        max_retries=0,
        http_client=sdk_httpx.Client(transport=sdk_httpx.MockTransport(answer)),
    )
    try:
        if stream:
            for _ in client.chat.completions.create(model=MODEL, messages=USER, stream=True):
                pass
        else:
            client.chat.completions.create(model=MODEL, messages=USER)
    except Exception as exc:
        return type(exc)
    return None


def _stream(client: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
    )


# -- pacing and stalls ------------------------------------------------------------------------


async def test_a_slow_stream_spaces_its_events(server: FakeOpenAIServer, sdk: Sdk) -> None:
    """Each event after the first (the terminator included) waits its delay: the whole stream
    takes at least that many delays, whatever else the machine is doing."""
    per_chunk = 0.03
    server.script(Fault.slow_stream(per_chunk))
    client = sdk.client(server, max_retries=0)
    started = time.monotonic()
    chunks: list[ChatCompletionChunk] = await sdk.drain(lambda: _stream(client))
    elapsed = time.monotonic() - started
    assert len(chunks) == CHUNKS
    assert elapsed >= CHUNKS * per_chunk
    assert server.requests[0].fault.chunk_delay_s == per_chunk


async def test_the_chunk_latency_condition_paces_every_stream(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    server.set_chunk_latency(0.01)
    client = sdk.client(server, max_retries=0)
    await sdk.drain(lambda: _stream(client))
    await sdk(lambda: client.embeddings.create(model="e", input="x"))
    assert [r.fault.chunk_delay_s for r in server.requests] == [0.01, 0.01]
    assert repr(server.requests[0].fault) == "Fault(200, 0.01s per chunk)"


async def test_a_stall_that_outlasts_the_read_timeout_times_the_stream_out(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    server.script(Fault.stream_stall(3))
    client = sdk.client(server, max_retries=0, timeout=0.3)
    received: list[ChatCompletionChunk] = []
    # newer SDKs wrap a read timeout mid-stream as APITimeoutError; openai 1.92 lets httpx's out
    with pytest.raises((openai.APITimeoutError, sdk_httpx.TimeoutException)):
        await sdk.drain(lambda: _stream(client), into=received)
    assert len(received) == 3


async def test_a_timed_stall_ends_and_the_stream_finishes(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    """The stall is the only wait in the stream: the call takes at least that long and
    returns every chunk."""
    stall = 0.2
    server.script(Fault.stream_stall(2, seconds=stall))
    client = sdk.client(server, max_retries=0)
    started = time.monotonic()
    chunks: list[ChatCompletionChunk] = await sdk.drain(lambda: _stream(client))
    assert time.monotonic() - started >= stall
    assert len(chunks) == CHUNKS


async def test_a_stall_on_a_plain_answer_hangs_halfway_through_the_body(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    server.script(Fault.stream_stall(0))
    client = sdk.client(server, max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        await sdk(lambda: client.chat.completions.create(model=MODEL, messages=USER))


def test_stop_ends_a_stall_that_waits_for_the_client() -> None:
    """A stall with no end still lets the server stop (and the test end) at once."""
    server = FakeOpenAIServer()
    server.start()
    server.script(Fault.stream_stall(1))
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            for _ in _stream(client):
                pass
        except Exception as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert server.wait_for_requests(1)
    server.stop()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert len(outcome) == 1  # the cut stream raised, whatever its type on this SDK


# -- malformed answers ------------------------------------------------------------------------


async def test_a_bad_sse_frame_raises_what_the_sdk_raises_after_the_good_ones(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    expected = _sdk_raises(BAD_FRAME, "text/event-stream", stream=True)
    assert expected is not None
    server.script(Fault.bad_sse_frame(after_chunks=2))
    client = sdk.client(server, max_retries=0)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(expected):
        await sdk.drain(lambda: _stream(client), into=received)
    assert len(received) == 2


def test_a_bad_sse_frame_sits_between_well_formed_events(server: FakeOpenAIServer) -> None:
    server.script(Fault.bad_sse_frame(after_chunks=1))
    body = json.dumps({"model": MODEL, "messages": USER, "stream": True}).encode()
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body)
    with urllib.request.urlopen(request, timeout=5) as response:
        frames = response.read().split(b"\n\n")
    datas = [frame.removeprefix(b"data: ") for frame in frames if frame]
    assert frames[1] + b"\n\n" == BAD_FRAME
    assert datas[-1] == b"[DONE]"
    for index, data in enumerate(datas[:-1]):
        if index != 1:
            json.loads(data)  # every other frame is JSON
    with pytest.raises(json.JSONDecodeError):
        json.loads(datas[1])


@pytest.mark.parametrize(
    ("fault", "body"),
    [(Fault.invalid_json(), INVALID_JSON), (Fault.truncated_json(), b'{"id": "chatcmpl-x", "ob')],
    ids=["invalid", "truncated"],
)
async def test_a_200_that_is_not_json_raises_what_the_sdk_raises(
    server: FakeOpenAIServer, sdk: Sdk, fault: Fault, body: bytes
) -> None:
    expected = _sdk_raises(body, "application/json", stream=False)
    assert expected is not None
    server.script(fault)
    client = sdk.client(server, max_retries=0)
    with pytest.raises(expected):
        await sdk(lambda: client.chat.completions.create(model=MODEL, messages=USER))
    assert server.requests[0].fault.bad_body == fault.bad_body


async def test_a_json_body_to_a_stream_request_is_what_the_sdk_makes_of_it(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    """A proxy's JSON (or HTML) page where a stream was asked for: as the SDK reads it."""
    expected = _sdk_raises(INVALID_JSON, "application/json", stream=True)
    server.script(Fault.invalid_json())
    client = sdk.client(server, max_retries=0)
    received: list[ChatCompletionChunk] = []
    if expected is None:
        await sdk.drain(lambda: _stream(client), into=received)
    else:
        with pytest.raises(expected):
            await sdk.drain(lambda: _stream(client), into=received)
    assert received == []


def test_a_truncated_body_is_complete_as_http(server: FakeOpenAIServer) -> None:
    """Half the JSON, and a content-length that says so: no connection error, only bad JSON."""
    server.script(Fault.truncated_json())
    body = json.dumps({"model": MODEL, "messages": USER}).encode()
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body)
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
        assert int(response.headers["content-length"]) == len(raw)
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert raw.startswith(b'{"id": "chatcmpl-')


def test_body_faults_leave_aiohttp_silent(
    server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A stall the client hangs up on, a bad frame, a spoilt body: deliberate, so no traceback
    in a user's test log."""
    server.script(
        Fault.stream_stall(2), Fault.bad_sse_frame(1), Fault.truncated_json(), Fault.stream_stall(0)
    )
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0, timeout=0.2)
    with caplog.at_level(logging.DEBUG, logger="aiohttp"):
        for stream in (True, True, False, False):
            with pytest.raises(Exception):  # noqa: B017, PT011 - each as the SDK has it
                if stream:
                    list(_stream(client))
                else:
                    client.chat.completions.create(model=MODEL, messages=USER)
        assert client.models.list().data
        assert server.wait_for_requests(5)
    # the server's own loggers: an async client an earlier test left unclosed may be collected
    # meanwhile, and asyncio then logs about its event loop, which is no business of the server
    ours = ("aiohttp", "otel_openai_retry")
    assert [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(ours)
    ] == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: Fault(chunk_delay_s=-1),
        lambda: Fault(stall_after=-1),
        lambda: Fault(stall_s=float("nan")),
        lambda: Fault(bad_frame_after=-2),
        lambda: Fault(bad_body="html"),
    ],
)
def test_invalid_body_faults_are_refused_when_written(make: Any) -> None:
    with pytest.raises(ValueError, match="must be"):
        make()
