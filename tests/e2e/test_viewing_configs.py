"""The viewing configuration, checked without running it: collector configs, the compose stack,
Grafana provisioning, the dashboard and the documented queries all parse and agree.

What a real collector says about the collector configs is in test_collector_e2e.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .harness import REPO_ROOT, load_yaml
from .span_tree import OLD_NAME
from .viewing import (
    COLLECTOR_CONFIGS,
    COMPOSE_DIR,
    DASHBOARD,
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    DOCS,
    SECTIONS,
    ComposeService,
    compose_services,
    dashboard_panels,
    dashboard_promql,
    load_dashboard,
    metric_family,
    pipeline_references,
    promql_label_names,
    promql_metric_names,
    resolve_env_defaults,
)

TRACEQL_RETRIED = (
    '{ span.gen_ai.operation.name = "chat" } >> { span.http.response.status_code = 429 }'
)
JAEGER_TAG_EXHAUSTED = "openai_retry.outcome=exhausted"
TRACEQL_EXHAUSTED = '{ span.openai_retry.outcome = "exhausted" }'

# What the collector's prometheus exporter (translation_strategy UnderscoreEscapingWithSuffixes)
# makes of the design's metrics; test_collector_e2e.py checks it against a real exporter.
# GenAI metrics in both generations (OTEL_SEMCONV_STABILITY_OPT_IN), as OTel name -> Prometheus.
OLDER_GENAI = {
    "gen_ai.client.operation.duration": "gen_ai_client_operation_duration_seconds",
    "gen_ai.client.token.usage": "gen_ai_client_token_usage",
    "gen_ai.client.operation.time_to_first_chunk": (
        "gen_ai_client_operation_time_to_first_chunk_seconds"
    ),
}
CURRENT_GENAI = {
    "gen_ai.client.inference.duration": "gen_ai_client_inference_duration_seconds",
    "gen_ai.client.inference.time_to_first_chunk": (
        "gen_ai_client_inference_time_to_first_chunk_seconds"
    ),
    "gen_ai.client.inference.usage.input_tokens": (
        "gen_ai_client_inference_usage_input_tokens_total"
    ),
    "gen_ai.client.inference.usage.output_tokens": (
        "gen_ai_client_inference_usage_output_tokens_total"
    ),
    "gen_ai.client.inference.usage.cache_read.input_tokens": (
        "gen_ai_client_inference_usage_cache_read_input_tokens_total"
    ),
    "gen_ai.client.inference.usage.cache_write.input_tokens": (
        "gen_ai_client_inference_usage_cache_write_input_tokens_total"
    ),
    "gen_ai.client.inference.usage.reasoning.output_tokens": (
        "gen_ai_client_inference_usage_reasoning_output_tokens_total"
    ),
}
OURS = {
    "openai_retry.client.call.retries": "openai_retry_client_call_retries",
    "openai_retry.client.call.retry_delay": "openai_retry_client_call_retry_delay_seconds",
    "openai_retry.client.failed_attempts": "openai_retry_client_failed_attempts_total",
    "openai_retry.client.rate_limiting.time_in_queue": (
        "openai_retry_client_rate_limiting_time_in_queue_seconds"
    ),
    "openai_retry.client.rate_limiting.requests": (
        "openai_retry_client_rate_limiting_requests_total"
    ),
}
PROMETHEUS_NAMES = {**OLDER_GENAI, **CURRENT_GENAI, **OURS}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DASHBOARD_LABELS = {
    "le",
    "job",
    "error_type",
    "http_response_status_code",
    "gen_ai_token_type",
    "gen_ai_request_model",
    "gen_ai_operation_name",
    "openai_retry_rate_limiting_result",
}
"""The labels the dashboard may query: low-cardinality attributes only."""

VIEWING_FILES = [
    *COLLECTOR_CONFIGS,
    DASHBOARD,
    DOCS,
    REPO_ROOT / "docs" / "langchain.md",
    REPO_ROOT / "README.md",
    REPO_ROOT / "examples" / "demo.py",
    REPO_ROOT / "examples" / "langchain_chain.py",
    COMPOSE_DIR / "traffic.py",
]


def known_prometheus_series() -> set[str]:
    names = set()
    for prom in PROMETHEUS_NAMES.values():
        if prom.endswith("_total"):
            names.add(prom)
        else:
            names |= {prom + suffix for suffix in HISTOGRAM_SUFFIXES}
    return names


def host_port(address: str) -> tuple[str, int]:
    """``http://tempo:3200`` or ``tempo:4317`` -> ("tempo", 3200 / 4317)."""
    address = resolve_env_defaults(address)
    if "://" not in address:
        address = "//" + address
    parts = urlsplit(address)
    assert parts.hostname and parts.port, address
    return parts.hostname, parts.port


# ---- collector configs --------------------------------------------------------------------------


@pytest.fixture(params=COLLECTOR_CONFIGS, ids=lambda p: p.name)
def collector_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    path: Path = request.param
    return load_yaml(path)


def test_every_pipeline_component_is_defined(collector_config: dict[str, Any]) -> None:
    for pipeline, section, component_id in pipeline_references(collector_config):
        assert component_id in (collector_config.get(section) or {}), (
            f"pipeline {pipeline} names {section[:-1]} {component_id!r}, which is not defined"
        )
    for extension in collector_config["service"].get("extensions", []):
        assert extension in collector_config["extensions"], extension
    used = {(s, c) for _, s, c in pipeline_references(collector_config)}
    used |= {("extensions", e) for e in collector_config["service"].get("extensions", [])}
    for section in SECTIONS:
        for component_id in collector_config.get(section) or {}:
            assert (section, component_id) in used, f"{section}.{component_id} is defined, unused"


def test_pipelines_have_the_documented_shape(collector_config: dict[str, Any]) -> None:
    pipelines = collector_config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] == ["otlp"], name
        assert pipeline["processors"][0] == "memory_limiter", f"{name}: memory_limiter first"
        assert pipeline["processors"][-1] == "batch", f"{name}: batch last"
        assert "debug" in pipeline["exporters"], name
    assert set(pipelines["traces"]["exporters"]) == {"otlp/jaeger", "otlp/tempo", "debug"}
    assert set(pipelines["metrics"]["exporters"]) == {"prometheus", "debug"}
    exporters = collector_config["exporters"]
    assert host_port(exporters["otlp/jaeger"]["endpoint"]) == ("jaeger", 4317)
    assert host_port(exporters["otlp/tempo"]["endpoint"]) == ("tempo", 4317)
    assert exporters["prometheus"]["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    assert "logging" not in exporters, "the logging exporter is gone; debug replaces it"
    assert collector_config["service"]["extensions"] == ["health_check"]


def test_otlp_receivers_bind_every_interface(collector_config: dict[str, Any]) -> None:
    protocols = collector_config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_tail_sampling_keeps_errors_retries_and_a_fraction() -> None:
    config = load_yaml(REPO_ROOT / "collector-config.tail-sampling.yaml")
    traces = config["service"]["pipelines"]["traces"]["processors"]
    assert traces == ["memory_limiter", "tail_sampling", "batch"]
    assert "tail_sampling" not in config["service"]["pipelines"]["metrics"]["processors"]
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    retried = policies["numeric_attribute"]["numeric_attribute"]
    assert retried["key"] == "openai_retry.attempts" and retried["min_value"] == 2
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100
    # Apart from the sampler, the variant is the same configuration.
    plain = load_yaml(REPO_ROOT / "collector-config.yaml")
    del config["processors"]["tail_sampling"]
    config["service"]["pipelines"]["traces"]["processors"].remove("tail_sampling")
    assert config == plain


# ---- compose stack ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, ComposeService]:
    return compose_services()


def test_compose_runs_the_documented_services(services: dict[str, ComposeService]) -> None:
    assert set(services) == {"collector", "jaeger", "tempo", "prometheus", "grafana"}
    images = {name: s.spec["image"] for name, s in services.items()}
    for name, image in images.items():
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: image {image!r} is not pinned"
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin an exact version, not {tag!r}"
    assert images["collector"].startswith("otel/opentelemetry-collector-contrib:")
    assert images["jaeger"].startswith("jaegertracing/jaeger:2.")


def test_compose_references_exist(services: dict[str, ComposeService]) -> None:
    for service in services.values():
        for dependency in service.spec.get("depends_on") or []:
            assert dependency in services, f"{service.name} depends on unknown {dependency!r}"
        for source, _ in service.mounts():
            assert source.exists(), f"{service.name} mounts {source}, which does not exist"
    published = [port for s in services.values() for port in s.published_host_ports]
    assert len(published) == len(set(published)), f"a host port is published twice: {published}"


def test_collector_mounts_the_top_level_config(services: dict[str, ComposeService]) -> None:
    collector = services["collector"]
    command = " ".join(collector.spec["command"])
    config_path = re.search(r"--config=(\S+)", command)
    assert config_path, command
    assert collector.mounted_file(config_path.group(1)) == REPO_ROOT / "collector-config.yaml"


def addresses_in_configs(services: dict[str, ComposeService]) -> list[tuple[str, str, int]]:
    """(where, host, port) for every address one service uses to reach another."""
    found = []
    for path in [
        REPO_ROOT / "collector-config.yaml",
        REPO_ROOT / "collector-config.tail-sampling.yaml",
    ]:
        for exporter_id, exporter in load_yaml(path)["exporters"].items():
            endpoint = exporter.get("endpoint", "")
            if endpoint and not endpoint.startswith("0.0.0.0"):
                found.append((f"{path.name} {exporter_id}", *host_port(endpoint)))
    prometheus = services["prometheus"]
    prometheus_config = load_yaml(prometheus.mounted_file("/etc/prometheus/prometheus.yml"))
    for job in prometheus_config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                found.append((f"prometheus job {job['job_name']}", *host_port(target)))
    for datasource in load_yaml(DATASOURCES)["datasources"]:
        found.append((f"grafana datasource {datasource['name']}", *host_port(datasource["url"])))
    return found


def test_addresses_name_compose_services_and_their_ports(
    services: dict[str, ComposeService],
) -> None:
    addresses = addresses_in_configs(services)
    assert len(addresses) >= 6
    for where, host, port in addresses:
        assert host in services, f"{where}: {host!r} is not a compose service"
        assert port in services[host].container_ports, (
            f"{where}: {host} does not declare port {port} (ports/expose: "
            f"{sorted(services[host].container_ports)})"
        )


def listeners(config: Any) -> list[str]:
    """Every ``endpoint`` a service configuration binds, at any depth."""
    found: list[str] = []
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "endpoint" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(listeners(value))
    elif isinstance(config, list):
        for item in config:
            found.extend(listeners(item))
    return found


def test_backends_listen_on_every_interface_and_declare_it(
    services: dict[str, ComposeService],
) -> None:
    # Tempo and the collector bind localhost unless told otherwise: useless in a container.
    tempo = services["tempo"]
    tempo_config = load_yaml(tempo.mounted_file("/etc/tempo/tempo.yaml"))
    otlp = tempo_config["distributor"]["receivers"]["otlp"]["protocols"]
    assert otlp["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert otlp["http"]["endpoint"] == "0.0.0.0:4318"
    assert tempo_config["server"]["http_listen_port"] in tempo.container_ports
    jaeger = services["jaeger"]
    jaeger_command = " ".join(jaeger.spec["command"])
    jaeger_path = re.search(r"--config=(\S+)", jaeger_command)
    assert jaeger_path, jaeger_command
    collector = services["collector"]
    collector_config = load_yaml(REPO_ROOT / "collector-config.yaml")
    jaeger_config = load_yaml(jaeger.mounted_file(jaeger_path.group(1)))
    # Listeners only: receivers, extensions, the prometheus exporter (other exporters dial out).
    for service, config in [
        (tempo, tempo_config["distributor"]),
        (jaeger, [jaeger_config["receivers"], jaeger_config["extensions"]]),
        (
            collector,
            [
                collector_config["receivers"],
                collector_config["extensions"],
                collector_config["exporters"]["prometheus"],
            ],
        ),
    ]:
        for endpoint in listeners(config):
            host, _, port = endpoint.rpartition(":")
            assert host == "0.0.0.0", f"{service.name} binds {endpoint}, unreachable from others"
            assert int(port) in service.container_ports, f"{service.name}: {port} not declared"


# ---- Grafana ------------------------------------------------------------------------------------


def test_grafana_datasources_are_provisioned() -> None:
    datasources = load_yaml(DATASOURCES)["datasources"]
    by_type = {d["type"]: d for d in datasources}
    assert set(by_type) == {"prometheus", "tempo", "jaeger"}
    uids = [d["uid"] for d in datasources]
    assert len(uids) == len(set(uids))
    assert [d["name"] for d in datasources if d.get("isDefault")] == ["Prometheus"]
    tempo_links = by_type["tempo"]["jsonData"]["tracesToMetrics"]["datasourceUid"]
    assert tempo_links in uids


def test_grafana_dashboard_is_provisioned(services: dict[str, ComposeService]) -> None:
    providers = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    grafana = services["grafana"]
    for provider in providers:
        assert grafana.mounted_file(provider["options"]["path"]) == DASHBOARD.parent
    home = grafana.spec["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert grafana.mounted_file(home) == DASHBOARD
    assert grafana.mounted_file("/etc/grafana/provisioning/datasources") == DATASOURCES.parent


def test_dashboard_queries_the_design_metrics() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    uids = {d["uid"]: d["type"] for d in load_yaml(DATASOURCES)["datasources"]}
    panel_ids = []
    for panel in dashboard_panels(dashboard):
        panel_ids.append(panel["id"])
        for ref in [
            panel.get("datasource"),
            *(t.get("datasource") for t in panel.get("targets", [])),
        ]:
            if ref is not None:
                assert uids.get(ref["uid"]) == ref["type"], (panel["title"], ref)
    assert len(panel_ids) == len(set(panel_ids))

    exprs = dashboard_promql(dashboard)
    used = set().union(*(promql_metric_names(e) for e in exprs))
    assert used <= known_prometheus_series(), used - known_prometheus_series()
    for otel_name, prom in PROMETHEUS_NAMES.items():
        assert any(name.startswith(prom) for name in used), f"no panel shows {otel_name}"
    labels = set().union(*(promql_label_names(e) for e in exprs))
    assert labels <= DASHBOARD_LABELS, labels - DASHBOARD_LABELS
    failed = [
        e
        for e in exprs
        if "openai_retry_client_failed_attempts_total" in e
        and "by (error_type, http_response_status_code)" in e
    ]
    assert failed, "openai_retry.client.failed_attempts by error.type and status code"
    paced = [e for e in exprs if "by (openai_retry_rate_limiting_result)" in e]
    assert paced, "openai_retry.client.rate_limiting.requests by result"

    traceql = [
        t["query"]
        for p in dashboard_panels(dashboard)
        for t in p.get("targets", [])
        if t.get("queryType") == "traceql"
    ]
    assert TRACEQL_RETRIED in traceql
    assert TRACEQL_EXHAUSTED in traceql


def test_dashboard_works_in_every_metric_mode() -> None:
    """Every panel that shows a GenAI metric the older names also have reads both generations
    (OTEL_SEMCONV_STABILITY_OPT_IN unset, gen_ai_latest_experimental, .../dup), in one query:
    the older series of a service and operation, ``or`` the current ones, so /dup counts once.
    The template variables come from our own per-call metric, recorded in every mode."""
    dashboard = load_dashboard()
    pairs = [
        ("gen_ai_client_operation_duration_seconds", "gen_ai_client_inference_duration_seconds"),
        (
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "gen_ai_client_inference_time_to_first_chunk_seconds",
        ),
        ("gen_ai_client_token_usage_sum", "gen_ai_client_inference_usage_input_tokens_total"),
        ("gen_ai_client_token_usage_sum", "gen_ai_client_inference_usage_output_tokens_total"),
    ]
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr is None:
                continue
            names = {metric_family(n) for n in promql_metric_names(expr)}
            for older, current in pairs:
                older_family, current_family = metric_family(older), metric_family(current)
                if older_family in names or current_family in names:
                    p50_of_tokens = older == "gen_ai_client_token_usage_sum" and "le" in (
                        promql_label_names(expr)
                    )
                    if p50_of_tokens:
                        continue  # a distribution only the older histogram has; the mean is below
                    assert older_family in names and current_family in names, (
                        panel["title"],
                        expr,
                    )
                    assert " or " in expr, (panel["title"], expr)
                    assert "gen_ai_operation_name" in promql_label_names(expr), (
                        f"{panel['title']}: choose per (job, gen_ai_operation_name), so a fleet "
                        "mixing modes, and embeddings under the current names, add up"
                    )
    variables = [e for e in dashboard_promql(dashboard) if e.startswith("label_values(")]
    assert variables and all(
        promql_metric_names(v) == {"openai_retry_client_call_retries_count"} for v in variables
    ), variables
    used = set().union(*(promql_metric_names(e) for e in dashboard_promql(dashboard)))
    families = {metric_family(n) for n in used}
    for prom in PROMETHEUS_NAMES.values():
        assert prom in families, f"the dashboard does not show {prom}"


@pytest.mark.parametrize("path", VIEWING_FILES, ids=lambda p: p.name)
def test_no_bare_retry_names_remain(path: Path) -> None:
    """The old ``retry.*`` attributes and metrics are gone from every config, dashboard, doc
    and example (CHANGELOG history and docs/research/ keep them, as history)."""
    text = path.read_text(encoding="utf-8")
    found = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        for match in OLD_NAME.finditer(line)
        if not line[match.end() :].startswith("`")  # "bare namespaces such as `retry.`"
    ]
    assert not found, f"{path.name} still names old retry.* names:\n" + "\n".join(found)


def test_docs_give_the_queries_and_the_right_addresses(
    services: dict[str, ComposeService],
) -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert TRACEQL_RETRIED in text
    assert JAEGER_TAG_EXHAUSTED in text
    assert TRACEQL_EXHAUSTED in text
    assert "OTEL_SEMCONV_STABILITY_OPT_IN" in text
    for otel_name, prom in PROMETHEUS_NAMES.items():
        assert f"`{otel_name}`" in text and prom in text, f"docs/viewing.md: {otel_name}"
    assert "docker compose" in text
    published = {port for s in services.values() for port in s.published_host_ports}
    for port in re.findall(r"localhost:(\d+)", text):
        assert int(port) in published, f"docs/viewing.md points at localhost:{port}, not published"
    for name in re.findall(r"`(collector-config[\w.-]*\.yaml)`", text):
        assert (REPO_ROOT / name).is_file(), name
    for relative in re.findall(r"\]\(\.\./([^)#]+)", text):
        assert (REPO_ROOT / relative).exists(), f"docs/viewing.md links to missing {relative}"
    assert str(COMPOSE_DIR.relative_to(REPO_ROOT)) in text
