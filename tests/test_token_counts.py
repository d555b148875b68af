"""Token counts from the server are recorded only when they are counts OTLP can carry.

One ``usage.prompt_tokens = 2**64`` recorded inside a sampled span makes the OTLP metrics encoder
refuse the whole batch (the exemplar's ``as_int`` is an int64), every other library's metrics
with it; a negative count or a bool is not a count either. The fake server always reports a
sensible usage, so the canned server answers with whatever usage a test sets.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry._operations import usage_tokens

from .helpers import (
    Answer,
    CannedServer,
    Instrument,
    histogram_points,
    json_answer,
    one_call,
    sse_answer,
    sync_client,
)

MODEL = "gpt-4o-mini"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "count me"}
]


def answer_with(usage: dict[str, Any]) -> Answer:
    """A one-choice chat completion, or a stream of it, that reports ``usage``."""

    def answer(request: dict[str, Any]) -> tuple[str, bytes]:
        base = {"id": "chatcmpl-usage", "created": 1, "model": MODEL}
        if not request.get("stream"):
            message = {"role": "assistant", "content": "ok"}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return json_answer(
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        chunk = {**base, "object": "chat.completion.chunk"}
        delta = {"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}
        return sse_answer([{**chunk, "choices": [delta]}, {**chunk, "choices": [], "usage": usage}])

    return answer


PROMPT_TOKENS = {
    "2**64": 2**64,
    "2**63": 2**63,
    "negative": -5,
    "bool": True,
    "float": 12.0,
    "string": "12",
    "null": None,
    "2**63-1, the largest int64": 2**63 - 1,
}


def _usage(value: object) -> dict[str, Any]:
    return {"prompt_tokens": value, "completion_tokens": 7, "total_tokens": 7}


def token_points(reader: InMemoryMetricReader) -> dict[str, HistogramDataPoint]:
    return {
        str((point.attributes or {})["gen_ai.token.type"]): point
        for point in histogram_points(reader, "gen_ai.client.token.usage")
    }


def assert_batch_encodes(reader: InMemoryMetricReader) -> None:
    """The whole collected batch, another library's counter included, encodes as OTLP."""
    data = reader.get_metrics_data()
    assert data is not None
    encoded = encode_metrics(data)
    names = {
        metric.name
        for resource in encoded.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {"other.library.requests", "gen_ai.client.token.usage"} <= names


def _as_count(seen: object) -> int | None:
    return seen if type(seen) is int and 0 <= seen < 2**63 else None


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("value", PROMPT_TOKENS.values(), ids=PROMPT_TOKENS.keys())
def test_a_count_otlp_cannot_carry_is_not_recorded(
    canned: CannedServer,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
    value: object,
    stream: bool,
) -> None:
    """What is recorded is the count the caller's own model holds (the SDK's lax validation
    makes ``true`` 1 and ``"12"`` 12), or nothing when that is no int64 count; the largest
    int64 still is one."""
    canned.answer = answer_with(_usage(value))
    instrument()
    meter_provider.get_meter("other.library").create_counter("other.library.requests").add(1)
    client = sync_client(canned.base_url)
    # Inside a sampled span, so that the measurement carries an exemplar (int64 in OTLP).
    with tracer_provider.get_tracer("app").start_as_current_span("handler"):
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model=MODEL,
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            usage = chunks[-1].usage
        else:
            usage = client.chat.completions.create(model=MODEL, messages=MESSAGES).usage
    assert usage is not None
    seen = _as_count(usage.prompt_tokens)
    if value in (2**64, 2**63, -5, None):
        assert seen is None, "the caller's model holds the server's number as it was"
    if value == 2**63 - 1:
        assert seen == value

    call = one_call([s for s in exporter.get_finished_spans() if s.name != "handler"])
    assert call.attr("gen_ai.usage.input_tokens") == seen
    assert call.attr("gen_ai.usage.output_tokens") == 7
    points = token_points(metric_reader)
    assert points["output"].sum == 7
    if seen is None:
        assert set(points) == {"output"}
    else:
        assert points["input"].sum == points["input"].max == seen
    assert_batch_encodes(metric_reader)
    encode_spans(exporter.get_finished_spans())


def test_only_ints_in_int64_range_are_counts() -> None:
    """Usage that reaches us unvalidated (a dict read from the raw body) holds JSON's types."""
    hostile: list[object] = [True, False, 2**63, 2**64, -1, 1.0, "3", None, [1]]
    for value in hostile:
        assert usage_tokens({"prompt_tokens": value, "completion_tokens": value}) == (None, None)
    assert usage_tokens({"input_tokens": 0, "output_tokens": 2**63 - 1}) == (0, 2**63 - 1)
