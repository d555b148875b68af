"""No secret ever leaves in telemetry, whatever the call went through.

Calls that fail in every way (each status, dropped connection, timeout, deadline, exhausted,
Retry-After too long, cancelled, a stream cut in the middle, an internal telemetry error) and
some that succeed after retries, from OpenAI and Azure clients carrying an API key, an Azure
``api-key``, an Azure AD token, an organization, a project, a default header and a per-request
header. Then everything is exported — spans (with their events), metrics, and logs (Python's, and
as OpenTelemetry log records) — both as JSON and as the OTLP protobuf a collector would receive,
and no secret may appear in any of it. Content capture is on, so that the most is exported.

Then the errors whose own text quotes what must not leave: a header value the transport refuses
(an API key or Azure ``api-key`` ending in a newline, a default header holding CRLF; httpx and
aiohttp), also when an internal error is logged while that exception is being handled; and, with
content capture off, errors that quote the prompt or the completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import openai
import pydantic
import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_openai_retry import RetryPolicy
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from ..helpers import API_KEY, STREAM_CUT_ERROR, Instrument, sync_client
from .azure import azure_clients

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


SdkLeaks = frozenset[tuple[str, object, str]]
"""(logger, message template, secret): a secret the bare SDK itself logs under that template."""


@contextlib.contextmanager
def captured_logs(
    sdk_leaks: SdkLeaks = frozenset(),
) -> Iterator[tuple[list[logging.LogRecord], InMemoryLogRecordExporter]]:
    """Every Python log record, DEBUG included (ours, the SDK's, httpx's, the server's), also
    sent as OpenTelemetry log records through an in-memory exporter; but the records in which
    the SDK logs a secret exactly as it does without us (``sdk_leaks``): not ours to judge."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    class NotTheSdksOwn(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            text = logging.Formatter().format(record)
            found = [(record.name, record.msg, s) for s in SECRETS if s in text]
            return not found or not sdk_leaks.issuperset(found)

    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handlers = [Keep(level=logging.DEBUG), LoggingHandler(logger_provider=provider)]
    for handler in handlers:
        handler.addFilter(NotTheSdksOwn())
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


def _ad_client(server: FakeOpenAIServer, **kwargs: Any) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_ad_token=AD_TOKEN,
        api_version="2024-10-21",
        azure_endpoint=server.url,
        azure_deployment="prod-gpt",
        **kwargs,
    )


def what_the_bare_sdk_logs(server: FakeOpenAIServer) -> SdkLeaks:
    """The secrets the SDK's own loggers write at DEBUG without us, measured on a success and a
    400 from every client below, uninstrumented (some versions log every request's options,
    its headers included). What we log, or make the SDK log besides, is still judged."""
    client, _ = _clients(server)
    azure, _ = azure_clients(server, api_key=AZURE_KEY)
    with captured_logs() as (records, _):
        for target in (client, azure, _ad_client(server)):
            for fault in (Fault.status(400), None):
                server.script(*[fault] if fault else [])
                with contextlib.suppress(openai.APIError):
                    target.with_options(max_retries=0).chat.completions.create(
                        model="m",
                        messages=MESSAGES,
                        extra_headers={"x-request-secret": REQUEST_HEADER},
                    )
    server.reset()  # the calls judged below are the instrumented ones
    leaks: set[tuple[str, object, str]] = set()
    for record in records:
        text = logging.Formatter().format(record)
        if record.name.split(".")[0] == "openai":  # the SDK's loggers only
            leaks.update((record.name, record.msg, s) for s in SECRETS if s in text)
    return frozenset(leaks)


async def make_every_kind_of_call(server: FakeOpenAIServer) -> list[str]:
    """Run the calls; returns what each ended as (an exception name or ``ok``)."""
    client, aclient = _clients(server)
    azure, _ = azure_clients(server, api_key=AZURE_KEY)
    ad_client = _ad_client(server)
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
    with pytest.raises(STREAM_CUT_ERROR):
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
    production_errors: None,  # the internal error must be logged (once), not raised
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    tracer_provider.add_span_processor(FailOnBoom())
    sdk_leaks = what_the_bare_sdk_logs(server)
    instrument(policy=POLICY)
    with captured_logs(sdk_leaks) as (records, log_exporter):
        ended = await make_every_kind_of_call(server)
        logged = [logging.Formatter().format(r) for r in records]
        log_records = log_exporter.get_finished_logs()
        exported_logs = [r.to_json() for r in log_records]
        exported_logs_otlp = encode_logs(log_records).SerializeToString()

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
    assert any(s.status.description for s in spans), "status descriptions are checked too"
    assert not any(s.events for s in spans), "no exception event: its text is not ours to send"
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


# -- a header value the transport rejects, content with capture off ---------------------------

REJECTED = "hush-rejected-0f1e2d3c"
"""Sent in a header value the transport refuses (a trailing newline, an embedded CRLF): its
rejection message (``Illegal header value b'Bearer hush-...\\n'``) quotes the whole header."""
PROMPT = "the vault code is quiet-falcon-8812"
PROMPT_MARKERS = [PROMPT, "quiet-falcon-8812"]
"""The fake server answers ``Echo: <prompt>``, so these are in every completion as well."""
SDK_LOGGERS = ("openai", "httpx", "httpcore")
"""The SDK's and its transport's own DEBUG logs quote requests, headers and the transport's
errors whether or not this library is installed (``send_request_headers.failed
exception=LocalProtocolError(...)``): not ours to change, so left out of what is checked."""


def _ours_to_check(logger_name: str | None, level: int) -> bool:
    name = logger_name or ""
    return not (level <= logging.DEBUG and name.split(".")[0].rstrip("0123456789") in SDK_LOGGERS)


def exported(
    spans: Sequence[ReadableSpan],
    metrics: MetricsData | None,
    records: Sequence[logging.LogRecord],
    log_records: Sequence[ReadableLogRecord],
) -> tuple[dict[str, str], dict[str, bytes]]:
    """Everything that leaves the process, as text and as the OTLP protobuf a collector gets."""
    assert metrics is not None
    kept = [
        r
        for r in log_records
        if _ours_to_check(
            r.instrumentation_scope.name if r.instrumentation_scope else None, _level(r)
        )
    ]
    text = {
        "spans (JSON)": "\n".join(s.to_json() for s in spans),
        "metrics (JSON)": metrics.to_json(),
        "Python log records": "\n".join(
            logging.Formatter().format(r) for r in records if _ours_to_check(r.name, r.levelno)
        ),
        "OpenTelemetry log records (JSON)": "\n".join(r.to_json() for r in kept),
    }
    binary = {
        "spans (OTLP)": encode_spans(spans).SerializeToString(),
        "metrics (OTLP)": encode_metrics(metrics).SerializeToString(),
        "OpenTelemetry log records (OTLP)": encode_logs(kept).SerializeToString(),
    }
    return text, binary


def _level(record: ReadableLogRecord) -> int:
    number = record.log_record.severity_number
    return logging.DEBUG if number is None or number.value <= 8 else logging.INFO


def assert_nowhere(markers: Sequence[str], text: dict[str, str], binary: dict[str, bytes]) -> None:
    for marker in markers:
        for what, content in text.items():
            assert marker not in content, f"{marker!r} found in {what}"
        for what, data in binary.items():
            assert marker.encode() not in data, f"{marker!r} found in {what}"


AnyClient = openai.OpenAI | openai.AsyncOpenAI


def _rejecting_client(case: str, server: FakeOpenAIServer) -> AnyClient:
    """A client whose every request carries a header value the transport refuses."""
    base: dict[str, Any] = {"base_url": server.base_url}
    if case == "api-key-lf":
        return openai.OpenAI(api_key=REJECTED + "\n", **base)
    if case == "api-key-lf-async":
        return openai.AsyncOpenAI(api_key=REJECTED + "\n", **base)
    if case == "azure-api-key-lf":
        return azure_clients(server, api_key=REJECTED + "\n")[0]
    if case == "azure-api-key-lf-async":
        return azure_clients(server, api_key=REJECTED + "\n")[1]
    if case == "default-header-crlf":
        return openai.OpenAI(
            api_key=API_KEY, default_headers={"x-custom": f"v\r\n{REJECTED}"}, **base
        )
    if case == "aiohttp-api-key-lf":
        return openai.AsyncOpenAI(
            api_key=REJECTED + "\n", http_client=openai.DefaultAioHttpClient(), **base
        )
    raise AssertionError(case)


async def _call(client: AnyClient, **kwargs: Any) -> BaseException | None:
    """One chat call; the exception it raised, if any."""
    try:
        if isinstance(client, openai.AsyncOpenAI):
            async with client:
                await client.chat.completions.create(**kwargs)
        else:
            with client:
                client.chat.completions.create(**kwargs)
    except Exception as exc:
        return exc
    return None


REJECTING = [
    "api-key-lf",
    "api-key-lf-async",
    "azure-api-key-lf",
    "azure-api-key-lf-async",
    "default-header-crlf",
    "aiohttp-api-key-lf",
]


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
@pytest.mark.parametrize("case", REJECTING)
async def test_a_header_value_the_transport_rejects_is_in_no_telemetry(
    case: str,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    request = {"model": "m", "messages": MESSAGES}
    bare = await _call(_rejecting_client(case, server), **request)
    assert bare is not None, "the transport refused the header without us too"
    instrument(policy=POLICY)
    caplog.set_level(logging.DEBUG)
    with captured_logs() as (records, log_exporter):
        ours = await _call(_rejecting_client(case, server), **request)
        log_records = log_exporter.get_finished_logs()
        python_records = [*records, *caplog.records]
    assert type(ours) is type(bare), "the caller gets the SDK's own exception"
    chain = [ours, ours.__cause__, ours.__context__] if ours is not None else []
    assert any(REJECTED in repr(e) for e in chain if e is not None) or case.startswith("aiohttp")

    spans = exporter.get_finished_spans()
    assert spans, "the call was traced"
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == (span.attributes or {})["error.type"]
        assert not span.events
    text, binary = exported(spans, metric_reader.get_metrics_data(), python_records, log_records)
    assert_nowhere([REJECTED], text, binary)


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
def test_an_internal_error_log_does_not_quote_the_failed_call(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
    instrument: Instrument,
    caplog: pytest.LogCaptureFixture,
    production_errors: None,
) -> None:
    """Our one log line for an internal error is raised while the call's exception is being
    handled: the traceback it logs must not carry that exception (and its header) along."""
    tracer_provider.add_span_processor(FailOnBoom())
    instrument(policy=POLICY)
    caplog.set_level(logging.DEBUG, logger="otel_openai_retry")
    client = sync_client(server, api_key=REJECTED + "\n")
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="boom", messages=MESSAGES)
    ours = [r for r in caplog.records if r.name.startswith("otel_openai_retry")]
    assert any("internal error" in r.getMessage() for r in ours)
    for record in ours:
        assert REJECTED not in logging.Formatter().format(record)


class Answer(pydantic.BaseModel):
    verdict: str


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
async def test_no_prompt_or_completion_in_telemetry_with_capture_off(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    instrument: Instrument,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Errors that quote the prompt or the completion: a 400 and a retried 500 whose message
    echoes the prompt, ``parse()`` whose answer fails the ``response_format`` model (pydantic
    quotes it), the same through ``with_raw_response``, a stream cut mid-answer."""
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    instrument(policy=POLICY)
    caplog.set_level(logging.DEBUG)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": PROMPT}
    ]
    client, aclient = _clients(server)
    raised: list[BaseException] = []
    with captured_logs() as (records, log_exporter):
        server.script(Fault.status(400, message=f"Invalid content {PROMPT!r} in messages[0]"))
        with pytest.raises(openai.BadRequestError) as bad_request:
            client.chat.completions.create(model="m", messages=messages)
        raised.append(bad_request.value)
        server.script(Fault.status(500, message=f"Could not process {PROMPT!r}"))
        assert client.chat.completions.create(model="m", messages=messages).choices
        server.script(*[Fault.replying(f"Echo: {PROMPT}")] * 2)  # text that fails the model
        with pytest.raises(pydantic.ValidationError) as invalid:
            await aclient.chat.completions.parse(
                model="m", messages=messages, response_format=Answer
            )
        raised.append(invalid.value)
        raw = client.chat.completions.with_raw_response.parse(
            model="m", messages=messages, response_format=Answer
        )
        with pytest.raises(pydantic.ValidationError) as raw_invalid:
            raw.parse()
        raised.append(raw_invalid.value)
        server.script(Fault.stream_break(after_chunks=3))
        with pytest.raises(STREAM_CUT_ERROR):
            async for _ in await aclient.chat.completions.create(
                model="m", messages=messages, stream=True
            ):
                pass
        log_records = log_exporter.get_finished_logs()
        python_records = [*records, *caplog.records]
    for exc in raised:  # what is checked below was really in the caller's exceptions
        assert "quiet-falcon-8812" in str(exc)
    assert all(PROMPT in json.dumps(r.body) for r in server.requests)

    spans = exporter.get_finished_spans()
    described = {s.status.description for s in spans if s.status.description}
    assert "openai.BadRequestError: HTTP 400, type invalid_request_error" in described
    assert "openai.InternalServerError: HTTP 500, type server_error" in described
    assert "pydantic_core.ValidationError" in described
    text, binary = exported(spans, metric_reader.get_metrics_data(), python_records, log_records)
    assert_nowhere(PROMPT_MARKERS, text, binary)


# -- a credential the server echoes back as the error's code ------------------------------------

IDENTIFIER_KEY = "0123456789abcdef0123456789abcdef"
"""An Azure-style key: a plain identifier, exactly what an error ``code`` may look like, so only
the check against the call's own header values keeps it out. The SDK strips credentials from the
request it attaches to an error, so that check must know what the call sent."""


@pytest.mark.parametrize("where", ["azure-api-key", "bearer", "default-header", "request-header"])
def test_a_credential_echoed_as_the_error_code_is_in_no_telemetry(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    where: str,
) -> None:
    instrument(policy=POLICY)
    base = {"base_url": server.base_url, "max_retries": 0}
    extra: dict[str, Any] = {}
    target: openai.OpenAI | openai.AzureOpenAI
    if where == "azure-api-key":
        target, _ = azure_clients(server, api_key=IDENTIFIER_KEY)
    elif where == "bearer":
        target = openai.OpenAI(api_key=IDENTIFIER_KEY, **base)  # type: ignore[arg-type]
    elif where == "default-header":
        target = openai.OpenAI(
            api_key=API_KEY,
            default_headers={"x-gateway-key": IDENTIFIER_KEY},
            **base,  # type: ignore[arg-type]
        )
    else:
        target = openai.OpenAI(api_key=API_KEY, **base)  # type: ignore[arg-type]
        extra["extra_headers"] = {"x-gateway-key": IDENTIFIER_KEY}
    server.script(Fault.status(400, error_code=IDENTIFIER_KEY))
    with pytest.raises(openai.BadRequestError) as raised:
        target.chat.completions.create(model="m", messages=MESSAGES, **extra)
    assert raised.value.code == IDENTIFIER_KEY, "the server really echoed it"
    sent = dict(server.requests[-1].headers)
    assert any(IDENTIFIER_KEY in value for value in sent.values()), "and the call really sent it"
    spans = exporter.get_finished_spans()
    assert [s.status.description for s in spans if s.status.status_code is StatusCode.ERROR] == [
        "openai.BadRequestError: HTTP 400, type invalid_request_error",
        "openai.BadRequestError: HTTP 400, type invalid_request_error",
    ]
    exported = "\n".join(s.to_json() for s in spans)
    assert IDENTIFIER_KEY not in exported


def test_a_token_resolved_per_request_and_echoed_is_in_no_telemetry(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """An Azure AD token provider's token is in no option: only the request the SDK built for
    the attempt carries it, and the SDK strips it from the request its error keeps."""
    token_piece = "SECRETaadTOKENpayload0123456789"
    instrument(policy=POLICY)
    client = openai.AzureOpenAI(
        azure_endpoint=server.url,
        api_version="2024-10-21",
        azure_ad_token_provider=lambda: f"eyJhbGciOiJSUzI1NiJ9.{token_piece}.sig",
        azure_deployment="prod-gpt",
        max_retries=0,
    )
    server.script(Fault.status(400, error_code=token_piece))
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert raised.value.code == token_piece, "the server really echoed it"
    spans = exporter.get_finished_spans()
    assert spans
    assert token_piece not in "\n".join(s.to_json() for s in spans)
