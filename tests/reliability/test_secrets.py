"""Issue 7, part 5: no secret ever leaves in telemetry, whatever the call went through.

Calls that fail in every way (each status, dropped connection, timeout, deadline, exhausted,
Retry-After too long, cancelled, a stream cut in the middle, an internal telemetry error) and
some that succeed after retries, from OpenAI and Azure clients carrying an API key, an Azure
``api-key``, an Azure AD token, an organization, a project, a default header and a per-request
header. Then everything is exported — spans (with their events), metrics, and logs (Python's, and
as OpenTelemetry log records) — both as JSON and as the OTLP protobuf a collector would receive,
and no secret may appear in any of it. Content capture is on, so that the most is exported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import openai
import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import RetryPolicy
from otel_openai_retry._internal import set_raise_internal_errors
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from ..helpers import API_KEY, Instrument
from .azure import AzureRouting, azure_clients

DEFAULT_HEADER = "hush-default-3e1f9a0b"
REQUEST_HEADER = "hush-request-7c2d41e5"
ORGANIZATION = "org-hush-55aa19c3"
PROJECT = "proj-hush-66bb28d4"
AZURE_KEY = "azure-hush-8d7e6f50"
AD_TOKEN = "ad-token-hush-9a8b7c6d"
SECRETS = [
    API_KEY,
    API_KEY[-8:],
    f"Bearer {API_KEY}",
    DEFAULT_HEADER,
    REQUEST_HEADER,
    ORGANIZATION,
    PROJECT,
    AZURE_KEY,
    AD_TOKEN,
]
POLICY = RetryPolicy(
    max_attempts=3,
    initial_wait=0.002,
    max_wait=0.01,
    max_retry_after=1.0,
    timeout=1.0,
)
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "tell nobody"}
]


class FailOnBoom(SpanProcessor):
    """Raises when the logical span of a call to the model ``boom`` ends: an internal error."""

    def on_end(self, span: ReadableSpan) -> None:
        if (span.attributes or {}).get("gen_ai.request.model") == "boom":
            raise RuntimeError("span processor failed")


@contextlib.contextmanager
def captured_logs() -> Iterator[tuple[list[logging.LogRecord], InMemoryLogRecordExporter]]:
    """Every Python log record, DEBUG included (ours, the SDK's, httpx's, the server's), also
    sent as OpenTelemetry log records through an in-memory exporter."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handlers = [Keep(level=logging.DEBUG), LoggingHandler(logger_provider=provider)]
    root, ours = logging.getLogger(), logging.getLogger("otel_openai_retry")
    levels = root.level, ours.level
    root.setLevel(logging.DEBUG)
    ours.setLevel(logging.NOTSET)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield records, exporter
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(levels[0])
        ours.setLevel(levels[1])
        provider.shutdown()


def _clients(server: FakeOpenAIServer) -> tuple[openai.OpenAI, openai.AsyncOpenAI]:
    common: dict[str, object] = {
        "api_key": API_KEY,
        "base_url": server.base_url,
        "organization": ORGANIZATION,
        "project": PROJECT,
        "default_headers": {"x-custom-secret": DEFAULT_HEADER},
    }
    return openai.OpenAI(**common), openai.AsyncOpenAI(**common)  # type: ignore[arg-type]


async def make_every_kind_of_call(server: FakeOpenAIServer) -> list[str]:
    """Run the calls; returns what each ended as (an exception name or ``ok``)."""
    client, aclient = _clients(server)
    azure, _ = azure_clients(server, api_key=AZURE_KEY)
    ad_client = openai.AzureOpenAI(
        azure_ad_token=AD_TOKEN,
        api_version="2024-10-21",
        azure_endpoint=f"http://127.0.0.1:{server.port}",
        azure_deployment="prod-gpt",
        http_client=openai.DefaultHttpxClient(transport=AzureRouting()),
    )
    ended: list[str] = []

    def chat(target: openai.OpenAI | openai.AzureOpenAI, *faults: Fault, **kwargs: object) -> None:
        server.script(*faults)
        try:
            target.chat.completions.create(messages=MESSAGES, **{"model": "m", **kwargs})  # type: ignore[call-overload]
            ended.append("ok")
        except openai.APIError as exc:
            ended.append(type(exc).__name__)

    chat(client, Fault.rate_limit(retry_after_ms=5), Fault.server_error(500), Fault.drop())
    chat(client, Fault.server_error(503), Fault.rate_limit(retry_after=0.01))
    for status in (400, 401, 403, 404, 422):
        chat(client, Fault.status(status))
    chat(client, *[Fault.status(409)] * 3)
    chat(client, Fault.status(503, should_retry=False))
    chat(client, Fault.status(400), extra_headers={"x-request-secret": REQUEST_HEADER})
    chat(client.with_options(timeout=0.2), *[Fault.delay(1.0)] * 3)  # timed out thrice
    chat(client, Fault.delay(5.0))  # the 1 s deadline, mid-attempt
    chat(client, Fault.rate_limit(retry_after=600), model="too-long")
    chat(azure, Fault.server_error(500))
    chat(ad_client, Fault.status(401))
    chat(client, Fault.server_error(500), model="boom")  # an internal error in telemetry

    server.script(Fault.server_error(502))
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    ended.append("ok" if raw.parse().id else "?")
    server.script(Fault.rate_limit(retry_after_ms=5))
    client.embeddings.create(model="text-embedding-3-small", input="tell nobody")
    server.script(Fault.server_error(500))
    await aclient.responses.create(model="m", input="tell nobody")

    # Streams: one read to the end (with usage), one cut after two chunks.
    server.script(Fault.server_error(500))
    stream = await aclient.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert [chunk async for chunk in stream]
    server.script(Fault.stream_break(after_chunks=2))
    with pytest.raises(openai.APIConnectionError):
        async for _ in await aclient.chat.completions.create(
            model="m", messages=MESSAGES, stream=True
        ):
            pass

    # Cancelled mid-attempt.
    server.script(Fault.delay(5.0))
    task = asyncio.create_task(aclient.chat.completions.create(model="m", messages=MESSAGES))
    await asyncio.to_thread(server.wait_for_requests, server.request_count + 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return ended


# The SDK's LoggingHandler is deprecated for one in opentelemetry-instrumentation-logging, which
# is not a dependency; it still sends Python logs as OpenTelemetry log records, which is the point.
@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
async def test_no_secret_in_spans_events_metrics_or_logs(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    instrument: Instrument,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    tracer_provider.add_span_processor(FailOnBoom())
    instrument(policy=POLICY)
    set_raise_internal_errors(False)  # the internal error must be logged (once), not raised
    try:
        with captured_logs() as (records, log_exporter):
            ended = await make_every_kind_of_call(server)
            logged = [logging.Formatter().format(r) for r in records]
            log_records = log_exporter.get_finished_logs()
            exported_logs = [r.to_json() for r in log_records]
            exported_logs_otlp = encode_logs(log_records).SerializeToString()
    finally:
        set_raise_internal_errors(True)

    assert ended == [
        *["APIConnectionError", "ok"],
        *["BadRequestError", "AuthenticationError", "PermissionDeniedError", "NotFoundError"],
        *["UnprocessableEntityError", "ConflictError", "InternalServerError", "BadRequestError"],
        *["APITimeoutError", "APITimeoutError", "RateLimitError", "ok", "AuthenticationError"],
        *["ok", "ok"],
    ]
    # The secrets were really sent, so their absence below means something.
    sent = [dict(r.headers) for r in server.requests]
    assert any(h.get("authorization") == f"Bearer {API_KEY}" for h in sent)
    assert any(h.get("authorization") == f"Bearer {AD_TOKEN}" for h in sent)
    assert any(h.get("api-key") == AZURE_KEY for h in sent)
    assert any(h.get("x-custom-secret") == DEFAULT_HEADER for h in sent)
    assert any(h.get("x-request-secret") == REQUEST_HEADER for h in sent)
    assert any(h.get("openai-organization") == ORGANIZATION for h in sent)
    assert any(h.get("openai-project") == PROJECT for h in sent)
    assert any("internal error" in line for line in logged), "the internal error was logged"
    assert any(r.name.startswith("openai") and r.levelno == logging.DEBUG for r in records)

    spans = exporter.get_finished_spans()
    metrics = metric_reader.get_metrics_data()
    assert metrics is not None
    assert any(s.events for s in spans), "exception events are part of what is checked"
    text = {
        "spans (JSON)": "\n".join(s.to_json() for s in spans),
        "metrics (JSON)": metrics.to_json(),
        "Python log records": "\n".join(logged),
        "OpenTelemetry log records (JSON)": "\n".join(exported_logs),
    }
    binary = {
        "spans (OTLP)": encode_spans(spans).SerializeToString(),
        "metrics (OTLP)": encode_metrics(metrics).SerializeToString(),
        "OpenTelemetry log records (OTLP)": exported_logs_otlp,
    }
    for secret in SECRETS:
        for what, content in text.items():
            assert secret not in content, f"{secret!r} found in {what}"
        for what, data in binary.items():
            assert secret.encode() not in data, f"{secret!r} found in {what}"
