"""Metrics read back through an InMemoryMetricReader, and content capture on and off."""

from __future__ import annotations

import json

import openai
import pytest
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry._metrics import DURATION_BUCKETS, TOKEN_BUCKETS
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import FAST, Instrument, async_client, attrs, calls

PROMPT = "What is the airspeed velocity of an unladen swallow"


def metrics_by_name(reader: InMemoryMetricReader) -> dict[str, Metric]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, Metric] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "otel_openai_retry"
            for metric in scope.metrics:
                found[metric.name] = metric
    return found


def histogram_points(metric: Metric) -> list[HistogramDataPoint]:
    points = list(metric.data.data_points)
    assert all(isinstance(p, HistogramDataPoint) for p in points)
    return points  # type: ignore[return-value]


def counter_points(metric: Metric) -> list[NumberDataPoint]:
    points = list(metric.data.data_points)
    assert all(isinstance(p, NumberDataPoint) for p in points)
    return points  # type: ignore[return-value]


async def test_metrics_match_the_calls_made(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
) -> None:
    instrument(policy=FAST)
    client = async_client(server)
    server.script(Fault.rate_limit(retry_after_ms=10), Fault.server_error(500))
    first = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "one two three"}]
    )
    server.script(Fault.status(400))
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "four five"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    streamed_usage = chunks[-1].usage
    assert first.usage is not None and streamed_usage is not None

    metrics = metrics_by_name(metric_reader)
    assert set(metrics) == {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.time_to_first_chunk",
        "openai_retry.client.call.retries",
        "openai_retry.client.call.retry_delay",
        "openai_retry.client.failed_attempts",
        "openai_retry.client.rate_limiting.requests",  # the 429 engaged pacing
    }
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
    }

    duration = metrics["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    by_error = {(p.attributes or {}).get("error.type"): p for p in histogram_points(duration)}
    assert set(by_error) == {None, "openai.BadRequestError"}
    assert by_error[None].count == 2
    assert by_error["openai.BadRequestError"].count == 1
    assert dict(by_error[None].attributes or {}) == base
    assert tuple(by_error[None].explicit_bounds) == DURATION_BUCKETS

    tokens = metrics["gen_ai.client.token.usage"]
    assert tokens.unit == "{token}"
    by_type = {(p.attributes or {})["gen_ai.token.type"]: p for p in histogram_points(tokens)}
    assert by_type["input"].sum == first.usage.prompt_tokens + streamed_usage.prompt_tokens
    assert by_type["output"].sum == first.usage.completion_tokens + streamed_usage.completion_tokens
    assert by_type["input"].count == 2, "tokens from the successful attempts only"
    assert tuple(by_type["input"].explicit_bounds) == TOKEN_BUCKETS

    failed = metrics["openai_retry.client.failed_attempts"]
    assert failed.unit == "{attempt}"
    counts = {
        (
            (p.attributes or {})["error.type"],
            (p.attributes or {})["http.response.status_code"],
        ): p.value
        for p in counter_points(failed)
    }
    assert counts == {
        ("openai.RateLimitError", 429): 1,
        ("openai.InternalServerError", 500): 1,
        ("openai.BadRequestError", 400): 1,
    }
    retries = histogram_points(metrics["openai_retry.client.call.retries"])
    assert metrics["openai_retry.client.call.retries"].unit == "{retry}"
    assert sum(p.count for p in retries) == 3, "once per call, 0 included"
    assert sum(p.count for p in retries) + sum(p.sum for p in retries) == server.request_count == 5
    assert tuple(retries[0].explicit_bounds) == (0, 1, 2, 3, 4, 5, 10, 100, 1000)

    delays = histogram_points(metrics["openai_retry.client.call.retry_delay"])
    assert metrics["openai_retry.client.call.retry_delay"].unit == "s"
    span_sleeps = [
        attrs(a)["openai_retry.sleep"]
        for call in calls(exporter.get_finished_spans())
        for a in call.attempts
        if "openai_retry.sleep" in attrs(a)
    ]
    assert len(span_sleeps) == 2
    assert sum(p.count for p in delays) == 1, "only the call that retried"
    assert sum(p.sum for p in delays) == pytest.approx(sum(span_sleeps))  # type: ignore[arg-type]

    ttfc = histogram_points(metrics["gen_ai.client.operation.time_to_first_chunk"])
    assert [p.count for p in ttfc] == [1]
    assert metrics["gen_ai.client.operation.time_to_first_chunk"].unit == "s"


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")


async def run_calls(server: FakeOpenAIServer) -> list[str]:
    """A plain call and a stream; returns every completion text the caller saw."""
    client = async_client(server)
    server.script(Fault.server_error(500))
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    return [completion.choices[0].message.content or "", streamed]


async def test_content_is_not_captured_by_default(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_serialization(*args: object) -> str:
        raise AssertionError("content serialized while capture is off")

    # The one place message JSON is made, for every operation.
    monkeypatch.setattr("otel_openai_retry._operations._messages.dumps", no_serialization)
    instrument(policy=FAST)
    outputs = await run_calls(server)
    exported = "".join(s.to_json() for s in exporter.get_finished_spans())
    data = metric_reader.get_metrics_data()
    assert data is not None
    exported += data.to_json()
    for text in [PROMPT, *outputs]:
        assert text
        assert text not in exported
    assert "gen_ai.input.messages" not in exported


@pytest.mark.usefixtures("capture")
async def test_content_capture_on_records_input_and_output(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    outputs = await run_calls(server)
    found = calls(exporter.get_finished_spans())
    assert len(found) == 2
    for call, output in zip(found, outputs, strict=True):
        raw_input = call.attr("gen_ai.input.messages")
        raw_output = call.attr("gen_ai.output.messages")
        assert isinstance(raw_input, str) and isinstance(raw_output, str)
        assert json.loads(raw_input) == [
            {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
        ]
        assert json.loads(raw_output) == [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": output}],
                "finish_reason": "stop",
            }
        ]
        for attempt in call.attempts:  # content lives on the logical span only
            assert "gen_ai.input.messages" not in attrs(attempt)


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("true", True),
        ("TRUE", True),
        ("span_only", True),
        ("SPAN_AND_EVENT", True),
        (" Span_Only ", True),
        ("event_only", False),
        ("NO_CONTENT", False),
        ("false", False),
        ("yes", False),
        ("", False),
    ],
)
def test_content_capture_reads_the_conventions_modes(value: str, on: bool) -> None:
    """The GenAI instrumentations' modes: content goes on spans only, so only the modes that
    put it there turn it on; the variable is shared with them, so nothing else fails."""
    from otel_openai_retry._content import CAPTURE_ENV_VAR, capture_enabled

    assert capture_enabled({CAPTURE_ENV_VAR: value}) is on
