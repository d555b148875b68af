"""Reading the viewing configuration: collector configs, the compose stack, Grafana provisioning."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import REPO_ROOT, load_yaml

COLLECTOR_CONFIGS = [
    REPO_ROOT / "collector-config.yaml",
    REPO_ROOT / "collector-config.tail-sampling.yaml",
]
COMPOSE_DIR = REPO_ROOT / "examples" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
DATASOURCES = COMPOSE_DIR / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = COMPOSE_DIR / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARD = COMPOSE_DIR / "grafana" / "dashboards" / "otel-openai-retry.json"
DOCS = REPO_ROOT / "docs" / "viewing.md"

SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
_ENV_DEFAULT = re.compile(r"\$\{env:[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}")


def resolve_env_defaults(value: str) -> str:
    """``${env:VAR:-default}`` as the collector resolves it when VAR is unset."""
    return _ENV_DEFAULT.sub(lambda m: m.group(1), value)


def component_type(component_id: str) -> str:
    """``otlp/jaeger`` -> ``otlp``: the part before the slash names the component's type."""
    return component_id.split("/", 1)[0]


def pipeline_references(config: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(pipeline, section, component id) for every component a pipeline names."""
    for name, pipeline in (config.get("service", {}).get("pipelines") or {}).items():
        for section in ("receivers", "processors", "exporters"):
            for component_id in pipeline.get(section) or []:
                yield name, section, component_id


def strip_components(
    config: dict[str, Any], supported: dict[str, set[str]]
) -> list[tuple[str, str]]:
    """Remove components whose type a distribution lacks, and every reference to them."""
    removed: list[tuple[str, str]] = []
    for section in SECTIONS:
        for component_id in list(config.get(section) or {}):
            if component_type(component_id) not in supported.get(section, set()):
                del config[section][component_id]
                removed.append((section, component_id))
    service = config.get("service", {})
    gone = {component_id for _, component_id in removed}
    if "extensions" in service:
        service["extensions"] = [e for e in service["extensions"] if e not in gone]
    for pipeline in (service.get("pipelines") or {}).values():
        for section in ("receivers", "processors", "exporters"):
            if section in pipeline:
                pipeline[section] = [c for c in pipeline[section] if c not in gone]
    return removed


@dataclass(frozen=True)
class ComposeService:
    name: str
    spec: dict[str, Any]

    @property
    def container_ports(self) -> set[int]:
        """Ports the service listens on, as the compose file declares them (ports and expose)."""
        ports = {int(str(p).split(":")[-1].split("/")[0]) for p in self.spec.get("ports") or []}
        ports |= {int(str(p).split("/")[0]) for p in self.spec.get("expose") or []}
        return ports

    @property
    def published_host_ports(self) -> list[int]:
        return [int(str(p).split(":")[0]) for p in self.spec.get("ports") or [] if ":" in str(p)]

    def mounts(self) -> Iterator[tuple[Path, str]]:
        """(host path, container path) for each bind mount (a path, not a named volume)."""
        for volume in self.spec.get("volumes") or []:
            source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/")):
                yield (COMPOSE_DIR / source).resolve(), target

    def mounted_file(self, container_path: str) -> Path:
        for source, target in self.mounts():
            if target == container_path:
                return source
            if container_path.startswith(target.rstrip("/") + "/"):
                return source / container_path[len(target.rstrip("/")) + 1 :]
        raise AssertionError(f"{self.name}: nothing is mounted at {container_path}")


def compose_services() -> dict[str, ComposeService]:
    compose = load_yaml(COMPOSE_FILE)
    return {name: ComposeService(name, spec) for name, spec in compose["services"].items()}


def load_dashboard() -> dict[str, Any]:
    with DASHBOARD.open(encoding="utf-8") as f:
        loaded = json.load(f)
    assert isinstance(loaded, dict)
    return loaded


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
    return panels


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) for every PromQL query in the dashboard: panel targets
    (``panel title [refId]``) and template variable queries (``variable name``)."""
    queries = [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and variable.get("type") == "query":
            queries.append((f"variable {variable['name']}", query))
    return queries


def dashboard_promql(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and template variable queries."""
    return [expr for _, expr in dashboard_queries(dashboard)]


_METRIC_IN_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{")
_METRIC_IN_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*(\w+)")
_LABEL_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def promql_metric_names(expr: str) -> set[str]:
    names = set(_METRIC_IN_SELECTOR.findall(expr))
    names |= {m for m, _ in _METRIC_IN_LABEL_VALUES.findall(expr)}
    return names


def promql_label_names(expr: str) -> set[str]:
    labels = set(_LABEL_MATCHER.findall(expr))
    for group in _GROUPING.findall(expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    labels |= {label for _, label in _METRIC_IN_LABEL_VALUES.findall(expr)}
    return labels


def metric_family(name: str) -> str:
    """A histogram's series (``x_bucket``, ``x_sum``, ``x_count``) belong to family ``x``."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_prometheus_text(text: str) -> dict[str, list[dict[str, str]]]:
    """Prometheus text exposition: metric name -> the label sets of its samples."""
    samples: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s", line)
        assert match, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        samples.setdefault(match.group(1), []).append(labels)
    return samples
