"""Streams that fail or misbehave: every span ends once, and a failed call never says success.

Chunks the fake server cannot produce (choice indexes of odd types) come from a small stdlib
HTTP server in this file that answers every request with a fixed SSE body.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import openai
import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_openai_retry import RetryPolicy
from otel_openai_retry._internal import set_raise_internal_errors
from otel_openai_retry._stream_hooks import EXTENSION_KEY
from otel_openai_retry._streams import StreamWatch
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import API_KEY, Call, Instrument, attrs, one_call

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me a story about retries"}
]
FAST = RetryPolicy(initial_wait=0.01, max_wait=0.05)
MODEL = "gpt-4o-mini"
CUT_BODY = "complete message body"
"""What the SDK's httpx says (the caller gets its exception as is) when a body ends early."""


# -- a server that sends whatever chunks a test wants ---------------------------------------


class _ChunkHandler(BaseHTTPRequestHandler):
    body: ClassVar[bytes] = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ChunkServer:
    """Answers every POST with the SSE events last given to :meth:`send`."""

    def __init__(self) -> None:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _ChunkHandler)
        self.base_url = f"http://127.0.0.1:{self._http.server_port}/v1"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def send(self, chunks: Sequence[dict[str, Any]]) -> None:
        events = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks]
        _ChunkHandler.body = "".join([*events, "data: [DONE]\n\n"]).encode()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture(scope="module")
def chunk_server() -> Iterator[ChunkServer]:
    server = ChunkServer()
    yield server
    server.close()


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

    def fields(self) -> Any:
        raise RuntimeError("unreadable summary")

    def output_messages(self) -> str | None:
        raise RuntimeError("unreadable summary")


def durations(reader: InMemoryMetricReader) -> list[HistogramDataPoint]:
    """The points of the operation duration histogram: one count per ended logical call."""
    data = reader.get_metrics_data()
    assert data is not None
    points: list[HistogramDataPoint] = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "gen_ai.client.operation.duration":
                    points.extend(metric.data.data_points)  # type: ignore[arg-type]
    return points


def assert_ended_cleanly(call: Call, reader: InMemoryMetricReader) -> None:
    assert call.span.end_time is not None
    assert call.span.status.status_code is StatusCode.UNSET
    assert call.attr("retry.outcome") == "success"
    assert "error.type" not in attrs(call.span)
    reasons = call.attr("gen_ai.response.finish_reasons")
    assert isinstance(reasons, tuple) and reasons and all(isinstance(r, str) for r in reasons)
    assert sum(p.count for p in durations(reader)) == 1, "the call ended exactly once"


# -- 7: choice indexes of mixed types ----------------------------------------------------------


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
async def test_odd_choice_indexes_still_end_the_span_async(
    chunk_server: ChunkServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
    capture: bool,
    chunks: list[dict[str, Any]],
) -> None:
    chunk_server.send(chunks)
    instrument(policy=FAST)
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=chunk_server.base_url)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    received = [c async for c in stream]
    assert len(received) == len(chunks)
    call = one_call(exporter.get_finished_spans())
    assert_ended_cleanly(call, metric_reader)
    assert_output_messages(call, capture, chunks)


@pytest.mark.parametrize("chunks", ODD_INDEXES.values(), ids=ODD_INDEXES.keys())
def test_odd_choice_indexes_still_end_the_span_sync(
    chunk_server: ChunkServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
    capture: bool,
    chunks: list[dict[str, Any]],
) -> None:
    chunk_server.send(chunks)
    instrument(policy=FAST)
    client = openai.OpenAI(api_key=API_KEY, base_url=chunk_server.base_url)
    received = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert len(received) == len(chunks)
    call = one_call(exporter.get_finished_spans())
    assert_ended_cleanly(call, metric_reader)
    assert_output_messages(call, capture, chunks)


@pytest.fixture
def internal_errors_logged() -> Iterator[None]:
    """Production behaviour: an internal error is logged and swallowed, not raised."""
    set_raise_internal_errors(False)
    yield
    set_raise_internal_errors(True)


@pytest.mark.usefixtures("internal_errors_logged")
async def test_a_summary_that_fails_still_ends_the_span_once(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
) -> None:
    """Whatever breaks while the chunks are summarised, the span ends, once."""
    instrument(policy=FAST)
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url)
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


# -- 9: with_streaming_response without stream=True --------------------------------------------


def logical_spans(exporter: InMemorySpanExporter) -> list[str]:
    return [s.name for s in exporter.get_finished_spans() if not s.name.startswith("attempt")]


async def test_streaming_response_span_covers_the_parsed_body_async(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
) -> None:
    instrument(policy=FAST)
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url)
    async with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES
    ) as response:
        assert logical_spans(exporter) == [], "the body is not read yet"
        before_parse = time.time_ns()
        completion = await response.parse()
    call = one_call(exporter.get_finished_spans())
    assert_parsed_body_recorded(call, completion, before_parse, metric_reader)


def test_streaming_response_span_covers_the_parsed_body_sync(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
) -> None:
    instrument(policy=FAST)
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES
    ) as response:
        assert logical_spans(exporter) == [], "the body is not read yet"
        before_parse = time.time_ns()
        completion = response.parse()
    call = one_call(exporter.get_finished_spans())
    assert_parsed_body_recorded(call, completion, before_parse, metric_reader)


def assert_parsed_body_recorded(
    call: Call,
    completion: openai.types.chat.ChatCompletion,
    before_parse: int,
    reader: InMemoryMetricReader,
) -> None:
    assert call.span.end_time is not None and call.span.end_time >= before_parse
    assert call.span.status.status_code is StatusCode.UNSET
    assert call.attr("retry.outcome") == "success"
    assert call.attr("gen_ai.response.id") == completion.id
    assert call.attr("gen_ai.response.model") == completion.model
    assert call.attr("gen_ai.response.finish_reasons") == ("stop",)
    assert completion.usage is not None
    assert call.attr("gen_ai.usage.input_tokens") == completion.usage.prompt_tokens
    assert call.attr("gen_ai.usage.output_tokens") == completion.usage.completion_tokens
    assert sum(p.count for p in durations(reader)) == 1


async def test_streaming_response_body_cut_midway_is_an_error_async(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.stream_break(after_chunks=0))  # half the JSON body, then FIN
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url)
    with pytest.raises(Exception, match=CUT_BODY) as caught:
        async with client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=MESSAGES
        ) as response:
            await response.parse()
    assert_cut_body_is_an_error(call=one_call(exporter.get_finished_spans()), exc=caught.value)
    assert server.request_count == 1


def test_streaming_response_body_cut_midway_is_an_error_sync(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.stream_break(after_chunks=0))
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    with (
        pytest.raises(Exception, match=CUT_BODY) as caught,
        client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=MESSAGES
        ) as response,
    ):
        response.parse()
    assert_cut_body_is_an_error(call=one_call(exporter.get_finished_spans()), exc=caught.value)
    assert server.request_count == 1


def assert_cut_body_is_an_error(call: Call, exc: BaseException) -> None:
    assert call.span.status.status_code is StatusCode.ERROR
    assert call.attr("error.type") == f"{type(exc).__module__}.{type(exc).__qualname__}"
    assert call.attr("retry.outcome") == "error"
    assert call.attr("gen_ai.usage.output_tokens") is None


async def test_streaming_response_read_without_parse_ends_with_the_body(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url)
    async with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES
    ) as response:
        lines = [line async for line in response.iter_lines()]
        assert lines
        assert len(logical_spans(exporter)) == 1, "the body was read to its end"
    call = one_call(exporter.get_finished_spans())
    assert call.span.status.status_code is StatusCode.UNSET

    exporter.clear()
    async with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES
    ):
        assert logical_spans(exporter) == []
    call = one_call(exporter.get_finished_spans())  # closed unread by the context manager
    assert call.span.status.status_code is StatusCode.UNSET


def test_streaming_response_with_stream_true_is_unchanged_sync(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True
    ) as response:
        chunks = list(response.parse())
    call = one_call(exporter.get_finished_spans())
    assert call.attr("gen_ai.response.id") == chunks[0].id
    assert call.attr("gen_ai.response.finish_reasons") == ("stop",)


# -- 10: what is retried, and a failed stream's outcome ----------------------------------------


async def test_stream_dropped_before_its_first_chunk_goes_to_the_caller_async(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """After the 200 header the stream is the caller's: a drop then is not retried (as the
    bare SDK does not), and the call says it failed."""
    instrument(policy=FAST)
    server.script(Fault.stream_break(after_chunks=0))
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError):
        async for item in stream:
            received.append(item)
    assert received == []
    assert server.request_count == 1
    assert_stream_failed(one_call(exporter.get_finished_spans()), "openai.APIConnectionError")


def test_stream_dropped_before_its_first_chunk_goes_to_the_caller_sync(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.stream_break(after_chunks=0))
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIConnectionError):
        next(iter(stream))
    assert server.request_count == 1
    assert_stream_failed(one_call(exporter.get_finished_spans()), "openai.APIConnectionError")


def assert_stream_failed(call: Call, kind: str) -> None:
    assert len(call.attempts) == 1
    assert attrs(call.attempts[0])["http.response.status_code"] == 200
    assert call.span.status.status_code is StatusCode.ERROR
    assert call.attr("error.type") == kind
    assert call.attr("retry.outcome") == "error"
    assert call.attr("retry.attempts") == 1


BEFORE_RETURN = {
    "drop": Fault.drop(),
    "503": Fault.server_error(503),
    "429": Fault.rate_limit(retry_after_ms=5),
    "timeout": Fault.delay(30),
}


@pytest.mark.parametrize("fault", BEFORE_RETURN.values(), ids=BEFORE_RETURN.keys())
async def test_stream_failures_before_it_is_returned_are_retried_async(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument, fault: Fault
) -> None:
    """No response, or an error status: ``create()`` has not returned yet, so we retry."""
    instrument(policy=FAST)
    server.script(fault)
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url, timeout=2.0)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    received = [c async for c in stream]
    assert received
    assert_retried_once(server, one_call(exporter.get_finished_spans()))


@pytest.mark.parametrize("fault", BEFORE_RETURN.values(), ids=BEFORE_RETURN.keys())
def test_stream_failures_before_it_is_returned_are_retried_sync(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument, fault: Fault
) -> None:
    instrument(policy=FAST)
    server.script(fault)
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url, timeout=2.0)
    received = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert received
    assert_retried_once(server, one_call(exporter.get_finished_spans()))


def assert_retried_once(server: FakeOpenAIServer, call: Call) -> None:
    assert server.request_count == 2
    assert len(call.attempts) == 2
    assert call.attempts[0].status.status_code is StatusCode.ERROR
    assert call.attr("retry.outcome") == "success"
    assert call.span.status.status_code is StatusCode.UNSET


async def test_stream_broken_after_chunks_says_error_async(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.stream_break(after_chunks=2))
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url)
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass
    assert_stream_failed(one_call(exporter.get_finished_spans()), "openai.APIConnectionError")


def test_stream_broken_after_chunks_says_error_sync(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.stream_break(after_chunks=2))
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    with pytest.raises(openai.APIConnectionError):
        for _ in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
            pass
    assert_stream_failed(one_call(exporter.get_finished_spans()), "openai.APIConnectionError")


async def test_stream_abandoned_unread_says_error(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url)
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
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:
        next(iter(stream))
    call = one_call(exporter.get_finished_spans())
    assert call.span.status.status_code is StatusCode.UNSET
    assert call.attr("retry.outcome") == "success"


def test_streaming_response_is_freed_as_soon_as_it_is_dropped(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """Watching the parse leaves no reference cycle: refcounting frees the response, as with
    the bare SDK, whether or not the caller parsed it."""
    instrument(policy=FAST)
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
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
    assert len(logical_spans(exporter)) == 2
