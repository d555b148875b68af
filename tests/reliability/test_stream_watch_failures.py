"""A bug in the stream's watch must not touch the caller's stream.

The watch (``_streams.StreamWatch``) only decides when a streaming call's span ends, yet the
hooks feed it from inside the caller's iteration, close and ``parse()``. Each of its event
methods is made to raise, inside its own body (its code swapped, so that whatever guards it is
still in place), and the caller must get exactly what the script earns without the bug: every
chunk, a clean close, the parsed body, or the SDK's own error for a cut stream; and the bug is
logged, as in production (``production_errors``).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest

from otel_openai_retry._streams import StreamWatch
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from ..helpers import FAST, STREAM_CUT_ERROR, Instrument, Sdk, async_client, sync_client

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "broken watch"}
]
REPLY = "Echo: broken watch"

EVENTS = ("arm", "begin_read", "end_read", "chunk", "closed", "failed", "bytes_failed")
"""The watch's events a caller's own reading sets off (``abandoned`` comes from the garbage
collector, never from the caller's code)."""


def _bug(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("a bug in the stream watch")


def ours(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "otel_openai_retry"]


def text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def read_all(server: FakeOpenAIServer, sdk: Sdk) -> None:
    client = sdk.client(server)
    chunks = await sdk.drain(
        lambda: client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    )
    assert text(chunks) == REPLY


async def close_early(server: FakeOpenAIServer, sdk: Sdk) -> None:
    if sdk.is_async:
        aclient = async_client(server)
        stream = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        await stream.__anext__()
        await stream.close()
        return
    client = sync_client(server)

    def read_one() -> None:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        next(iter(stream))
        stream.close()

    await sdk(read_one)


async def parse_later(server: FakeOpenAIServer, sdk: Sdk) -> None:
    if sdk.is_async:
        opened = async_client(server).chat.completions.with_streaming_response.create
        async with opened(model="m", messages=MESSAGES) as response:
            parsed = await response.parse()
    else:
        client = sync_client(server)

        def parse() -> Any:
            opened = client.chat.completions.with_streaming_response.create
            with opened(model="m", messages=MESSAGES) as response:
                return response.parse()

        parsed = await sdk(parse)
    assert parsed.choices[0].message.content == REPLY


async def cut(server: FakeOpenAIServer, sdk: Sdk) -> None:
    server.script(Fault.stream_break(after_chunks=2))
    client = sdk.client(server)
    received: list[Any] = []
    with pytest.raises(STREAM_CUT_ERROR):
        await sdk.drain(
            lambda: client.chat.completions.create(model="m", messages=MESSAGES, stream=True),
            into=received,
        )
    assert len(received) == 2, "the chunks before the cut"


READS: dict[str, Callable[[FakeOpenAIServer, Sdk], Awaitable[None]]] = {
    "read all": read_all,
    "close early": close_early,
    "parse later": parse_later,
    "cut": cut,
}


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("event", EVENTS)
async def test_a_bug_in_the_stream_watch_costs_the_caller_nothing(
    event: str,
    read: str,
    sdk: Sdk,
    server: FakeOpenAIServer,
    instrument: Instrument,
    production_errors: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    method = getattr(StreamWatch, event)
    body = getattr(method, "__wrapped__", method)  # the method's own code, inside its guard
    monkeypatch.setattr(body, "__code__", _bug.__code__)
    instrument(policy=FAST)
    await READS[read](server, sdk)
    gc.collect()  # a watch the bug left open ends now (abandoned), while its provider is up
    await asyncio.sleep(0.05)  # asyncio finalizes an abandoned async generator in a task
    assert all("internal error" in m for m in ours(caplog)), ours(caplog)
