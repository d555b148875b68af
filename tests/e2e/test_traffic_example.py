"""examples/compose/traffic.py, the dashboard's traffic generator, runs and exports what it says."""

from __future__ import annotations

import re

from ..helpers import run_python
from .harness import REPO_ROOT
from .otlp_receiver import OTLPReceiver
from .span_tree import CLIENT

OUTCOMES = {"success", "non_retryable", "exhausted"}


def test_traffic_generator_exports_traces_and_metrics(otlp_receiver: OTLPReceiver) -> None:
    done = run_python(
        "examples/compose/traffic.py",
        "--duration",
        "2",
        "--rate",
        "10",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.http_endpoint},
        cwd=REPO_ROOT,
    )
    assert "Traceback" not in done.stderr and "Failed to export" not in done.stderr, done.stderr
    calls_made = sum(int(n) for n in re.findall(r"^\s*(\d+)\s+\S", done.stdout, re.MULTILINE))
    logical = [s for s in otlp_receiver.spans() if s.kind == CLIENT]
    assert calls_made > 0
    assert len(logical) == calls_made, done.stdout
    assert {s.attributes.get("openai_retry.outcome") for s in logical} <= OUTCOMES
    assert {s.resource.get("service.name") for s in logical} == {"otel-openai-retry-traffic"}
    assert otlp_receiver.metric_requests(), "traffic.py exports metrics too"
