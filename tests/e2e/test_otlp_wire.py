"""Export over the wire: ``import otel_openai_retry.auto``, configured only by environment
variables, sends OTLP to a real receiver; the span tree is rebuilt from the protobuf.

Each test runs the application in a fresh process (the auto import configures the global providers
once per process), pointed at the test receiver on loopback with OTEL_EXPORTER_OTLP_ENDPOINT and
OTEL_EXPORTER_OTLP_PROTOCOL, exactly as a user would point it at a collector.
"""

from __future__ import annotations

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from .harness import run_scenario
from .otlp_receiver import OTLPReceiver, attributes
from .span_tree import EXPECTED, OLD_NAME, check_call, wire_calls

PROTOCOLS = ["grpc", "http/protobuf"]
SCENARIOS = ("clean", "retried", "exhausted")
SPAN_COUNT = sum(1 + len(EXPECTED[name].statuses) for name in SCENARIOS)

# The design's metrics and the OTLP data type each must have, checked on those that arrive.
OLDER_GENAI = {
    "gen_ai.client.operation.duration": ("histogram", "s"),
    "gen_ai.client.token.usage": ("histogram", "{token}"),
    "gen_ai.client.operation.time_to_first_chunk": ("histogram", "s"),
}
CURRENT_GENAI = {
    "gen_ai.client.inference.duration": ("histogram", "s"),
    "gen_ai.client.inference.time_to_first_chunk": ("histogram", "s"),
    "gen_ai.client.inference.usage.input_tokens": ("sum", "{token}"),
    "gen_ai.client.inference.usage.output_tokens": ("sum", "{token}"),
    "gen_ai.client.inference.usage.cache_read.input_tokens": ("sum", "{token}"),
    "gen_ai.client.inference.usage.cache_write.input_tokens": ("sum", "{token}"),
    "gen_ai.client.inference.usage.reasoning.output_tokens": ("sum", "{token}"),
}
OURS = {
    "openai_retry.client.call.retries": ("histogram", "{retry}"),
    "openai_retry.client.call.retry_delay": ("histogram", "s"),
    "openai_retry.client.failed_attempts": ("sum", "{attempt}"),
    "openai_retry.client.rate_limiting.time_in_queue": ("histogram", "s"),
    "openai_retry.client.rate_limiting.requests": ("sum", "{request}"),
}
METRIC_TYPES = {**OLDER_GENAI, **CURRENT_GENAI, **OURS}

# OTEL_SEMCONV_STABILITY_OPT_IN -> which GenAI names a run of clean, retried, exhausted and stream
# must send (no call of the fake server reports cache or reasoning tokens).
MODES = {
    "": set(OLDER_GENAI),
    "gen_ai_latest_experimental": {
        "gen_ai.client.inference.duration",
        "gen_ai.client.inference.time_to_first_chunk",
        "gen_ai.client.inference.usage.input_tokens",
        "gen_ai.client.inference.usage.output_tokens",
    },
}
MODES["gen_ai_latest_experimental/dup"] = MODES[""] | MODES["gen_ai_latest_experimental"]


def transport(protocol: str) -> str:
    return "grpc" if protocol == "grpc" else "http"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_auto_import_exports_the_retry_tree(otlp_receiver: OTLPReceiver, protocol: str) -> None:
    service = f"wire-{transport(protocol)}"
    result = run_scenario(
        *SCENARIOS,
        endpoint=otlp_receiver.endpoint(protocol),
        protocol=protocol,
        service=service,
        metrics_exporter="otlp",
    )
    assert result["tracer_provider"] == "TracerProvider"
    assert {name: result[name]["requests"] for name in SCENARIOS} == {
        "clean": 1,
        "retried": 3,
        "exhausted": 3,
    }
    assert result["exhausted"]["caller_saw"] == "openai.InternalServerError"

    # The provider was shut down before the process exited, so everything has arrived.
    spans = otlp_receiver.spans()
    assert len(spans) == SPAN_COUNT, [s.name for s in spans]
    assert {r.transport for r in otlp_receiver.received()} == {transport(protocol)}

    calls = wire_calls(spans)
    assert len(calls) == len(SCENARIOS)
    assert len({c.span.trace_id for c in calls}) == len(SCENARIOS), "one trace per logical call"
    for call, name in zip(calls, SCENARIOS, strict=True):
        check_call(call, EXPECTED[name], service=service)
    assert {s.scope_name for s in spans} == {"otel_openai_retry"}


def test_attempt_spans_retried_only(otlp_receiver: OTLPReceiver) -> None:
    """OTEL_OPENAI_RETRY_ATTEMPT_SPANS=retried: the clean call is one span; the retried and the
    exhausted calls have all their attempts, the first made afterwards with its true start."""
    run_scenario(
        *SCENARIOS,
        endpoint=otlp_receiver.endpoint("http/protobuf"),
        protocol="http/protobuf",
        service="wire-retried-only",
        extra_env={"OTEL_OPENAI_RETRY_ATTEMPT_SPANS": "retried"},
    )
    spans = otlp_receiver.spans()
    assert len(spans) == SPAN_COUNT - 1, [s.name for s in spans]
    calls = wire_calls(spans)
    for call, name in zip(calls, SCENARIOS, strict=True):
        check_call(call, EXPECTED[name], service="wire-retried-only", every_attempt=False)
    retried = calls[1]
    first, second = retried.attempts[:2]
    assert retried.span.start_ns <= first.start_ns < first.end_ns <= second.start_ns


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nothing_secret_goes_over_the_wire(otlp_receiver: OTLPReceiver, protocol: str) -> None:
    run_scenario(
        "retried",
        endpoint=otlp_receiver.endpoint(protocol),
        protocol=protocol,
        service="wire-secrets",
        metrics_exporter="otlp",
    )
    assert otlp_receiver.received()
    for request in otlp_receiver.received():
        raw = request.message.SerializeToString()
        assert b"sk-e2e-not-a-real-key" not in raw
        assert b"Bearer" not in raw
        assert b"scenario retried" not in raw, "prompt content is off by default"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metrics_export_over_the_same_protocol(otlp_receiver: OTLPReceiver, protocol: str) -> None:
    """With OTEL_METRICS_EXPORTER defaulting to otlp, metrics go to the same endpoint and the
    receiver accepts them; any of the design's metrics that arrive have the right type and unit."""
    run_scenario(
        "retried",
        endpoint=otlp_receiver.endpoint(protocol),
        protocol=protocol,
        service="wire-metrics",
        metrics_exporter="otlp",
        extra_env={"OTEL_METRICS_EXPORTER": ""},  # unset: the library's default is otlp
    )
    metric_requests = otlp_receiver.metric_requests()
    assert metric_requests, "the metrics exporter sent nothing"
    assert {r.transport for r in otlp_receiver.received()} == {transport(protocol)}
    for request in metric_requests:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name in METRIC_TYPES:
                        kind, unit = METRIC_TYPES[metric.name]
                        assert _kind(metric) == kind, metric.name
                        assert metric.unit == unit, metric.name


@pytest.mark.parametrize("mode", list(MODES), ids=lambda m: m or "default")
def test_metric_names_follow_the_stability_opt_in(otlp_receiver: OTLPReceiver, mode: str) -> None:
    """Each OTEL_SEMCONV_STABILITY_OPT_IN mode sends exactly its generation of the GenAI names,
    ours in every mode, and never an old bare ``retry.*`` name."""
    run_scenario(
        "clean",
        "retried",
        "exhausted",
        "stream",
        endpoint=otlp_receiver.endpoint("http/protobuf"),
        protocol="http/protobuf",
        service="wire-metric-modes",
        metrics_exporter="otlp",
        extra_env={"OTEL_SEMCONV_STABILITY_OPT_IN": mode} if mode else None,
    )
    sent: dict[str, Metric] = {}
    for request in otlp_receiver.metric_requests():
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    sent[metric.name] = metric
    assert not [name for name in sent if OLD_NAME.match(name)], sorted(sent)
    genai = {name for name in sent if name.startswith("gen_ai.")}
    assert genai == MODES[mode], (mode, sorted(genai))
    # A retried call, a stream rate limited once: retries, delays, failed attempts.
    for name in ("openai_retry.client.call.retries", "openai_retry.client.call.retry_delay"):
        assert name in sent, (name, sorted(sent))
    failed = sent["openai_retry.client.failed_attempts"]
    by_kind = {}
    for point in failed.sum.data_points:
        labels = attributes(point.attributes)
        by_kind[labels.get("error.type"), labels.get("http.response.status_code")] = point.as_int
    assert by_kind == {
        ("openai.RateLimitError", 429): 3,
        ("openai.InternalServerError", 503): 3,
    }, by_kind
    retries = sent["openai_retry.client.call.retries"].histogram.data_points
    assert sum(p.count for p in retries) == 4, "once per call, 0 included"
    assert sum(p.sum for p in retries) == 2 + 2 + 1, "retried: 2, exhausted: 2, stream: 1"
    for name, metric in sent.items():
        if name in METRIC_TYPES:
            kind, unit = METRIC_TYPES[name]
            assert (_kind(metric), metric.unit) == (kind, unit), name


def _kind(metric: Metric) -> str:
    return str(metric.WhichOneof("data"))
