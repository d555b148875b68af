"""Streams that fail or misbehave, sync and async: every span ends once, a failed call never
says success, and what is retried is what fails before the call returns the stream.

Chunks the fake server cannot produce (choice indexes of odd types) come from the canned server.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import weakref
from collections.abc import Sequence
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_openai_retry._stream_hooks import EXTENSION_KEY
from otel_openai_retry._streams import StreamWatch
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import (
    API_KEY,
    FAST,
    STREAM_CUT_ERROR,
    STREAM_CUT_ERROR_TYPE,
    Call,
    CannedServer,
    Instrument,
    Sdk,
    async_client,
    attrs,
    histogram_points,
    logical_spans,
    one_call,
    sse_answer,
    sync_client,
)
from .helpers import sdk_httpx as httpx2

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me a story about retries"}
]
MODEL = "gpt-4o-mini"
CUT_BODY = "complete message body"
"""What the SDK's httpx says (the caller gets its exception as is) when a body ends early."""


def chunk(index: object, content: str, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-odd",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [
            {"index": index, "delta": {"content": content}, "finish_reason": finish_reason}
        ],
    }


ODD_INDEXES = {
    "int-and-str": [chunk(0, "a"), chunk("1", "b"), chunk(0, "c", "stop"), chunk("1", "d", "stop")],
    "null-and-int": [chunk(None, "a"), chunk(0, "b"), chunk(None, "c", "length")],
    "bool-and-int": [chunk(True, "a"), chunk(1, "b", "stop"), chunk(0, "c", "stop")],
    "float-and-dict": [chunk(1.5, "a"), chunk({"i": 0}, "b"), chunk(0, "c", "stop")],
}


class Unreadable:
    """A chunk reader whose every answer fails."""

    def add(self, chunk: object) -> None:
        raise RuntimeError("unreadable chunk")

    def fields(self, cut: bool = False) -> Any:
        raise RuntimeError("unreadable summary")

    def output_messages(self) -> str | None:
        raise RuntimeError("unreadable summary")


def durations(reader: InMemoryMetricReader) -> list[HistogramDataPoint]:
    """The points of the operation duration histogram: one count per ended logical call."""
    return histogram_points(reader, "gen_ai.client.operation.duration")


def assert_ended_cleanly(call: Call, reader: InMemoryMetricReader) -> None:
    assert call.span.end_time is not None
    assert call.span.status.status_code is StatusCode.UNSET
    assert call.attr("openai_retry.outcome") == "success"
    assert "error.type" not in attrs(call.span)
    reasons = call.attr("gen_ai.response.finish_reasons")
    assert isinstance(reasons, tuple) and reasons and all(isinstance(r, str) for r in reasons)
    assert sum(p.count for p in durations(reader)) == 1, "the call ended exactly once"


# -- choice indexes of mixed types --------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["capture-off", "capture-on"])
def capture(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    return bool(request.param)


def assert_output_messages(call: Call, capture: bool, chunks: Sequence[dict[str, Any]]) -> None:
    output = call.attr("gen_ai.output.messages")
    if not capture:
        assert output is None
        return
    assert isinstance(output, str)
    messages = json.loads(output)
    texts = sorted("".join(p["content"] for p in m["parts"]) for m in messages)
    assert sorted("".join(texts)) == sorted(
        "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    )


@pytest.mark.parametrize("chunks", ODD_INDEXES.values(), ids=ODD_INDEXES.keys())
async def test_odd_choice_indexes_still_end_the_span(
    sdk: Sdk,
    canned: CannedServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
    capture: bool,
    chunks: list[dict[str, Any]],
) -> None:
    canned.answer = lambda request: sse_answer(chunks)
    instrument(policy=FAST)
    client = sdk.client(canned.base_url)
    received = await sdk.drain(
        lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    )
    assert len(received) == len(chunks)
    call = one_call(exporter.get_finished_spans())
    assert_ended_cleanly(call, metric_reader)
    assert_output_messages(call, capture, chunks)


@pytest.mark.usefixtures("production_errors")
async def test_a_summary_that_fails_still_ends_the_span_once(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
) -> None:
    """Whatever breaks while the chunks are summarised, the span ends, once."""
    instrument(policy=FAST)
    client = async_client(server)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    watch = stream.response.extensions[EXTENSION_KEY]
    assert isinstance(watch, StreamWatch)
    watch.reader = Unreadable()  # a summary no code can read
    received = [c async for c in stream]
    assert received
    call = one_call(exporter.get_finished_spans())
    assert call.span.end_time is not None
    assert call.span.status.status_code is StatusCode.UNSET
    assert sum(p.count for p in durations(metric_reader)) == 1


# -- with_streaming_response without stream=True ------------------------------------------------


async def test_streaming_response_span_covers_the_parsed_body(
    sdk: Sdk,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
) -> None:
    instrument(policy=FAST)
    client = sdk.client(server)
    parse_started: list[int] = []

    def before_parse() -> None:
        assert logical_spans(exporter.get_finished_spans()) == [], "the body is not read yet"
        parse_started.append(time.time_ns())

    completion = await sdk.parse_streamed(
        lambda: client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=MESSAGES
        ),
        before_parse,
    )
    call = one_call(exporter.get_finished_spans())
    assert_parsed_body_recorded(call, completion, parse_started[0], metric_reader)


def assert_parsed_body_recorded(
    call: Call,
    completion: openai.types.chat.ChatCompletion,
    before_parse: int,
    reader: InMemoryMetricReader,
) -> None:
    assert call.span.end_time is not None and call.span.end_time >= before_parse
    assert call.span.status.status_code is StatusCode.UNSET
    assert call.attr("openai_retry.outcome") == "success"
    assert call.attr("gen_ai.response.id") == completion.id
    assert call.attr("gen_ai.response.model") == completion.model
    assert call.attr("gen_ai.response.finish_reasons") == ("stop",)
    assert completion.usage is not None
    assert call.attr("gen_ai.usage.input_tokens") == completion.usage.prompt_tokens
    assert call.attr("gen_ai.usage.output_tokens") == completion.usage.completion_tokens
    assert sum(p.count for p in durations(reader)) == 1


async def test_streaming_response_body_cut_midway_is_an_error(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.stream_break(after_chunks=0))  # half the JSON body, then FIN
    client = sdk.client(server)
    with pytest.raises(Exception, match=CUT_BODY) as caught:
        await sdk.parse_streamed(
            lambda: client.chat.completions.with_streaming_response.create(
                model=MODEL, messages=MESSAGES
            )
        )
    assert_cut_body_is_an_error(call=one_call(exporter.get_finished_spans()), exc=caught.value)
    assert server.request_count == 1


def assert_cut_body_is_an_error(call: Call, exc: BaseException) -> None:
    assert call.span.status.status_code is StatusCode.ERROR
    assert call.attr("error.type") == f"{type(exc).__module__}.{type(exc).__qualname__}"
    assert call.attr("openai_retry.outcome") == "error"
    assert call.attr("gen_ai.usage.output_tokens") is None


async def test_streaming_response_read_without_parse_ends_with_the_body(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = async_client(server)
    async with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES
    ) as response:
        lines = [line async for line in response.iter_lines()]
        assert lines
        assert len(logical_spans(exporter.get_finished_spans())) == 1, "read to its end"
    call = one_call(exporter.get_finished_spans())
    assert call.span.status.status_code is StatusCode.UNSET

    exporter.clear()
    async with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES
    ):
        assert logical_spans(exporter.get_finished_spans()) == []
    call = one_call(exporter.get_finished_spans())  # closed unread by the context manager
    assert call.span.status.status_code is StatusCode.UNSET


def test_streaming_response_with_stream_true_is_unchanged_sync(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = sync_client(server)
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True
    ) as response:
        chunks = list(response.parse())
    call = one_call(exporter.get_finished_spans())
    assert call.attr("gen_ai.response.id") == chunks[0].id
    assert call.attr("gen_ai.response.finish_reasons") == ("stop",)


# -- what is retried, and a failed stream's outcome ---------------------------------------------


async def test_stream_dropped_before_its_first_chunk_goes_to_the_caller(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """After the 200 header the stream is the caller's: a drop then is not retried (as the
    bare SDK does not), and the call says it failed."""
    instrument(policy=FAST)
    server.script(Fault.stream_break(after_chunks=0))
    client = sdk.client(server)
    received: list[openai.types.chat.ChatCompletionChunk] = []
    with pytest.raises(STREAM_CUT_ERROR):
        await sdk.drain(
            lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True),
            into=received,
        )
    assert received == []
    assert server.request_count == 1
    assert_stream_failed(one_call(exporter.get_finished_spans()), STREAM_CUT_ERROR_TYPE)


def assert_stream_failed(call: Call, kind: str) -> None:
    assert len(call.attempts) == 1
    assert attrs(call.attempts[0])["http.response.status_code"] == 200
    assert call.span.status.status_code is StatusCode.ERROR
    assert call.attr("error.type") == kind
    assert call.attr("openai_retry.outcome") == "error"
    assert call.attr("openai_retry.attempts") == 1


BEFORE_RETURN = {
    "drop": Fault.drop(),
    "503": Fault.server_error(503),
    "429": Fault.rate_limit(retry_after_ms=5),
    "timeout": Fault.delay(30),
}


@pytest.mark.parametrize("fault", BEFORE_RETURN.values(), ids=BEFORE_RETURN.keys())
async def test_stream_failures_before_it_is_returned_are_retried(
    sdk: Sdk,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    fault: Fault,
) -> None:
    """No response, or an error status: ``create()`` has not returned yet, so we retry."""
    instrument(policy=FAST)
    server.script(fault)
    client = sdk.client(server, timeout=2.0)
    received = await sdk.drain(
        lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    )
    assert received
    assert_retried_once(server, one_call(exporter.get_finished_spans()))


def assert_retried_once(server: FakeOpenAIServer, call: Call) -> None:
    assert server.request_count == 2
    assert len(call.attempts) == 2
    assert call.attempts[0].status.status_code is StatusCode.ERROR
    assert call.attr("openai_retry.outcome") == "success"
    assert call.span.status.status_code is StatusCode.UNSET


async def test_stream_broken_after_chunks_says_error(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.stream_break(after_chunks=2))
    client = sdk.client(server)
    with pytest.raises(STREAM_CUT_ERROR):
        await sdk.drain(
            lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        )
    assert_stream_failed(one_call(exporter.get_finished_spans()), STREAM_CUT_ERROR_TYPE)


async def test_stream_abandoned_unread_says_error(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = async_client(server)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    await stream.__anext__()
    del stream
    gc.collect()
    await asyncio.sleep(0.05)  # asyncio finalizes the abandoned generator in a task
    assert_stream_failed(one_call(exporter.get_finished_spans()), "_OTHER")


def test_stream_closed_early_still_says_success(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """Leaving a stream early is the caller's choice, not a failure."""
    instrument(policy=FAST)
    client = sync_client(server)
    with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:
        next(iter(stream))
    call = one_call(exporter.get_finished_spans())
    assert call.span.status.status_code is StatusCode.UNSET
    assert call.attr("openai_retry.outcome") == "success"


def test_streaming_response_is_freed_as_soon_as_it_is_dropped(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """Watching the parse leaves no reference cycle: refcounting frees the response, as with
    the bare SDK, whether or not the caller parsed it."""
    instrument(policy=FAST)
    client = sync_client(server)
    gc.disable()
    try:
        for parse in (True, False):
            with client.chat.completions.with_streaming_response.create(
                model=MODEL, messages=MESSAGES
            ) as response:
                if parse:
                    response.parse()
                else:
                    response.read()
            freed = weakref.ref(response)
            del response
            assert freed() is None, f"parse={parse}"
    finally:
        gc.enable()
    assert len(logical_spans(exporter.get_finished_spans())) == 2


def test_a_streaming_response_entered_and_dropped_still_ends_its_span(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """Entered, never read, never exited: once collected, the call ends as abandoned."""
    instrument(policy=FAST)
    client = sync_client(server)
    manager = client.chat.completions.with_streaming_response.create(model=MODEL, messages=MESSAGES)
    response = manager.__enter__()
    del response, manager
    for _ in range(3):
        gc.collect()
    call = one_call(exporter.get_finished_spans())
    assert call.span.end_time is not None
    assert call.attr("error.type") == "_OTHER"


def test_a_stream_from_a_transport_that_never_closes_ends_when_read_to_its_end(
    exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """A mock transport hands the SDK a body already in memory, whose close we never see: the
    SDK finishing its chunks ends the call, not the garbage collector."""
    chunks = [chunk(0, "a"), chunk(0, "b", "stop")]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=body.encode()
        )

    instrument(policy=FAST)
    client = openai.OpenAI(
        api_key=API_KEY,
        base_url="http://mock.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    received = list(stream)
    assert len(received) == 2
    call = one_call(exporter.get_finished_spans())  # ended while ``stream`` is still alive
    assert call.attr("error.type") is None
    assert call.attr("gen_ai.response.finish_reasons") == ("stop",)
    del stream


async def test_a_stream_dropped_half_read_makes_the_event_loop_report_nothing(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """The bare SDK's dropped stream is finalized by asyncio without a word. Ours was an async
    generator around the SDK's that closed it from its ``finally`` while asyncio finalized it
    too: "aclose(): asynchronous generator is already running", reported to the loop's
    exception handler for each stream dropped half-read."""
    reports: list[object] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    try:
        instrument(policy=FAST)
        client = async_client(server)
        for _ in range(3):
            stream = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True
            )
            async for _chunk in stream:
                break
            del stream
            gc.collect()
            await asyncio.sleep(0.05)  # asyncio finalizes a dropped async generator in a task
        gc.collect()  # the last stream, once asyncio has closed its generator
    finally:
        loop.set_exception_handler(previous)
    assert reports == []
    names = [span.name for span in exporter.get_finished_spans()]
    assert names.count(f"chat {MODEL}") == 3, names
