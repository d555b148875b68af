"""Running the pieces of the end-to-end tests: the scenario process, a Jaeger (or any collector
configuration run by the Jaeger binary) on free loopback ports, and Jaeger's query API."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from ..helpers import clean_environment, last_json_line, run_python
from .otlp_receiver import WireSpan, wire_spans

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-jaeger.sh"
SCENARIO_APP = Path(__file__).with_name("scenario_app.py")
LOOPBACK = "127.0.0.1"

GO_MISSING = 3
"""Exit status of scripts/build-jaeger.sh when Go is not installed."""

# The tests' retry policy: 3 attempts, short backoffs, so a scenario takes well under a second.
POLICY_ENV = {
    "OTEL_OPENAI_RETRY_MAX_ATTEMPTS": "3",
    "OTEL_OPENAI_RETRY_INITIAL_WAIT": "0.01",
    "OTEL_OPENAI_RETRY_MAX_WAIT": "0.05",
}


class JaegerUnavailable(Exception):
    """Go is not installed, so the Jaeger binary cannot be built."""


def build_jaeger(timeout: float = 3600) -> Path:
    """The cached Jaeger binary, building it first if needed (see scripts/build-jaeger.sh)."""
    if shutil.which("bash") is None:
        raise JaegerUnavailable("bash is needed to run scripts/build-jaeger.sh")
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO_ROOT,
    )
    if done.returncode == GO_MISSING:
        raise JaegerUnavailable(done.stderr.strip())
    assert done.returncode == 0, f"scripts/build-jaeger.sh failed:\n{done.stderr}"
    binary = Path(done.stdout.strip().splitlines()[-1])
    assert binary.is_file(), binary
    return binary


def jaeger_is_cached() -> bool:
    """Whether build_jaeger() will return at once (same places the build script looks)."""
    custom = os.environ.get("JAEGER_CACHE_DIR")
    if custom:
        return (Path(custom) / "jaeger").is_file()
    return any((REPO_ROOT / ".cache" / "jaeger").glob("*/jaeger"))


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together while choosing, so they differ)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(sock.getsockname()[1])
        return ports


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        loaded = yaml.safe_load(f)
    assert isinstance(loaded, dict), f"{path} is not a YAML mapping"
    return loaded


def run_scenario(
    *names: str,
    endpoint: str,
    protocol: str,
    service: str,
    metrics_exporter: str = "none",
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run scenario_app.py in a fresh process, configured only by environment variables."""
    env = {
        **POLICY_ENV,
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_METRICS_EXPORTER": metrics_exporter,
        "OTEL_LOGS_EXPORTER": "none",
        # Export quickly; shutdown flushes anyway.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "NO_PROXY": "*",
        **(extra_env or {}),
    }
    done = run_python(str(SCENARIO_APP), *names, env=env, cwd=REPO_ROOT)
    # An exporter that could not deliver logs an error but the process still exits 0.
    for line in done.stderr.splitlines():
        assert "Failed to export" not in line and "Traceback" not in line, done.stderr
    result: dict[str, Any] = last_json_line(done)
    result["stderr"] = done.stderr
    return result


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET over loopback, ignoring any proxy settings."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) == 0


class CollectorProcess:
    """The Jaeger binary (an OpenTelemetry Collector distribution) running one configuration."""

    def __init__(
        self,
        binary: Path,
        config: Mapping[str, Any],
        workdir: Path,
        name: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.name = name
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        self._env = {**clean_environment(), **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, ready_ports: list[int], timeout: float = 30.0) -> CollectorProcess:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [str(self.binary), f"--config={self.config_path}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self.config_path.parent,
            )
        deadline = time.monotonic() + timeout
        while not all(port_open(p) for p in ready_ports):
            if self._process.poll() is not None:
                raise AssertionError(f"{self.name} exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"{self.name} not listening after {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def rebind_to_loopback(config: dict[str, Any]) -> dict[int, int]:
    """Move every ``endpoint: 0.0.0.0:PORT`` in a collector config to a free loopback port.

    Returns the map from the configured port to the port actually used. Tests never listen on
    anything but loopback, and never on a fixed port another run could hold.
    """
    found: list[tuple[dict[str, Any], str, int]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "endpoint" and isinstance(value, str) and value.startswith("0.0.0.0:"):
                    found.append((node, key, int(value.rsplit(":", 1)[1])))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(config)
    ports = dict(zip([port for _, _, port in found], free_ports(len(found)), strict=True))
    for node, key, port in found:
        node[key] = f"{LOOPBACK}:{ports[port]}"
    assert "0.0.0.0" not in json.dumps(config), "a listener still binds every interface"
    return ports


@contextlib.contextmanager
def running(process: CollectorProcess, ready_ports: list[int]) -> Iterator[CollectorProcess]:
    process.start(ready_ports)
    try:
        yield process
    finally:
        process.stop()


class JaegerQuery:
    """Jaeger's HTTP query API: the v1 JSON API the UI uses, and the OTLP-shaped API v3."""

    def __init__(self, port: int) -> None:
        self.base = f"http://{LOOPBACK}:{port}"

    def _get_json(self, path: str, params: Mapping[str, str]) -> tuple[int, Any]:
        status, body = http_get(f"{self.base}{path}?{urllib.parse.urlencode(params)}")
        return status, (json.loads(body) if body else None)

    def services(self) -> list[str]:
        status, doc = self._get_json("/api/services", {})
        assert status == 200, (status, doc)
        return list(doc.get("data") or [])

    def traces(self, service: str, tags: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """``/api/traces?service=…[&tags={…}]``: what a search in the Jaeger UI returns."""
        params = {"service": service, "limit": "100", "lookback": "1h"}
        if tags:
            params["tags"] = json.dumps(dict(tags))
        status, doc = self._get_json("/api/traces", params)
        assert status == 200, (status, doc)
        assert not doc.get("errors"), doc["errors"]
        return list(doc.get("data") or [])

    def otlp_spans(self, service: str) -> list[WireSpan]:
        """``/api/v3/traces``: the same traces as OTLP, turned into WireSpans."""
        now = datetime.now(timezone.utc)
        params = {
            "query.service_name": service,
            "query.start_time_min": (now - timedelta(hours=1)).isoformat(),
            "query.start_time_max": (now + timedelta(minutes=1)).isoformat(),
            "query.num_traces": "100",
        }
        status, doc = self._get_json("/api/v3/traces", params)
        if status == 404:
            return []
        assert status == 200, (status, doc)
        return wire_spans(otlp_json_traces(doc["result"]).resource_spans)


def otlp_json_traces(doc: Mapping[str, Any]) -> TracesData:
    """OTLP/JSON (hex trace and span ids, as the OTLP spec and Jaeger write them) to protobuf.

    protobuf's own JSON mapping reads ``bytes`` fields as base64, so the ids are converted first.
    """

    def b64(hex_id: str) -> str:
        return base64.b64encode(bytes.fromhex(hex_id)).decode("ascii")

    converted = json.loads(json.dumps(doc))
    for resource_spans in converted.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = b64(span[key])
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        if link.get(key):
                            link[key] = b64(link[key])
    message = TracesData()
    json_format.ParseDict(converted, message, ignore_unknown_fields=True)
    return message
