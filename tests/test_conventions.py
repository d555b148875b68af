"""Every name of the design's Spans and Metrics sections, as users' backends receive them.

The calls go through the real SDK to a real server on loopback; the telemetry is read back from
the OpenTelemetry SDK's in-memory reader and exporter, and once more from the OTLP wire (the SDK's
own OTLP/HTTP exporters into a receiver that decodes the protobuf), in each metric mode that
``OTEL_SEMCONV_STABILITY_OPT_IN`` selects.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import (
    ConfigurationError,
    OpenAIRetryInstrumentor,
    RetryPolicy,
    set_on_retry_hooks,
)
from otel_openai_retry._attempt_spans import header_attributes
from otel_openai_retry._operations import OPERATIONS
from otel_openai_retry._semconv import MetricNames, metric_names
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .e2e.otlp_receiver import OTLPReceiver
from .helpers import API_KEY, STREAM_CUT_ERROR, Instrument, attrs, calls, one_call

FAST = RetryPolicy(initial_wait=0.01, max_wait=0.02, budget=0)
MESSAGES: Any = [{"role": "user", "content": "hi"}]

OLDER = {
    "gen_ai.client.operation.duration",
    "gen_ai.client.token.usage",
    "gen_ai.client.operation.time_to_first_chunk",
}
CURRENT = {
    "gen_ai.client.inference.duration",
    "gen_ai.client.inference.time_to_first_chunk",
    "gen_ai.client.inference.usage.input_tokens",
    "gen_ai.client.inference.usage.output_tokens",
    # embeddings are no inference: their duration keeps the operation's name in every mode
    "gen_ai.client.operation.duration",
}
OURS = {
    "openai_retry.client.call.retries",
    "openai_retry.client.call.retry_delay",
    "openai_retry.client.failed_attempts",
    "openai_retry.client.rate_limiting.requests",
    "openai_retry.client.rate_limiting.time_in_queue",
}
MODES = {
    "": OLDER,
    "gen_ai_latest_experimental": CURRENT,
    "gen_ai_latest_experimental/dup": (OLDER | CURRENT),
}


# -- reading the metric mode and the attempt-span setting ---------------------------------------


@pytest.mark.parametrize(
    ("value", "older", "current"),
    [
        ("", True, False),
        ("http", True, False),
        ("gen_ai_latest_experimental", False, True),
        (" database , gen_ai_latest_experimental ", False, True),
        ("gen_ai_latest_experimental/dup", True, True),
        ("gen_ai_latest_experimental,gen_ai_latest_experimental/dup", True, True),
        ("GEN_AI_LATEST_EXPERIMENTAL", True, False),  # exact, as opentelemetry-instrumentation
    ],
)
def test_the_metric_generation_is_read_as_opentelemetry_reads_it(
    value: str, older: bool, current: bool
) -> None:
    assert metric_names({"OTEL_SEMCONV_STABILITY_OPT_IN": value}) == MetricNames(older, current)


def test_attempt_spans_accepts_all_or_retried_and_names_the_variable_otherwise() -> None:
    variable = "OTEL_OPENAI_RETRY_ATTEMPT_SPANS"
    assert RetryPolicy.from_env({variable: "Retried"}).attempt_spans == "retried"
    assert RetryPolicy.from_env({}).attempt_spans == "all"
    with pytest.raises(ConfigurationError, match=f"{variable}='some'.*all.*retried"):
        RetryPolicy.from_env({variable: "some"})


# -- what responses say: cache, reasoning, tiers, fingerprints -------------------------------------

CHAT_BODY: dict[str, Any] = {
    "id": "chatcmpl-c1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-5-mini",
    "service_tier": "flex",
    "system_fingerprint": "fp_abc",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 80,
        "total_tokens": 1280,
        "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 48},
    },
}
RESPONSES_BODY: dict[str, Any] = {
    "id": "resp_r1",
    "object": "response",
    "created_at": 0,
    "model": "gpt-5-mini",
    "status": "completed",
    "service_tier": "default",
    "output": [],
    "parallel_tool_calls": False,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 900,
        "output_tokens": 30,
        "total_tokens": 930,
        "input_tokens_details": {"cached_tokens": 512, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 20},
    },
}


class _Canned(BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, dict[str, Any]]] = {
        "/v1/chat/completions": CHAT_BODY,
        "/v1/responses": RESPONSES_BODY,
    }

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        data = json.dumps(self.bodies[self.path]).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[str]:
    """A server that answers exactly the bodies above: usage with every detail OpenAI sends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_cache_reasoning_tiers_and_fingerprints_reach_the_span_and_the_counters(
    canned: str,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    instrument(policy=FAST)
    client = openai.OpenAI(api_key=API_KEY, base_url=canned)
    client.chat.completions.create(model="gpt-5-mini", messages=MESSAGES, service_tier="flex")
    client.responses.create(model="gpt-5-mini", input="hi", service_tier="auto")
    chat, responses = calls(exporter.get_finished_spans())
    assert {
        k: v for k, v in attrs(chat.span).items() if k.startswith(("gen_ai.usage", "openai."))
    } == {
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 80,
        "gen_ai.usage.cache_read.input_tokens": 1024,
        "gen_ai.usage.cache_write.input_tokens": 64,
        "gen_ai.usage.reasoning.output_tokens": 48,
        "openai.api.type": "chat_completions",
        "openai.request.service_tier": "flex",
        "openai.response.service_tier": "flex",
        "openai.response.system_fingerprint": "fp_abc",
    }
    # ``auto`` says nothing and is left out; a cache-write count of 0 says nothing either.
    assert {
        k: v for k, v in attrs(responses.span).items() if k.startswith(("gen_ai.usage", "openai."))
    } == {
        "gen_ai.usage.input_tokens": 900,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 512,
        "gen_ai.usage.reasoning.output_tokens": 20,
        "openai.api.type": "responses",
        "openai.response.service_tier": "default",
    }
    sums = counter_sums(metric_reader)
    assert sums[("gen_ai.client.inference.usage.input_tokens", "unknown")] == 2100
    assert sums[("gen_ai.client.inference.usage.output_tokens", "unknown")] == 110
    assert sums[("gen_ai.client.inference.usage.cache_read.input_tokens", "unknown")] == 1536
    assert sums[("gen_ai.client.inference.usage.cache_write.input_tokens", "unknown")] == 64
    assert sums[("gen_ai.client.inference.usage.reasoning.output_tokens", "unknown")] == 68


def test_usage_split_by_modality_where_the_details_add_up() -> None:
    read = OPERATIONS["/chat/completions"].response_fields
    fields = read(
        {
            "usage": {
                "prompt_tokens": 30,
                "completion_tokens": 5,
                "prompt_tokens_details": {"text_tokens": 10, "audio_tokens": 20},
                "completion_tokens_details": {"text_tokens": 4},  # 4 != 5: no split
            }
        }
    )
    assert fields.usage_by_modality() == (
        ("input", "text", 10),
        ("input", "audio", 20),
        ("output", "unknown", 5),
    )


def test_only_the_rate_limit_headers_become_attributes() -> None:
    headers = {
        "Retry-After": "2",
        "retry-after-ms": "1500",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-tokens": "6m0s",
        "x-should-retry": "true",
        "set-cookie": "session=secret",
        "x-request-id": "req_1",
        "openai-organization": "org-secret",
        "x-ratelimit-limit-requests": "9" * 400,
    }
    assert header_attributes(headers) == {
        "http.response.header.retry-after": ("2",),
        "http.response.header.retry-after-ms": ("1500",),
        "http.response.header.x-ratelimit-remaining-requests": ("0",),
        "http.response.header.x-ratelimit-reset-tokens": ("6m0s",),
        "http.response.header.x-should-retry": ("true",),
        "http.response.header.x-ratelimit-limit-requests": ("9" * 256,),
    }


# -- the span tree's names ---------------------------------------------------------------------


def test_every_span_name_of_a_retried_call(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    server.script(Fault.rate_limit(retry_after_ms=20), Fault.server_error(503))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    call = one_call(exporter.get_finished_spans())
    first, second, third = (attrs(a) for a in call.attempts)
    assert first["openai_retry.attempt"] == 1
    assert first["openai_retry.retry_after"] == pytest.approx(0.02)
    assert first["openai_retry.sleep"] >= 0.02  # type: ignore[operator]
    assert first["http.response.status_code"] == 429
    assert first["http.response.header.retry-after-ms"] == ("20",)
    assert first["error.type"] == "openai.RateLimitError"
    assert "http.request.resend_count" not in first
    assert second["openai_retry.attempt"] == 2
    assert second["http.request.resend_count"] == 1
    assert second["error.type"] == "openai.InternalServerError"
    assert "openai_retry.sleep" in second
    assert third["openai_retry.attempt"] == 3
    assert third["http.response.status_code"] == 200
    assert "openai_retry.sleep" not in third
    logical = attrs(call.span)
    assert logical["openai_retry.attempts"] == 3
    assert logical["openai_retry.outcome"] == "success"
    assert logical["openai_retry.total_sleep"] >= 0.02  # type: ignore[operator]
    assert logical["openai.api.type"] == "chat_completions"
    assert logical["gen_ai.provider.name"] == "openai"
    exported = "".join(s.to_json() for s in exporter.get_finished_spans())
    assert '"retry.' not in exported, "no bare retry.* name is left"


def test_a_stream_cut_midway_reports_error_as_its_finish_reason(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    server.script(Fault.stream_break(after_chunks=2))
    with pytest.raises(STREAM_CUT_ERROR):
        for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            pass
    call = one_call(exporter.get_finished_spans())
    assert call.attr("gen_ai.response.finish_reasons") == ("error",)
    assert call.attr("openai_retry.outcome") == "error"


# -- attempt spans: all or retried -----------------------------------------------------------------


def test_with_retried_a_clean_call_exports_one_span_and_a_retried_one_every_attempt(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=RetryPolicy(initial_wait=0.01, max_wait=0.02, attempt_spans="retried"))
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    client.chat.completions.create(model="m", messages=MESSAGES)
    clean = exporter.get_finished_spans()
    assert [s.name for s in clean] == ["chat m"]
    assert attrs(clean[0])["openai_retry.attempts"] == 1
    exporter.clear()

    server.script(Fault.server_error(500), Fault.rate_limit(retry_after_ms=10))
    client.chat.completions.create(model="m", messages=MESSAGES)
    call = one_call(exporter.get_finished_spans())
    assert len(call.attempts) == 3 == len(server.requests) - 1  # attempt spans = requests
    first, second, third = call.attempts
    assert call.span.start_time is not None and first.start_time is not None
    assert first.end_time is not None and second.start_time is not None
    # The first attempt's span is made after the fact, with its true times.
    assert call.span.start_time <= first.start_time < first.end_time < second.start_time
    assert attrs(first)["error.type"] == "openai.InternalServerError"
    assert attrs(first)["http.response.status_code"] == 500
    assert "openai_retry.sleep" in attrs(first)
    assert first.status.description == "openai.InternalServerError: HTTP 500, type server_error"
    assert [attrs(a)["openai_retry.attempt"] for a in call.attempts] == [1, 2, 3]
    assert attrs(third)["http.response.status_code"] == 200
    exporter.clear()

    server.script(Fault.status(400))  # not retried: one attempt, the call's span says it all
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    [only] = exporter.get_finished_spans()
    assert attrs(only)["error.type"] == "openai.BadRequestError"
    assert attrs(only)["openai_retry.outcome"] == "non_retryable"


# -- the metrics, in each mode ------------------------------------------------------------------


def counter_sums(reader: InMemoryMetricReader) -> dict[tuple[str, str | None], float]:
    sums: dict[tuple[str, str | None], float] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, NumberDataPoint):
                        modality = (point.attributes or {}).get("gen_ai.token.modality")
                        key = (metric.name, None if modality is None else str(modality))
                        sums[key] = sums.get(key, 0) + point.value
    return sums


def points_by_name(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def make_every_kind_of_call(server: FakeOpenAIServer) -> None:
    """A clean call, a retried one, a paced one, a stream, embeddings and a failed call."""
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    client.chat.completions.create(model="m", messages=MESSAGES)
    # A 429 closes model m's pacing gate for a second; a call made meanwhile waits for its slot.
    server.script(Fault.rate_limit(retry_after_ms=1000))
    gate_closed = threading.Event()
    set_on_retry_hooks([lambda details: gate_closed.set()])  # after the 429 was taken in
    try:
        retried = threading.Thread(
            target=client.chat.completions.create, kwargs={"model": "m", "messages": MESSAGES}
        )
        retried.start()
        assert gate_closed.wait(10)
        client.chat.completions.create(model="m", messages=MESSAGES)
        retried.join()
    finally:
        set_on_retry_hooks(None)
    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert list(stream)
    client.embeddings.create(model="e", input="hi")
    server.script(Fault.status(400))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="other", messages=MESSAGES)


@pytest.mark.parametrize("mode", list(MODES))
def test_every_metric_name_in_each_mode(
    server: FakeOpenAIServer,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", mode)
    instrument(policy=RetryPolicy(initial_wait=0.01, max_wait=0.02, budget=0))
    make_every_kind_of_call(server)
    points = points_by_name(metric_reader)
    assert set(points) == MODES[mode] | OURS
    retries = points["openai_retry.client.call.retries"]
    assert sum(p.count for p in retries) == 6, "once per call, 0 included"
    assert sum(p.sum for p in retries) == 1
    delay = points["openai_retry.client.call.retry_delay"]
    assert sum(p.count for p in delay) >= 1  # the retried call (and any paced one)
    failed = {
        (p.attributes["error.type"], p.attributes["http.response.status_code"]): p.value
        for p in points["openai_retry.client.failed_attempts"]
    }
    assert failed == {("openai.RateLimitError", 429): 1, ("openai.BadRequestError", 400): 1}
    results = {
        p.attributes["openai_retry.rate_limiting.result"]
        for p in points["openai_retry.client.rate_limiting.requests"]
    }
    assert "delayed" in results
    assert results <= {"acquired", "delayed", "rejected", "canceled"}
    queued = points["openai_retry.client.rate_limiting.time_in_queue"]
    assert max(p.max for p in queued) > 0.1
    if "gen_ai.client.inference.duration" in points:
        inference = points["gen_ai.client.inference.duration"]
        assert sum(p.count for p in inference) == 5  # chat calls: embeddings are not inference
        usage = counter_sums(metric_reader)
        # The failed call is counted too, as 0 of an unknown modality.
        zero = [
            p
            for p in points["gen_ai.client.inference.usage.input_tokens"]
            if p.attributes.get("gen_ai.request.model") == "other"
        ]
        assert [(p.value, p.attributes["gen_ai.token.modality"]) for p in zero] == [(0, "unknown")]
        assert usage[("gen_ai.client.inference.usage.output_tokens", "unknown")] > 0
    if "gen_ai.client.token.usage" in points:
        types = {p.attributes["gen_ai.token.type"] for p in points["gen_ai.client.token.usage"]}
        assert types == {"input", "output"}
    for name in points:
        assert name.startswith(("gen_ai.", "openai_retry.")), name
    assert all(
        isinstance(p, (HistogramDataPoint, NumberDataPoint)) for ps in points.values() for p in ps
    )


@pytest.mark.parametrize("mode", ["", "gen_ai_latest_experimental/dup"])
def test_the_same_names_arrive_over_otlp(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", mode)
    with OTLPReceiver() as receiver:
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces"))
        )
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=receiver.http_endpoint + "/v1/metrics"),
            export_interval_millis=3_600_000,
        )
        meter_provider = MeterProvider(metric_readers=[reader])
        instrumentor = OpenAIRetryInstrumentor()
        instrumentor.instrument(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            policy=RetryPolicy(initial_wait=0.01, max_wait=0.02, budget=0),
        )
        try:
            make_every_kind_of_call(server)
        finally:
            instrumentor.uninstrument()
        meter_provider.force_flush()
        tracer_provider.force_flush()
        names = {
            metric.name
            for request in receiver.metric_requests()
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        spans = receiver.spans()
        meter_provider.shutdown()
        tracer_provider.shutdown()
    assert names == MODES[mode] | OURS
    keys = {key for span in spans for key in span.attributes}
    assert {
        "openai_retry.attempt",
        "openai_retry.sleep",
        "openai_retry.retry_after",
        "openai_retry.attempts",
        "openai_retry.total_sleep",
        "openai_retry.outcome",
        "http.response.header.retry-after-ms",
        "openai.api.type",
    } <= keys
    assert not [key for key in keys if key.startswith("retry.")]


def test_an_allow_listed_header_that_echoes_what_the_request_sent_is_dropped() -> None:
    """A proxy may put the request's key in a header whose name is on the allow-list: a value
    part long enough to hold a key, found in what the request sent, drops that header; so does
    any such part when what was sent cannot be read. Short hints are never checked."""
    key = "sk-proj-0123456789SECRET"
    headers = {
        "x-ratelimit-debug-key": f"Bearer {key}",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "149984",
    }
    sent = (f"Bearer {key}", "https://api.example.test/v1/chat/completions", "{}")
    assert header_attributes(headers, lambda: sent) == {
        "http.response.header.x-ratelimit-reset-requests": ("6m0s",),
        "http.response.header.x-ratelimit-remaining-tokens": ("149984",),
    }
    assert "http.response.header.x-ratelimit-debug-key" not in header_attributes(
        headers, lambda: None
    )
    assert header_attributes({"x-ratelimit-reset-requests": "6m0s"}, lambda: None) == {
        "http.response.header.x-ratelimit-reset-requests": ("6m0s",)
    }
