"""Telemetry that fails must not touch the call, and is logged once.

A span processor that raises (on start, on end), a meter whose instruments raise, and exporters
that raise (behind the SDK's simple and batch processors). The suite re-raises the library's
internal errors (tests/conftest.py); here ``production_errors`` logs them once, as in
production, from an empty "logged once" memory, so each test sees its own first log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import openai
import pytest
from opentelemetry.metrics import NoOpCounter, NoOpHistogram, NoOpMeter, NoOpMeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel_openai_retry import OpenAIRetryInstrumentor
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from ..helpers import (
    FAST,
    Instrument,
    Sdk,
    async_client,
    calls,
    histogram_totals,
)
from .chaos import SpanLedger

POLICY = replace(FAST, max_attempts=4)
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "broken telemetry"}
]
REPLY = "Echo: broken telemetry"
ROUND = 4
"""Calls per round: each fails twice (500, dropped connection) then succeeds."""


class Raising(SpanProcessor):
    def __init__(self, *, on_start: bool = False, on_end: bool = False) -> None:
        self._on_start, self._on_end = on_start, on_end

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        if self._on_start:
            raise RuntimeError("span processor failed on start")

    def on_end(self, span: ReadableSpan) -> None:
        if self._on_end:
            raise RuntimeError("span processor failed on end")


class _BrokenCounter(NoOpCounter):
    def add(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("counter failed")


class _BrokenHistogram(NoOpHistogram):
    def record(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("histogram failed")


class _BrokenMeter(NoOpMeter):
    def create_counter(self, name: str, unit: str = "", description: str = "") -> NoOpCounter:
        return _BrokenCounter(name)

    def create_histogram(self, name: str, *args: Any, **kwargs: Any) -> NoOpHistogram:
        return _BrokenHistogram(name)


class BrokenMeterProvider(NoOpMeterProvider):
    """A meter provider whose every measurement raises."""

    def get_meter(self, name: str, *args: Any, **kwargs: Any) -> NoOpMeter:
        return _BrokenMeter(name)


class RaisingExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise RuntimeError("exporter failed")


def ours(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "otel_openai_retry"]


async def one_round(server: FakeOpenAIServer, sdk: Sdk) -> None:
    """ROUND calls that each need three attempts, a 400, and a stream; all as a user expects."""
    client = sdk.client(server)
    for _ in range(ROUND):
        server.script(Fault.server_error(500), Fault.drop())
        reply = await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))
        assert reply.choices[0].message.content == REPLY
    server.script(Fault.status(400))
    with pytest.raises(openai.BadRequestError):
        await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))
    server.script(Fault.server_error(503))
    chunks = await sdk.drain(
        lambda: client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY


ASYNC = Sdk(is_async=True)


REQUESTS_PER_ROUND = ROUND * 3 + 1 + 2
CALLS_PER_ROUND = ROUND + 2


def assert_logged_once(caplog: pytest.LogCaptureFixture, before_second_round: list[str]) -> None:
    assert before_second_round, "the failure must be logged"
    assert all("internal error" in m for m in before_second_round)
    assert len(set(before_second_round)) == len(before_second_round), before_second_round
    assert ours(caplog) == before_second_round, "nothing more on the second round"


# -- a span processor that raises --------------------------------------------------------------


async def test_a_span_processor_failing_on_end_leaves_calls_unaffected_and_is_logged_once(
    sdk: Sdk,
    server: FakeOpenAIServer,
    tracer_provider: TracerProvider,
    instrument: Instrument,
    production_errors: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracer_provider.add_span_processor(Raising(on_end=True))
    instrument(policy=POLICY)
    await one_round(server, sdk)
    first = ours(caplog)
    await one_round(server, sdk)
    assert_logged_once(caplog, first)
    assert server.request_count == 2 * REQUESTS_PER_ROUND, "every retry made"


async def test_every_span_ends_when_a_span_processor_fails_on_end(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
    instrument: Instrument,
    production_errors: None,
) -> None:
    ledger = SpanLedger()
    tracer_provider.add_span_processor(ledger)  # before the broken one: it sees every end
    tracer_provider.add_span_processor(Raising(on_end=True))
    instrument(policy=POLICY)
    await one_round(server, ASYNC)
    assert ledger.started == ledger.ended
    found = calls(exporter.get_finished_spans())
    assert len(found) == CALLS_PER_ROUND
    assert sum(len(c.attempts) for c in found) == REQUESTS_PER_ROUND


async def test_metrics_stay_exact_when_a_span_processor_fails(
    server: FakeOpenAIServer,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    instrument: Instrument,
    production_errors: None,
) -> None:
    tracer_provider.add_span_processor(Raising(on_end=True))
    instrument(policy=POLICY)
    await one_round(server, ASYNC)
    count, retries = histogram_totals(metric_reader, "openai_retry.client.call.retries")
    assert count + retries == REQUESTS_PER_ROUND, "attempts = calls + retries"
    duration = histogram_totals(metric_reader, "gen_ai.client.operation.duration")
    assert duration[0] == CALLS_PER_ROUND


async def test_a_span_processor_failing_on_start_keeps_the_retry_policy(
    sdk: Sdk,
    server: FakeOpenAIServer,
    tracer_provider: TracerProvider,
    instrument: Instrument,
    production_errors: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracer_provider.add_span_processor(Raising(on_start=True))
    instrument(policy=POLICY)  # four attempts
    server.script(*[Fault.server_error(500)] * 3)
    client = sdk.client(server)
    reply = await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))
    assert reply.choices[0].message.content == REPLY
    assert server.request_count == 4
    assert len(ours(caplog)) == 1


async def test_a_span_processor_failing_on_start_does_not_fail_the_call(
    server: FakeOpenAIServer,
    tracer_provider: TracerProvider,
    instrument: Instrument,
    production_errors: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Call after call is answered, and the failure is logged once, not once per call."""
    tracer_provider.add_span_processor(Raising(on_start=True))
    instrument(policy=POLICY)
    aclient = async_client(server)
    for _ in range(3):
        server.script(Fault.server_error(500))
        reply = await aclient.chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content == REPLY
    assert len(ours(caplog)) == 1


class RaisingOnClientSpans(SpanProcessor):
    """Fails only for the logical (CLIENT) spans: a processor that trips on some spans."""

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        if span.kind is SpanKind.CLIENT:
            raise RuntimeError("span processor failed on start")

    def on_end(self, span: ReadableSpan) -> None:
        pass


async def test_attempts_stay_in_the_callers_trace_when_the_logical_span_cannot_start(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
    instrument: Instrument,
    production_errors: None,
) -> None:
    """Without a logical span, the attempts hang under the caller's span (not in new traces of
    their own) and still say how each one failed."""
    tracer_provider.add_span_processor(RaisingOnClientSpans())
    instrument(policy=POLICY)
    server.script(Fault.rate_limit(retry_after_ms=5))
    aclient = async_client(server)
    with tracer_provider.get_tracer("app").start_as_current_span("handler") as handler:
        await aclient.chat.completions.create(model="m", messages=MESSAGES)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"handler", "attempt 1", "attempt 2"}
    trace_id = handler.get_span_context().trace_id
    for name in ("attempt 1", "attempt 2"):
        attempt = spans[name]
        assert attempt.context is not None and attempt.context.trace_id == trace_id
        assert attempt.parent is not None
        assert attempt.parent.span_id == handler.get_span_context().span_id
    failed = spans["attempt 1"].attributes or {}
    assert spans["attempt 1"].status.status_code is StatusCode.ERROR
    assert failed["error.type"] == "openai.RateLimitError"
    assert failed["http.response.status_code"] == 429
    assert "openai_retry.sleep" in failed
    assert (spans["attempt 2"].attributes or {})["http.response.status_code"] == 200


# -- a meter that raises ---------------------------------------------------------------------------


@pytest.fixture
def broken_meter(
    tracer_provider: TracerProvider, production_errors: None
) -> Iterator[OpenAIRetryInstrumentor]:
    instrumentor = OpenAIRetryInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=BrokenMeterProvider(), policy=POLICY
    )
    yield instrumentor
    instrumentor.uninstrument()


async def test_a_meter_that_raises_leaves_calls_unaffected_and_is_logged_once(
    sdk: Sdk,
    server: FakeOpenAIServer,
    broken_meter: OpenAIRetryInstrumentor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await one_round(server, sdk)
    first = ours(caplog)
    await one_round(server, sdk)
    assert_logged_once(caplog, first)
    assert server.request_count == 2 * REQUESTS_PER_ROUND


async def test_a_meter_that_raises_leaves_no_span_open(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
    broken_meter: OpenAIRetryInstrumentor,
) -> None:
    ledger = SpanLedger()
    tracer_provider.add_span_processor(ledger)
    await one_round(server, ASYNC)
    assert ledger.started == ledger.ended
    found = calls(exporter.get_finished_spans())
    assert sum(len(c.attempts) for c in found) == REQUESTS_PER_ROUND


# -- exporters that raise --------------------------------------------------------------------------


@pytest.mark.parametrize("processor", ["simple", "batch"])
async def test_an_exporter_that_raises_is_the_sdks_business(
    processor: str,
    server: FakeOpenAIServer,
    tracer_provider: TracerProvider,
    instrument: Instrument,
    production_errors: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SDK's processors catch and log their exporter's exceptions (its documented
    behaviour, once per export); the call never sees them and the library has nothing to add."""
    raising = RaisingExporter()
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(raising)
        if processor == "simple"
        else BatchSpanProcessor(raising, schedule_delay_millis=10)
    )
    instrument(policy=POLICY)
    await one_round(server, ASYNC)
    await asyncio.to_thread(tracer_provider.force_flush)
    assert raising.calls >= 1
    assert ours(caplog) == []
    sdk = Counter(r.name for r in caplog.records if r.levelno >= logging.ERROR)
    assert sdk, "the SDK logged the exporter's failure"
