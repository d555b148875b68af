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
from .otlp_receiver import OTLPReceiver
from .span_tree import EXPECTED, check_call, wire_calls

PROTOCOLS = ["grpc", "http/protobuf"]
SCENARIOS = ("clean", "retried", "exhausted")
SPAN_COUNT = sum(1 + len(EXPECTED[name].statuses) for name in SCENARIOS)

# The design's metrics and the OTLP data type each must have, checked on those that arrive.
METRIC_TYPES = {
    "gen_ai.client.operation.duration": ("histogram", "s"),
    "gen_ai.client.token.usage": ("histogram", "{token}"),
    "gen_ai.client.operation.time_to_first_chunk": ("histogram", "s"),
    "retry.attempts": ("sum", "{attempt}"),
    "retry.sleep.duration": ("histogram", "s"),
}


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


def _kind(metric: Metric) -> str:
    return str(metric.WhichOneof("data"))
