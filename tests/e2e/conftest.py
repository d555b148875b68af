"""Fixtures for the wire and end-to-end tests: the OTLP receiver, the Jaeger binary, a Jaeger."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import (
    REPO_ROOT,
    CollectorProcess,
    JaegerQuery,
    JaegerUnavailable,
    build_jaeger,
    jaeger_is_cached,
    load_yaml,
    rebind_to_loopback,
)
from .otlp_receiver import OTLPReceiver
from .promql import GoUnavailable
from .promql import build as build_promql_eval
from .promql import is_cached as promql_eval_is_cached

E2E_TIMEOUT_S = 180
"""Per Jaeger test once the binary exists: start, scenario, read back, with room to spare."""
FIRST_BUILD_TIMEOUT_S = 3600
"""When a binary is not cached yet (Jaeger, or the PromQL evaluator), the first e2e test that
needs it also builds it (minutes on 2 cores)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give e2e tests a timeout that fits: longer when the Jaeger build has not happened yet."""
    cached = jaeger_is_cached() and promql_eval_is_cached()
    timeout = E2E_TIMEOUT_S if cached else FIRST_BUILD_TIMEOUT_S
    for item in items:
        if (
            item.get_closest_marker("e2e") is not None
            and item.get_closest_marker("timeout") is None
        ):
            item.add_marker(pytest.mark.timeout(timeout))


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def jaeger_binary() -> Path:
    """The Jaeger v2 binary from scripts/build-jaeger.sh (built once, then reused from .cache/)."""
    try:
        return build_jaeger()
    except JaegerUnavailable as why:
        message = (
            "Jaeger end-to-end tests need Go to build Jaeger v2 from the Go module proxy "
            f"(scripts/build-jaeger.sh): {why}"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " — and CI must run them.")
        pytest.skip(message)


@pytest.fixture(scope="session")
def promql_eval() -> Path:
    """The PromQL evaluator of tests/e2e/promql_eval (Prometheus's own engine), built once."""
    try:
        return build_promql_eval()
    except GoUnavailable as why:
        message = (
            f"evaluating the dashboard's PromQL needs Go to build tests/e2e/promql_eval: {why}"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " — and CI must run it.")
        pytest.skip(message)


@dataclass
class Jaeger:
    """A running Jaeger: where to send OTLP, and its query API."""

    process: CollectorProcess
    otlp_grpc_port: int
    otlp_http_port: int
    query: JaegerQuery

    def otlp_endpoint(self, protocol: str) -> str:
        port = self.otlp_grpc_port if protocol == "grpc" else self.otlp_http_port
        return f"http://127.0.0.1:{port}"


def jaeger_config() -> tuple[dict[str, object], dict[int, int]]:
    """examples/compose/jaeger.yaml itself, moved to loopback ports, without self-telemetry."""
    config = load_yaml(REPO_ROOT / "examples" / "compose" / "jaeger.yaml")
    ports = rebind_to_loopback(config)
    config["service"]["telemetry"]["metrics"] = {"level": "none"}
    config["extensions"]["jaeger_query"]["enable_tracing"] = False
    return config, ports


@pytest.fixture(scope="module")
def jaeger(jaeger_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    config, ports = jaeger_config()
    process = CollectorProcess(jaeger_binary, config, tmp_path_factory.mktemp("jaeger"), "jaeger")
    process.start([ports[4317], ports[4318], ports[16686]])
    try:
        yield Jaeger(process, ports[4317], ports[4318], JaegerQuery(ports[16686]))
    finally:
        process.stop()
