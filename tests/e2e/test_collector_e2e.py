"""collector-config.yaml and its tail-sampling variant, checked by a real collector binary.

The Jaeger v2 binary is an OpenTelemetry Collector distribution (collector v0.140.0, contrib
v0.140.1 components — the versions of the pinned contrib image in examples/compose). It knows
every component the configs use except the contrib ``health_check`` extension, so these tests:

- ``validate`` each config with that extension left out (and prove ``validate`` does catch a
  broken pipeline);
- run the config for real on loopback ports: OTLP in over HTTP, traces out over OTLP/gRPC to a
  real Jaeger and to a stand-in for Tempo (the test OTLP receiver), metrics out through the
  prometheus exporter, whose names the Grafana dashboard must match;
- run the tail-sampling variant and check which traces it keeps;
- evaluate every query of the Grafana dashboard with Prometheus's own engine (``promql.py``) over
  what the prometheus exporter serves: each returns data from the design's metrics, and the
  library's metrics give the same answers whatever ``OTEL_SEMCONV_STABILITY_OPT_IN`` says.
"""

from __future__ import annotations

import copy
import math
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
from .promql import Answer, Scrape, evaluate, grafana_to_promql, zero_baseline
from .span_tree import EXPECTED, OLD_NAME, check_call, wire_calls
from .viewing import (
    COMPOSE_DIR,
    dashboard_promql,
    dashboard_queries,
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

    def scrape_text(self) -> str:
        status, body = http_get(f"http://127.0.0.1:{self.ports[8889]}/metrics")
        assert status == 200, status
        return body.decode("utf-8")

    def scrape(self) -> dict[str, list[dict[str, str]]]:
        return parse_prometheus_text(self.scrape_text())


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
    library = {metric_family(n) for n in ours if n.startswith(("gen_ai_", "openai_retry_"))}
    shown = {metric_family(n) for n in dashboard_names}
    assert library <= shown, f"metrics the dashboard does not know: {library - shown}"
    assert not [n for n in ours if OLD_NAME.match(n)], sorted(ours)


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
    failed = [
        s for s in scraped["openai_retry_client_failed_attempts_total"] if s["job"] == service
    ]
    assert [(s.get("error_type"), s.get("http_response_status_code")) for s in failed] == [
        ("openai.RateLimitError", "429")
    ]
    paced = scraped["openai_retry_client_rate_limiting_requests_total"]
    assert {s.get("openai_retry_rate_limiting_result") for s in paced if s["job"] == service} == {
        "acquired",
        "delayed",
    }
    modalities = scraped["gen_ai_client_inference_usage_input_tokens_total"]
    assert {s.get("gen_ai_token_modality") for s in modalities if s["job"] == service} == {"text"}
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
    assert [c.attr("openai_retry.outcome") for c in kept] == ["success", "exhausted"]
    check_call(kept[0], EXPECTED["retried"], service=service)
    check_call(kept[1], EXPECTED["exhausted"], service=service)


# ---- the dashboard's PromQL, evaluated ----------------------------------------------------------

WINDOW = "2m"
"""``$__rate_interval`` and ``$__range``: the two scrapes below are 60 s apart inside it."""
METRIC_MODES = {
    "default": "",
    "latest": "gen_ai_latest_experimental",
    "dup": "gen_ai_latest_experimental/dup",
}
NO_DATA_FROM_THE_FAKE_SERVER = "Cache and reasoning tokens per second"
"""Its usage reports 0 cached and 0 reasoning tokens, and 0 is not counted."""
OLDER_NAMES_ONLY = "Tokens per call by gen_ai.token.type (mean; p95 from the older histogram) [B]"
"""A token distribution per call: the current names are counters and have none."""
SAME_IN_EVERY_MODE = (
    "Calls per second by error.type",
    "Tokens per second by gen_ai.token.type",
    "Tokens per call by gen_ai.token.type (mean; p95 from the older histogram) [A]",
    "Failed attempts per second by error.type and status",
    "Attempts per logical call",
    "Failed attempts [A]",
    "Retries per call",
)
"""Panels counting calls, tokens and attempts: a run in any mode must read the same (under /dup,
nothing counted twice). Durations differ from run to run, so only their presence is compared."""


def wait_for_job(collector: Collector, job: str) -> None:
    wait_until(
        lambda: any(
            labels.get("job") == job
            for labels in collector.scrape().get("openai_retry_client_call_retries_count", [])
        ),
        timeout=30,
        what=f"the calls of {job} on the prometheus exporter",
    )


def evaluate_dashboard(binary: Path, text: str, service: str) -> dict[str, Answer]:
    """Every dashboard query, as Grafana sends it for ``service``, over the exposition ``text``
    scraped now and an all-zero scrape of the same series 60 s before."""
    now = float(int(time.time()))
    scrapes = [Scrape(now - 60, zero_baseline(text)), Scrape(now, text)]
    queries = dashboard_queries(load_dashboard())
    exprs = [grafana_to_promql(e, service=service, window=WINDOW) for _, e in queries]
    answers = evaluate(binary, scrapes, exprs, at=now)
    for (where, _), answer in zip(queries, answers, strict=True):
        assert not answer.error, (where, answer.expr, answer.error)
    return {where: answer for (where, _), answer in zip(queries, answers, strict=True)}


def test_every_dashboard_query_reads_the_design_metrics(
    run_collector: StartCollector, promql_eval: Path
) -> None:
    """With every metric of the design present once (both GenAI generations and ours), every
    panel query and template variable parses and returns a number."""
    collector = run_collector("collector-config.yaml")
    service = "e2e-dashboard-contract"
    run_scenario(
        "contract-metrics",
        endpoint=collector.otlp_http,
        protocol="http/protobuf",
        service=service,
        metrics_exporter="otlp",
    )
    wait_for_job(collector, service)
    answers = evaluate_dashboard(promql_eval, collector.scrape_text(), service)
    empty = [where for where, answer in answers.items() if not answer.values]
    assert not empty, f"dashboard queries without data: {empty}"
    # A few values, as the contract recorded them: one retried call, 12 + 7 tokens.
    assert answers["Attempts per logical call [A]"].values == [2.0]
    assert answers["Failed attempts [A]"].values == [0.5]
    retried = answers["Retries per call (p50 / p95 / max bucket) and calls retried [D]"]
    assert retried.values == [1.0], 'le="0" is stored as le="0.0" by Prometheus 3'
    by_result = answers["Paced attempts per second by result [A]"].samples
    assert {s.labels["openai_retry_rate_limiting_result"] for s in by_result} == {
        "acquired",
        "delayed",
    }


def test_dashboard_reads_the_same_in_every_metric_mode(
    run_collector: StartCollector, promql_eval: Path
) -> None:
    """The same calls, made by the library under each OTEL_SEMCONV_STABILITY_OPT_IN setting:
    every panel has data (but the two the calls cannot fill), the counting panels agree across
    modes, and a fleet mixing the three modes adds up."""
    collector = run_collector("collector-config.yaml")
    jobs = {mode: f"e2e-dashboard-{mode}" for mode in METRIC_MODES}
    for mode, setting in METRIC_MODES.items():
        run_scenario(
            "paced",  # first: once an engagement's trial has run, pacing may stand aside
            "clean",
            "retried",
            "exhausted",
            "stream",
            endpoint=collector.otlp_http,
            protocol="http/protobuf",
            service=jobs[mode],
            metrics_exporter="otlp",
            extra_env={"OTEL_SEMCONV_STABILITY_OPT_IN": setting} if setting else None,
        )
    for job in jobs.values():
        wait_for_job(collector, job)
    text = collector.scrape_text()
    by_mode = {mode: evaluate_dashboard(promql_eval, text, job) for mode, job in jobs.items()}

    for mode, answers in by_mode.items():
        for where, answer in answers.items():
            if where.startswith(NO_DATA_FROM_THE_FAKE_SERVER) or (
                mode == "latest" and where == OLDER_NAMES_ONLY
            ):
                assert not answer.values, (mode, where, answer.samples)
            else:
                assert answer.values, f"{mode}: no data for {where}: {answer.expr}"

    def readings(answers: dict[str, Answer], where: str) -> list[tuple[str, float]]:
        return sorted(
            (str(sorted(s.labels.items())), s.value)
            for key, answer in answers.items()
            if key.startswith(where)
            for s in answer.samples
        )

    for where in SAME_IN_EVERY_MODE:
        default = readings(by_mode["default"], where)
        assert default, where
        for mode in ("latest", "dup"):
            other = readings(by_mode[mode], where)
            assert [labels for labels, _ in other] == [labels for labels, _ in default], (
                mode,
                where,
            )
            for (_, a), (_, b) in zip(default, other, strict=True):
                assert math.isclose(a, b, rel_tol=1e-9), (mode, where, default, other)

    calls = "Calls per second by error.type [A]"
    fleet = evaluate_dashboard(promql_eval, text, "|".join(jobs.values()))[calls]
    single = {s.labels["error_type"]: s.value for s in by_mode["dup"][calls].samples}
    assert {s.labels["error_type"]: s.value for s in fleet.samples} == pytest.approx(
        {error_type: 3 * value for error_type, value in single.items()}
    ), "a fleet mixing the modes counts every call once"
