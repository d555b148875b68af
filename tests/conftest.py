"""Fixtures: one fake OpenAI server per session, in-memory telemetry, clean instrumentation, the
sync and the async client as one parameter, a server of canned answers, and internal errors
handled as in production."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy, _internal
from otel_openai_retry._internal import set_raise_internal_errors
from otel_openai_retry.testing import FakeOpenAIServer

from .helpers import CannedServer, Instrument, Sdk

set_raise_internal_errors(True)  # a bug in our telemetry fails the test; see production_errors

_SLOW = ("e2e/", "differential/", "interop/", "reliability/test_chaos.py")
"""Where the runs that take most of the suite's time live: marked ``slow`` in one place."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.as_posix()
        if any(f"/tests/{part}" in path for part in _SLOW):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def server(fake_server: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def sdk(request: pytest.FixtureRequest) -> Sdk:
    """The test runs twice: with the SDK's sync client and with its async one."""
    return Sdk(is_async=bool(request.param))


@pytest.fixture(scope="session")
def _canned_server() -> Iterator[CannedServer]:
    server = CannedServer()
    yield server
    server.close()


@pytest.fixture
def canned(_canned_server: CannedServer) -> Iterator[CannedServer]:
    """Answers every POST with what the test sets as its ``answer``."""
    yield _canned_server
    _canned_server.answer = None


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(metric_reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[metric_reader])


@pytest.fixture
def instrument(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> Iterator[Instrument]:
    """Instrument with the test's providers (and a policy, if given); always undone after."""
    instrumentor = OpenAIRetryInstrumentor()

    def do(policy: RetryPolicy | None = None, **kwargs: object) -> OpenAIRetryInstrumentor:
        instrumentor.instrument(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            policy=policy,
            **kwargs,
        )
        return instrumentor

    yield do
    instrumentor.uninstrument()


@pytest.fixture
def production_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Our internal errors logged and swallowed, as in production, instead of raised; with an
    empty "logged once" memory, so that the test sees its own first log."""
    monkeypatch.setattr(_internal, "_already_logged", set())
    set_raise_internal_errors(False)
    try:
        yield
    finally:
        set_raise_internal_errors(True)
