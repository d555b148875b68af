"""collector-config.yaml and its tail-sampling variant, checked by a real collector binary.

The Jaeger v2 binary is an OpenTelemetry Collector distribution (collector v0.140.0, contrib
v0.140.1 components — the versions of the pinned contrib image in examples/compose). It knows
every component the configs use except the contrib ``health_check`` extension, so these tests:

- ``validate`` each config with that extension left out (and prove ``validate`` does catch a
  broken pipeline);
- run the config for real on loopback ports: OTLP in over HTTP, traces out over OTLP/gRPC to a
  real Jaeger and to a stand-in for Tempo (the test OTLP receiver), metrics out through the
  prometheus exporter, whose names the Grafana dashboard must match;
- run the tail-sampling variant and check which traces it keeps.
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Jaeger
from .harness import (
    REPO_ROOT,
    CollectorProcess,
    http_get,
    load_yaml,
    rebind_to_loopback,
    run_scenario,
    wait_until,
)
from .otlp_receiver import OTLPReceiver
from .span_tree import EXPECTED, check_call, wire_calls
from .viewing import (
    COMPOSE_DIR,
    dashboard_promql,
    load_dashboard,
    metric_family,
    parse_prometheus_text,
    promql_label_names,
    promql_metric_names,
    strip_components,
)

pytestmark = pytest.mark.e2e

SCENARIOS = ("clean", "retried", "exhausted")
NOT_IN_JAEGER_DISTRIBUTION = [("extensions", "health_check")]
"""Components of collector-config*.yaml a Jaeger binary cannot check (docs/viewing.md says so)."""


@pytest.fixture(scope="module")
def supported(jaeger_binary: Path) -> dict[str, set[str]]:
    """Component types per section, from ``jaeger components``."""
    done = subprocess.run(
        [str(jaeger_binary), "components"], capture_output=True, text=True, timeout=30, check=True
    )
    listing = yaml.safe_load(done.stdout)
    return {
        section: {component["name"] for component in listing.get(section) or []}
        for section in ("receivers", "processors", "exporters", "connectors", "extensions")
    }


def validate(
    binary: Path, config: dict[str, Any], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "validate.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return subprocess.run(
        [str(binary), "validate", f"--config={path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("name", ["collector-config.yaml", "collector-config.tail-sampling.yaml"])
def test_collector_config_validates(
    name: str, jaeger_binary: Path, supported: dict[str, set[str]], tmp_path: Path
) -> None:
    config = load_yaml(REPO_ROOT / name)
    removed = strip_components(config, supported)
    assert removed == NOT_IN_JAEGER_DISTRIBUTION, (
        f"{name}: components a real binary cannot check changed to {removed}; "
        "update docs/viewing.md and NOT_IN_JAEGER_DISTRIBUTION"
    )
    done = validate(jaeger_binary, config, tmp_path)
    assert done.returncode == 0, done.stderr

    # validate is not a rubber stamp: a pipeline naming an undefined exporter fails.
    broken = copy.deepcopy(config)
    broken["service"]["pipelines"]["traces"]["exporters"].append("otlp/nowhere")
    assert validate(jaeger_binary, broken, tmp_path).returncode != 0
    typo = copy.deepcopy(config)
    typo["exporters"]["otlp/jaeger"]["endpointt"] = "jaeger:4317"
    assert validate(jaeger_binary, typo, tmp_path).returncode != 0


def test_compose_jaeger_config_validates(jaeger_binary: Path, tmp_path: Path) -> None:
    done = validate(jaeger_binary, load_yaml(COMPOSE_DIR / "jaeger.yaml"), tmp_path)
    assert done.returncode == 0, done.stderr


class Collector:
    """collector-config*.yaml running on loopback, exporting to the test's Jaeger and Tempo."""

    def __init__(self, process: CollectorProcess, ports: dict[int, int]) -> None:
        self.process = process
        self.ports = ports

    @property
    def otlp_http(self) -> str:
        return f"http://127.0.0.1:{self.ports[4318]}"

    def scrape(self) -> dict[str, list[dict[str, str]]]:
        status, body = http_get(f"http://127.0.0.1:{self.ports[8889]}/metrics")
        assert status == 200, status
        return parse_prometheus_text(body.decode("utf-8"))


StartCollector = Callable[..., Collector]


@pytest.fixture
def run_collector(
    jaeger_binary: Path,
    supported: dict[str, set[str]],
    jaeger: Jaeger,
    otlp_receiver: OTLPReceiver,
    tmp_path: Path,
) -> Iterator[StartCollector]:
    started: list[CollectorProcess] = []

    def start(name: str, config: dict[str, Any] | None = None) -> Collector:
        config = config if config is not None else load_yaml(REPO_ROOT / name)
        strip_components(config, supported)
        ports = rebind_to_loopback(config)
        config.setdefault("service", {})["telemetry"] = {"metrics": {"level": "none"}}
        env = {
            # The config's own variables: in compose these default to the service names.
            "JAEGER_OTLP_ENDPOINT": f"127.0.0.1:{jaeger.otlp_grpc_port}",
            "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{otlp_receiver.grpc_port}",
        }
        process = CollectorProcess(jaeger_binary, config, tmp_path, "collector", env)
        started.append(process)
        process.start([ports[4317], ports[4318], ports[8889]])
        return Collector(process, ports)

    yield start
    for process in started:
        process.stop()


def test_collector_config_delivers_to_jaeger_tempo_and_prometheus(
    run_collector: StartCollector, jaeger: Jaeger, otlp_receiver: OTLPReceiver
) -> None:
    collector = run_collector("collector-config.yaml")
    service = "e2e-collector"
    run_scenario(
        *SCENARIOS,
        endpoint=collector.otlp_http,
        protocol="http/protobuf",
        service=service,
        metrics_exporter="otlp",
    )
    span_count = sum(1 + len(EXPECTED[n].statuses) for n in SCENARIOS)

    # Jaeger, through the otlp/jaeger exporter.
    wait_until(
        lambda: len(jaeger.query.otlp_spans(service)) == span_count,
        timeout=30,
        what=f"{span_count} spans in Jaeger via the collector\n{collector.process.log_tail()}",
    )
    calls = wire_calls(jaeger.query.otlp_spans(service))
    for call, name in zip(calls, SCENARIOS, strict=True):
        check_call(call, EXPECTED[name], service=service)

    # Tempo's stand-in, through the otlp/tempo exporter: the same spans.
    assert otlp_receiver.wait_for(lambda r: len(r.spans()) == span_count, timeout=30)
    tempo_calls = wire_calls(otlp_receiver.spans())
    assert {r.transport for r in otlp_receiver.received()} == {"grpc"}
    for call, name in zip(tempo_calls, SCENARIOS, strict=True):
        check_call(call, EXPECTED[name], service=service)
    assert {s.span_id for c in tempo_calls for s in [c.span, *c.attempts]} == {
        s.span_id for c in calls for s in [c.span, *c.attempts]
    }
    assert otlp_receiver.metric_requests() == [], "metrics go to Prometheus, not to Tempo"

    # debug, in every pipeline.
    assert '"otelcol.component.id": "debug"' in collector.process.log()

    # Prometheus: whatever the library already emits is named the way the dashboard expects.
    dashboard_names = set().union(
        *(promql_metric_names(e) for e in dashboard_promql(load_dashboard()))
    )
    wait_until(
        lambda: any(
            labels.get("job") == service
            for samples in collector.scrape().values()
            for labels in samples
        ),
        timeout=30,
        what=f"metrics of {service} on the prometheus exporter",
    )
    ours = {
        name
        for name, samples in collector.scrape().items()
        if any(labels.get("job") == service for labels in samples)
    }
    library = {metric_family(n) for n in ours if n.startswith(("gen_ai_", "retry_"))}
    shown = {metric_family(n) for n in dashboard_names}
    assert library <= shown, f"metrics the dashboard does not know: {library - shown}"


def test_dashboard_queries_match_the_prometheus_exporter(run_collector: StartCollector) -> None:
    """Every metric and label the dashboard queries exists once the design's metrics go through
    the collector's prometheus exporter (names with unit suffixes and _total, as configured)."""
    collector = run_collector("collector-config.yaml")
    service = "e2e-contract-metrics"
    run_scenario(
        "contract-metrics",
        endpoint=collector.otlp_http,
        protocol="http/protobuf",
        service=service,
        metrics_exporter="otlp",
    )
    exprs = dashboard_promql(load_dashboard())
    wanted = set().union(*(promql_metric_names(e) for e in exprs))

    def present() -> set[str]:
        return {
            name
            for name, samples in collector.scrape().items()
            if any(labels.get("job") == service for labels in samples)
        }

    wait_until(
        lambda: wanted <= present(),
        timeout=30,
        what=f"dashboard metrics {sorted(wanted - present())} on the prometheus exporter",
    )
    scraped = collector.scrape()
    labels_seen = {label for name in wanted for sample in scraped[name] for label in sample}
    for expr in exprs:
        assert promql_label_names(expr) <= labels_seen, (expr, labels_seen)
    attempts = scraped["retry_attempts_total"]
    assert {s.get("error_type") for s in attempts if s.get("job") == service} == {
        "openai.RateLimitError",
        None,
    }
    tokens = scraped["gen_ai_client_token_usage_count"]
    assert {s.get("gen_ai_token_type") for s in tokens if s.get("job") == service} == {
        "input",
        "output",
    }


def test_tail_sampling_keeps_errors_and_retries(
    run_collector: StartCollector, jaeger: Jaeger
) -> None:
    """The variant's policies, with the random share set to 0 % and a short decision wait:
    the retried and the exhausted calls are kept, the clean one is dropped."""
    config = load_yaml(REPO_ROOT / "collector-config.tail-sampling.yaml")
    sampler = config["processors"]["tail_sampling"]
    sampler["decision_wait"] = "1s"
    for policy in sampler["policies"]:
        if policy["type"] == "probabilistic":
            policy["probabilistic"]["sampling_percentage"] = 0
    collector = run_collector("collector-config.tail-sampling.yaml", config)
    service = "e2e-tail-sampling"
    run_scenario(
        *SCENARIOS, endpoint=collector.otlp_http, protocol="http/protobuf", service=service
    )
    wait_until(
        lambda: len(jaeger.query.traces(service)) >= 2,
        timeout=30,
        what=f"sampled traces in Jaeger\n{collector.process.log_tail()}",
    )
    # All three traces were decided together, one decision_wait after they arrived; give a
    # wrongly kept clean trace the time to show up anyway.
    time.sleep(3)
    kept = wire_calls(jaeger.query.otlp_spans(service))
    assert [c.attr("retry.outcome") for c in kept] == ["success", "exhausted"]
    check_call(kept[0], EXPECTED["retried"], service=service)
    check_call(kept[1], EXPECTED["exhausted"], service=service)
