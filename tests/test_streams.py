"""Streams of every kind (chat, text completion, responses, the SDK's helpers, raw and streaming
responses): retried until the call returns the stream, never after; the span ends exactly once
and carries what the stream said."""

from __future__ import annotations

import asyncio
import gc

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import (
    FAST,
    STREAM_CUT_ERROR,
    STREAM_CUT_ERROR_TYPE,
    Instrument,
    Sdk,
    async_client,
    attrs,
    logical_spans,
    one_call,
)

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me a story about retries"}
]


async def test_stream_retried_before_first_chunk_ends_after_last_chunk(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.server_error(503))
    client = sdk.client(server)

    def returned() -> None:
        spans = exporter.get_finished_spans()
        assert logical_spans(spans) == [], "the logical span stays open while the stream is read"

    chunks = await sdk.drain(
        lambda: client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        ),
        returned=returned,
    )
    assert len(chunks) > 3
    usage = chunks[-1].usage
    assert usage is not None

    call = one_call(exporter.get_finished_spans())
    assert server.request_count == 2
    assert len(call.attempts) == 2
    assert attrs(call.attempts[0])["error.type"] == "openai.InternalServerError"
    assert attrs(call.attempts[1])["http.response.status_code"] == 200
    assert call.attr("openai_retry.attempts") == 2
    assert call.attr("openai_retry.outcome") == "success"
    assert call.attr("gen_ai.request.stream") is True
    assert call.attr("gen_ai.usage.input_tokens") == usage.prompt_tokens
    assert call.attr("gen_ai.usage.output_tokens") == usage.completion_tokens
    assert call.attr("gen_ai.response.finish_reasons") == ("stop",)
    assert call.attr("gen_ai.response.id") == chunks[0].id
    assert call.attr("gen_ai.response.model") == "gpt-4o-mini"
    ttfc = call.attr("gen_ai.response.time_to_first_chunk")
    assert isinstance(ttfc, float)
    assert 0 < ttfc <= ((call.span.end_time or 0) - (call.span.start_time or 0)) / 1e9
    assert call.span.status.status_code is StatusCode.UNSET
    last_chunk_end = call.attempts[1].end_time
    assert call.span.end_time is not None and last_chunk_end is not None
    assert call.span.end_time >= last_chunk_end


async def test_failure_after_chunks_is_not_retried(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.stream_break(after_chunks=3))
    stream = await async_client(server).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    received = []
    with pytest.raises(STREAM_CUT_ERROR):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    assert server.request_count == 1
    call = one_call(exporter.get_finished_spans())
    assert call.span.status.status_code is StatusCode.ERROR
    assert call.attr("error.type") == STREAM_CUT_ERROR_TYPE
    assert call.attr("openai_retry.attempts") == 1
    assert call.attr("openai_retry.outcome") == "error"


async def test_stream_abandoned_unread_ends_with_other(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    stream = await async_client(server).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    first = await stream.__anext__()
    assert first.choices is not None
    del stream
    gc.collect()
    await asyncio.sleep(0.05)  # asyncio finalizes the abandoned generator in a task
    call = one_call(exporter.get_finished_spans())
    assert call.attr("error.type") == "_OTHER"
    assert call.span.status.status_code is StatusCode.ERROR
    assert call.attr("gen_ai.response.time_to_first_chunk") is not None


async def test_break_out_of_async_with_ends_span_and_closes_response(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    stream = await async_client(server).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    async with stream:
        async for _chunk in stream:
            break
    assert stream.response.is_closed
    call = one_call(exporter.get_finished_spans())
    assert call.span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs(call.span)


async def test_span_is_not_current_while_the_caller_holds_the_stream(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    from opentelemetry import trace

    instrument(policy=FAST)
    before = trace.get_current_span()
    stream = await async_client(server).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    assert trace.get_current_span() is before
    await stream.close()
    assert len(logical_spans(exporter.get_finished_spans())) == 1


async def test_chat_stream_helper(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.rate_limit(retry_after_ms=10))
    async with async_client(server).chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        final = await stream.get_final_completion()
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.attempts") == 2
    assert call.attr("gen_ai.response.id") == final.id
    assert final.usage is not None
    assert call.attr("gen_ai.usage.output_tokens") == final.usage.completion_tokens


async def test_text_completion_stream(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    stream = await async_client(server).completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Once upon a time",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    call = one_call(exporter.get_finished_spans())
    assert call.span.name == "text_completion gpt-3.5-turbo-instruct"
    assert chunks[-1].usage is not None
    assert call.attr("gen_ai.usage.output_tokens") == chunks[-1].usage.completion_tokens
    assert call.attr("gen_ai.response.finish_reasons") == ("stop",)


async def test_responses_stream_and_helper(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.server_error(500))
    stream = await async_client(server).responses.create(
        model="gpt-4.1-mini", input="Hi", stream=True
    )
    events = [event async for event in stream]
    completed = [e for e in events if e.type == "response.completed"]
    assert len(completed) == 1
    response = completed[0].response
    call = one_call(exporter.get_finished_spans())
    assert call.span.name == "chat gpt-4.1-mini"
    assert call.attr("openai_retry.attempts") == 2
    assert call.attr("gen_ai.response.id") == response.id
    assert response.usage is not None
    assert call.attr("gen_ai.usage.input_tokens") == response.usage.input_tokens
    assert call.attr("gen_ai.usage.output_tokens") == response.usage.output_tokens
    assert call.attr("gen_ai.response.finish_reasons") == ("stop",)

    exporter.clear()
    async with async_client(server).responses.stream(model="gpt-4.1-mini", input="Hi") as helper:
        final = await helper.get_final_response()
    call = one_call(exporter.get_finished_spans())
    assert call.attr("gen_ai.response.id") == final.id


async def test_with_streaming_response_stream(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(Fault.rate_limit(retry_after_ms=5))
    async with async_client(server).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as response:
        stream = await response.parse()
        chunks = [c async for c in stream]
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.attempts") == 2
    assert call.attr("gen_ai.response.id") == chunks[0].id


async def test_with_raw_response_stream(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    raw = await async_client(server).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    chunks = [c async for c in raw.parse()]
    call = one_call(exporter.get_finished_spans())
    assert call.attr("gen_ai.response.id") == chunks[0].id
    assert call.attr("gen_ai.response.finish_reasons") == ("stop",)
