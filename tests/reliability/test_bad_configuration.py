"""Bad configuration: every variable the library or the auto import reads, each with bad values.

- ``OTEL_OPENAI_RETRY_*``: a :class:`ConfigurationError` at instrument time naming the variable,
  the value and what is accepted — through ``instrument()`` and through the auto import — and
  nothing patched. (Empty means unset, as for every OpenTelemetry variable.)
- The OpenTelemetry variables the auto import reads: what the OpenTelemetry SDK documents and
  does with the same value (the auto import delegates to the SDK's own configuration code), and
  the call still retried; for the OTLP protocol, which the library reads itself, an error naming
  the variable.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from openai._base_client import AsyncAPIClient, SyncAPIClient

from otel_openai_retry import ConfigurationError, OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry._policy import ENABLED_ENV_VAR, ENV_VARS

from ..helpers import last_json_line, run_python

OUR_VARIABLES = sorted([*ENV_VARS.values(), ENABLED_ENV_VAR])
NUMBER = "a number of seconds >= 0"
BOOLEAN = "true"  # every boolean message lists the accepted spellings, true among them

BAD_VALUES: list[tuple[str, str, str]] = [
    # (variable, value, a fragment of "what is accepted")
    *[
        ("OTEL_OPENAI_RETRY_MAX_ATTEMPTS", value, "a whole number >= 1")
        for value in (
            *("0", "-1", "2.5", "1e3", "0x10", "five", "nan", "inf", "true", "9" * 5000),
            *("1_000", "\uff15", "\u0661\u0662", "5.5"),  # underscores, fullwidth, Arabic-Indic
        )
    ],
    *[
        (var, value, NUMBER)
        for var in ("OTEL_OPENAI_RETRY_INITIAL_WAIT", "OTEL_OPENAI_RETRY_MAX_RETRY_AFTER")
        for value in (
            *("-0.5", "nan", "inf", "-inf", "1e400", "soon", "1s", "0,5", "true"),
            *("1_0", "\uff15", "\u0661\u0662", "0x1p-1", "infinity"),
        )
    ],
    *[
        ("OTEL_OPENAI_RETRY_MAX_WAIT", value, NUMBER)
        for value in ("-1", "nan", "inf", "1e400", "20s", "twenty")
    ],
    *[
        ("OTEL_OPENAI_RETRY_TIMEOUT", value, "0 means no deadline")
        for value in ("-1", "nan", "inf", "1m", "never", "false")
    ],
    *[
        ("OTEL_OPENAI_RETRY_BUDGET", value, "a ratio >= 0")
        for value in ("-0.1", "nan", "inf", "10%", "none", "off")
    ],
    *[
        ("OTEL_OPENAI_RETRY_ATTEMPT_SPANS", value, "all (a span for every attempt) or retried")
        for value in ("none", "first", "true", "al l", "retried,all", "\uff41ll")
    ],
    *[
        ("OTEL_OPENAI_RETRY_REDIS_URL", value, "a redis://host[:port][/db]")
        for value in (
            *("localhost:6379", "http://cache:6379", "redis://", "redis://cache:port"),
            *("redis://cache:99999", "redis://cache/zero", "unix://", "redis://cache/\uff10"),
        )
    ],
    *[
        (var, value, BOOLEAN)
        for var in ("OTEL_OPENAI_RETRY_ADAPTIVE", ENABLED_ENV_VAR)
        for value in ("maybe", "2", "enabled", "truee", "y", "-1", "yes please")
    ],
]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in OUR_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_the_table_covers_every_variable() -> None:
    assert sorted({var for var, _, _ in BAD_VALUES}) == OUR_VARIABLES


@pytest.mark.parametrize(("var", "value", "accepted"), BAD_VALUES)
def test_a_bad_value_fails_instrument_naming_variable_value_and_what_is_accepted(
    var: str, value: str, accepted: str, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv(var, value)
    originals = (AsyncAPIClient.__dict__["request"], SyncAPIClient.__dict__["request"])
    instrumentor = OpenAIRetryInstrumentor()
    with pytest.raises(ConfigurationError) as raised:
        instrumentor.instrument()
    message = str(raised.value)
    assert f"{var}={value!r}" in message
    assert accepted in message
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert (AsyncAPIClient.__dict__["request"], SyncAPIClient.__dict__["request"]) == originals


@pytest.mark.parametrize(
    ("initial", "maximum"), [("5", "1"), ("0.6", None), ("30", "20"), (None, "0.25")]
)
def test_a_backoff_cap_below_the_first_backoff_names_both_variables(
    initial: str | None, maximum: str | None
) -> None:
    environ = {}
    if initial is not None:
        environ["OTEL_OPENAI_RETRY_INITIAL_WAIT"] = initial
    if maximum is not None:
        environ["OTEL_OPENAI_RETRY_MAX_WAIT"] = maximum
    if maximum is None:  # against the default cap of 20: fine
        RetryPolicy.from_env(environ)
        return
    with pytest.raises(ConfigurationError) as raised:
        RetryPolicy.from_env(environ)
    assert "OTEL_OPENAI_RETRY_MAX_WAIT" in str(raised.value)
    assert "OTEL_OPENAI_RETRY_INITIAL_WAIT" in str(raised.value)


@pytest.mark.parametrize("value", ["", "   "])
@pytest.mark.parametrize("var", OUR_VARIABLES)
def test_empty_means_unset(var: str, value: str, clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv(var, value)
    assert RetryPolicy.from_env() == RetryPolicy()


def test_switched_off_the_auto_import_reads_nothing_else() -> None:
    done = _run_auto({ENABLED_ENV_VAR: "off", "OTEL_OPENAI_RETRY_MAX_ATTEMPTS": "lots"})
    assert done["imported"] and done["requests"] == 3  # the SDK's own loop: 2 retries


# -- the auto import, in fresh processes --------------------------------------------------------

AUTO_ALL_BAD = textwrap.dedent(
    """
    import importlib, json, os, sys
    from opentelemetry import trace
    from openai._base_client import AsyncAPIClient
    original = AsyncAPIClient.__dict__["request"]
    results = []
    for var, value in json.loads(sys.argv[1]):
        os.environ[var] = value
        try:
            importlib.import_module("otel_openai_retry.auto")
            results.append([var, value, None, None])
        except Exception as exc:
            results.append([var, value, type(exc).__name__, str(exc)])
        sys.modules.pop("otel_openai_retry.auto", None)
        del os.environ[var]
    print(json.dumps({
        "results": results,
        "untouched": AsyncAPIClient.__dict__["request"] is original
        and type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider",
    }))
    """
)


def test_the_auto_import_refuses_every_bad_value_before_changing_anything() -> None:
    cases = [[var, value] for var, value, _ in BAD_VALUES]
    done = run_python("-c", AUTO_ALL_BAD, json.dumps(cases), timeout=120)
    report = last_json_line(done)
    assert report["untouched"], "no bad value may patch the SDK or install a provider"
    for (var, value, error, message), (_, _, accepted) in zip(
        report["results"], BAD_VALUES, strict=True
    ):
        assert error == "ConfigurationError", (var, value, error, message)
        assert f"{var}={value!r}" in message and accepted in message


AUTO_CALL = textwrap.dedent(
    """
    import json, logging, os, sys
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = {"imported": False}
    try:
        import otel_openai_retry.auto
        report["imported"] = True
    except Exception as exc:
        report["error"] = [type(exc).__name__, str(exc)]
    if report["imported"]:
        import openai
        from opentelemetry import trace
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from otel_openai_retry.testing import FakeOpenAIServer, Fault

        provider = trace.get_tracer_provider()
        memory = InMemorySpanExporter()
        if hasattr(provider, "add_span_processor"):
            provider.add_span_processor(SimpleSpanProcessor(memory))
            sampler = provider.sampler
            report["sampler"] = type(sampler).__name__
            report["ratio"] = getattr(sampler, "rate", None)
            report["resource"] = {k: str(v) for k, v in provider.resource.attributes.items()}
        report["provider"] = type(provider).__name__
        with FakeOpenAIServer() as server:
            server.script(Fault.server_error(500), Fault.server_error(503))
            client = openai.OpenAI(api_key="sk-config", base_url=server.base_url)
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            report["reply"] = reply.choices[0].message.content
            report["requests"] = server.request_count
        report["spans"] = sorted(s.name for s in memory.get_finished_spans())
        report["content"] = [
            dict(s.attributes).get("gen_ai.input.messages")
            for s in memory.get_finished_spans() if s.name.startswith("chat")
        ]
    print(json.dumps(report), flush=True)
    os._exit(0)  # no exit-time flush to a collector that is not there
    """
)


def _run_auto(env: dict[str, str]) -> dict[str, Any]:
    done = run_python(
        "-c",
        AUTO_CALL,
        env={
            "OTEL_OPENAI_RETRY_INITIAL_WAIT": "0.005",
            "OTEL_OPENAI_RETRY_MAX_WAIT": "0.02",
            **env,
        },
    )
    report: dict[str, Any] = last_json_line(done)
    report["stderr"] = done.stderr
    return report


SPANS = ["attempt 1", "attempt 2", "attempt 3", "chat gpt-4o-mini"]
NO_EXPORT = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}


def _unknown_exporter(signal: str) -> Any:
    def check(report: dict[str, Any]) -> None:
        # The SDK's own configurator refuses an unknown exporter name with this RuntimeError
        # (as under opentelemetry-instrument); the import fails with it, nothing half-done.
        assert not report["imported"]
        assert report["error"][0] == "RuntimeError"
        assert "'nonexistent'" in report["error"][1]
        assert f"opentelemetry_{signal}_exporter" in report["error"][1]

    return check


def _traced_with(**expected: object) -> Any:
    def check(report: dict[str, Any]) -> None:
        assert report["imported"], report.get("error")
        assert report["reply"] == "Echo: hi" and report["requests"] == 3
        assert report["spans"] == SPANS
        for key, value in expected.items():
            assert report[key] == value, (key, report[key])

    return check


def _protocol_refused(var: str, value: str) -> Any:
    def check(report: dict[str, Any]) -> None:
        assert not report["imported"]
        assert report["error"][0] == "ConfigurationError", report["error"]
        assert f"{var}={value!r}" in report["error"][1], report["error"]
        assert "grpc" in report["error"][1] and "http/protobuf" in report["error"][1]

    return check


def _resource_kept_valid_pairs(report: dict[str, Any]) -> None:
    _traced_with()(report)
    assert report["resource"]["team"] == "payments"
    assert "garbage" not in report["resource"]
    assert "Invalid key value resource attribute pair garbage" in report["stderr"]


def _exporter_refuses_a_bad_timeout() -> bool:
    """Asked of the installed OTLP exporter alone: older ones raise ``ValueError`` for a timeout
    that is not a number, newer ones warn and use 10 s."""
    done = run_python(
        "-c",
        "from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter\n"
        "OTLPSpanExporter()",
        env={"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"},
        succeed=False,
    )
    return done.returncode != 0 and "ValueError" in done.stderr


def _default_timeout_with_a_warning(report: dict[str, Any]) -> None:
    if _exporter_refuses_a_bad_timeout():  # then the import fails with its error, as the SDK's
        assert not report["imported"] and report["error"][0] == "ValueError", report
        return
    _traced_with()(report)
    assert "Invalid timeout value 'soon', using default of 10 seconds" in report["stderr"]


def _unknown_service(report: dict[str, Any]) -> None:
    _traced_with()(report)
    assert report["resource"]["service.name"].startswith("unknown_service")


def _retries_without_telemetry(report: dict[str, Any]) -> None:
    assert report["imported"]
    assert report["provider"] == "ProxyTracerProvider"
    assert report["reply"] == "Echo: hi" and report["requests"] == 3


OTEL_CASES: list[tuple[str, dict[str, str], Any]] = [
    # (what, environment, check)
    (
        "unknown traces exporter",
        {"OTEL_TRACES_EXPORTER": "nonexistent"},
        _unknown_exporter("traces"),
    ),
    (
        "unknown metrics exporter",
        {"OTEL_METRICS_EXPORTER": "nonexistent", "OTEL_TRACES_EXPORTER": "none"},
        _unknown_exporter("metrics"),
    ),
    (
        "unknown sampler: a warning, the default parentbased_always_on",
        {**NO_EXPORT, "OTEL_TRACES_SAMPLER": "bogus"},
        _traced_with(sampler="ParentBased"),
    ),
    (
        "sampler argument not a number: a warning, ratio 1.0",
        {**NO_EXPORT, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
        _traced_with(sampler="TraceIdRatioBased", ratio=1.0),
    ),
    (
        "malformed resource attributes: the bad pair dropped with a warning",
        {**NO_EXPORT, "OTEL_RESOURCE_ATTRIBUTES": "garbage,team=payments"},
        _resource_kept_valid_pairs,
    ),
    (
        "empty service name: the SDK's unknown_service",
        {**NO_EXPORT, "OTEL_SERVICE_NAME": ""},
        _unknown_service,
    ),
    (
        "OTEL_SDK_DISABLED other than true: not disabled",
        {**NO_EXPORT, "OTEL_SDK_DISABLED": "maybe"},
        _traced_with(provider="TracerProvider"),
    ),
    (
        "OTEL_SDK_DISABLED=TRUE: disabled, still retried",
        {"OTEL_SDK_DISABLED": "TRUE"},
        _retries_without_telemetry,
    ),
    (
        "endpoint not a URL: the call is unaffected",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "not a url", "OTEL_METRICS_EXPORTER": "none"},
        _traced_with(),
    ),
    (
        "exporter timeout not a number: a warning, 10 s",
        {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon", "OTEL_METRICS_EXPORTER": "none"},
        _default_timeout_with_a_warning,
    ),
    (
        "content capture other than true: off, like the OpenTelemetry GenAI instrumentations",
        {**NO_EXPORT, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "yes"},
        _traced_with(content=[None]),
    ),
    (
        "unknown OTLP protocol",
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"},
        _protocol_refused("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
    ),
    (
        "http/json: in the spec, not in the Python SDK",
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        _protocol_refused("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ),
]


@pytest.mark.parametrize(
    ("env", "check"), [case[1:] for case in OTEL_CASES], ids=[case[0] for case in OTEL_CASES]
)
def test_opentelemetry_variables_behave_as_the_sdk_documents(
    env: dict[str, str], check: Any
) -> None:
    check(_run_auto(env))


@pytest.mark.parametrize(
    "var", ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"]
)
def test_a_bad_signal_specific_protocol_is_reported_under_its_own_name(var: str) -> None:
    _protocol_refused(var, "carrier-pigeon")(_run_auto({var: "carrier-pigeon"}))
