"""OpenTelemetry's own switches: ``suppress_instrumentation()`` silences our telemetry and keeps
the retries; ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` keeps the auto import from doing anything."""

from __future__ import annotations

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import FAST, MESSAGES, Instrument, Sdk, last_json_line, metric_points, run_python


async def test_suppressed_calls_still_retry_but_record_nothing(
    sdk: Sdk,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
) -> None:
    instrument(policy=FAST)
    client = sdk.client(server)
    server.script(Fault.server_error(500), Fault.rate_limit(retry_after_ms=5), Fault.server_error())
    with suppress_instrumentation():
        completion = await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))
    assert completion.choices
    assert server.request_count == 4, "our policy's retries, as without suppression"
    assert exporter.get_finished_spans() == ()
    data = metric_reader.get_metrics_data()
    assert data is None or not [
        m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
    ]

    await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))
    assert [s.name for s in exporter.get_finished_spans()] == ["attempt 1", "chat m"]
    assert metric_points(metric_reader, "openai_retry.client.call.retries")


SCRIPT = """
import json, openai
import otel_openai_retry.auto
from otel_openai_retry import OpenAIRetryInstrumentor
from opentelemetry import trace
from otel_openai_retry.testing import FakeOpenAIServer, Fault
with FakeOpenAIServer() as server:
    server.script(*[Fault.server_error(500)] * 6)
    client = openai.OpenAI(api_key="sk-x", base_url=server.base_url)
    try:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    except openai.APIError:
        pass
    print(json.dumps({
        "requests": server.request_count,
        "instrumented": OpenAIRetryInstrumentor().is_instrumented_by_opentelemetry,
        "provider": type(trace.get_tracer_provider()).__name__,
    }))
"""


def test_the_auto_import_honours_the_disabled_instrumentations() -> None:
    done = run_python(
        "-c", SCRIPT, env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "redis, openai_retry ,flask"}
    )
    assert last_json_line(done) == {
        "requests": 3,  # the SDK's own loop: 2 retries
        "instrumented": False,
        "provider": "ProxyTracerProvider",  # no SDK set up either
    }
    done = run_python("-c", SCRIPT, env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"})
    assert last_json_line(done)["instrumented"] is False, "the wildcard disables every one"
    done = run_python("-c", SCRIPT, env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai"})
    assert last_json_line(done)["requests"] == 5
    assert last_json_line(done)["instrumented"] is True
