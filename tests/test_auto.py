"""``import otel_openai_retry.auto`` in a fresh process, configured only by the environment."""

from __future__ import annotations

import textwrap
from importlib.metadata import entry_points

import otel_openai_retry

from .helpers import last_json_line, run_python

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import openai
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from otel_openai_retry.testing import FakeOpenAIServer, Fault

    PRESET = sys.argv[1] == "preset"
    memory = InMemorySpanExporter()
    if PRESET:  # the application installs its own provider before the import
        from opentelemetry.sdk.trace import TracerProvider
        mine = TracerProvider()
        mine.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(mine)

    import otel_openai_retry.auto
    import otel_openai_retry.auto  # twice: nothing changes
    import importlib
    importlib.reload(otel_openai_retry.auto)  # even a reload does not patch twice

    provider = trace.get_tracer_provider()
    if not PRESET and hasattr(provider, "add_span_processor"):
        provider.add_span_processor(SimpleSpanProcessor(memory))
    with FakeOpenAIServer() as server:
        server.script(Fault.rate_limit(retry_after_ms=10), Fault.server_error(500))
        client = openai.OpenAI(api_key="sk-auto", base_url=server.base_url)
        error = None
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIError as exc:
            error = type(exc).__name__
        requests = server.request_count
    spans = memory.get_finished_spans()
    print(json.dumps({
        "provider": type(provider).__name__,
        "provider_is_mine": PRESET and provider is mine,
        "requests": requests,
        "error": error,
        "spans": sorted(s.name for s in spans),
        "outcome": [
            dict(s.attributes).get("openai_retry.outcome")
            for s in spans
            if s.name.startswith("chat")
        ],
    }))
    """
)


def run(mode: str, **env: str) -> dict[str, object]:
    done = run_python(
        "-c",
        SCRIPT,
        mode,
        env={
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            **env,
        },
    )
    result: dict[str, object] = last_json_line(done)
    result["stderr"] = done.stderr
    return result


def test_auto_import_sets_up_the_sdk_and_retries() -> None:
    result = run("fresh", OTEL_SERVICE_NAME="auto-test")
    assert result["provider"] == "TracerProvider"
    assert result["requests"] == 3
    assert result["spans"] == ["attempt 1", "attempt 2", "attempt 3", "chat gpt-4o-mini"]
    assert result["outcome"] == ["success"]


def test_auto_import_keeps_the_applications_provider() -> None:
    result = run("preset")
    assert result["provider_is_mine"] is True
    assert result["spans"] == ["attempt 1", "attempt 2", "attempt 3", "chat gpt-4o-mini"]


def test_auto_import_reads_the_policy_from_the_environment() -> None:
    result = run("fresh", OTEL_OPENAI_RETRY_MAX_ATTEMPTS="2")
    assert result["requests"] == 2
    assert result["error"] == "InternalServerError"
    assert result["outcome"] == ["exhausted"]


def test_retries_work_when_telemetry_is_disabled() -> None:
    result = run("fresh", OTEL_SDK_DISABLED="true")
    assert result["requests"] == 3
    assert result["provider"] == "ProxyTracerProvider"
    assert result["spans"] == []


def test_master_switch_off_changes_nothing() -> None:
    result = run("preset", OTEL_OPENAI_RETRY_ENABLED="false")
    assert result["spans"] == []
    assert result["requests"] == 3  # the SDK's own loop: 2 retries by default


def test_bad_variable_fails_the_import_with_a_clear_message() -> None:
    done = run_python(
        "-c",
        "import otel_openai_retry.auto",
        env={"OTEL_OPENAI_RETRY_MAX_ATTEMPTS": "lots"},
        succeed=False,
    )
    assert done.returncode != 0
    assert "ConfigurationError: OTEL_OPENAI_RETRY_MAX_ATTEMPTS='lots'" in done.stderr
    assert "a whole number >= 1" in done.stderr


def test_registered_as_an_opentelemetry_instrumentor() -> None:
    found = [
        ep
        for ep in entry_points(group="opentelemetry_instrumentor")
        if ep.value.startswith("otel_openai_retry")
    ]
    assert [ep.name for ep in found] == ["openai_retry"]
    assert found[0].load() is otel_openai_retry.OpenAIRetryInstrumentor
