"""Token counts from the server are recorded only when they are counts OTLP can carry.

One ``usage.prompt_tokens = 2**64`` recorded inside a sampled span makes the OTLP metrics encoder
refuse the whole batch (the exemplar's ``as_int`` is an int64), every other library's metrics
with it; a negative count or a bool is not a count either. The fake server always reports a
sensible usage, so a small stdlib server in this file answers with whatever usage a test sets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry._operations import usage_tokens

from .helpers import API_KEY, Instrument, one_call

MODEL = "gpt-4o-mini"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "count me"}
]


class _UsageHandler(BaseHTTPRequestHandler):
    usage: ClassVar[dict[str, Any]] = {}

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        if request.get("stream"):
            content_type, body = "text/event-stream", _sse(self.usage)
        else:
            content_type, body = "application/json", json.dumps(_completion(self.usage)).encode()
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _completion(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-usage",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def _sse(usage: dict[str, Any]) -> bytes:
    base = {"id": "chatcmpl-usage", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": usage},
    ]
    return "".join([*(f"data: {json.dumps(c)}\n\n" for c in chunks), "data: [DONE]\n\n"]).encode()


class UsageServer:
    """Answers every POST with a one-choice chat completion (or stream) carrying :attr:`usage`."""

    def __init__(self) -> None:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _UsageHandler)
        self.base_url = f"http://127.0.0.1:{self._http.server_port}/v1"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def answer_with(self, usage: dict[str, Any]) -> None:
        _UsageHandler.usage = usage

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture(scope="module")
def usage_server() -> Iterator[UsageServer]:
    server = UsageServer()
    yield server
    server.close()


HOSTILE = {
    "2**64": 2**64,
    "2**63": 2**63,
    "negative": -5,
    "bool": True,
    "float": 12.0,
    "string": "12",
    "null": None,
}


def _usage(value: object) -> dict[str, Any]:
    return {"prompt_tokens": value, "completion_tokens": 7, "total_tokens": 7}


def token_points(reader: InMemoryMetricReader) -> dict[str, HistogramDataPoint]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, HistogramDataPoint] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "gen_ai.client.token.usage":
                    for point in metric.data.data_points:
                        assert isinstance(point, HistogramDataPoint)
                        points[str((point.attributes or {})["gen_ai.token.type"])] = point
    return points


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
@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_count_otlp_cannot_carry_is_not_recorded(
    usage_server: UsageServer,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
    value: object,
    stream: bool,
) -> None:
    """What is recorded is the count the caller's own model holds (the SDK's lax validation
    makes ``true`` 1 and ``"12"`` 12), or nothing when that is no int64 count."""
    usage_server.answer_with(_usage(value))
    instrument()
    meter_provider.get_meter("other.library").create_counter("other.library.requests").add(1)
    client = openai.OpenAI(api_key=API_KEY, base_url=usage_server.base_url)
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

    call = one_call([s for s in exporter.get_finished_spans() if s.name != "handler"])
    assert call.attr("gen_ai.usage.input_tokens") == seen
    assert call.attr("gen_ai.usage.output_tokens") == 7
    points = token_points(metric_reader)
    assert points["output"].sum == 7
    if seen is None:
        assert set(points) == {"output"}
    else:
        assert points["input"].sum == seen
    assert_batch_encodes(metric_reader)
    encode_spans(exporter.get_finished_spans())


def test_only_ints_in_int64_range_are_counts() -> None:
    """Usage that reaches us unvalidated (a dict read from the raw body) holds JSON's types."""
    hostile: list[object] = [True, False, 2**63, 2**64, -1, 1.0, "3", None, [1]]
    for value in hostile:
        assert usage_tokens({"prompt_tokens": value, "completion_tokens": value}) == (None, None)
    assert usage_tokens({"input_tokens": 0, "output_tokens": 2**63 - 1}) == (0, 2**63 - 1)


def test_the_largest_int64_is_still_a_count(
    usage_server: UsageServer,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
) -> None:
    usage_server.answer_with(_usage(2**63 - 1))
    instrument()
    meter_provider.get_meter("other.library").create_counter("other.library.requests").add(1)
    client = openai.OpenAI(api_key=API_KEY, base_url=usage_server.base_url)
    with tracer_provider.get_tracer("app").start_as_current_span("handler"):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    call = one_call([s for s in exporter.get_finished_spans() if s.name != "handler"])
    assert call.attr("gen_ai.usage.input_tokens") == 2**63 - 1
    assert token_points(metric_reader)["input"].max == 2**63 - 1
    assert_batch_encodes(metric_reader)
