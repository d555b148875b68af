"""The Jaeger UI of the e2e Jaeger: its assets, a Jaeger that serves them, and a trace's page as
headless Chromium shows it (used by test_jaeger_ui.py and scripts/screenshot.py).

The Jaeger binary built from the Go module proxy embeds no UI, only a placeholder page; the real
UI's build output is committed as third_party/jaeger-ui/*.tar.xz (scripts/build-jaeger-ui.sh says
why and how it is made), unpacked once into .cache/jaeger-ui/<version>/ and served by Jaeger from
there (``extensions.jaeger_query.ui.assets_path``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .browser import Browser
from .harness import (
    REPO_ROOT,
    CollectorProcess,
    JaegerQuery,
    http_get,
    load_yaml,
    rebind_to_loopback,
    wait_until,
)
from .jaeger_v1 import tags

UI_VERSION = "v1.76.0"
"""The jaeger-ui release that Jaeger v1.76.0 (v2.13.0), the binary of build-jaeger.sh, embeds."""
ARCHIVE = REPO_ROOT / "third_party" / "jaeger-ui" / f"jaeger-ui-{UI_VERSION}-assets.tar.xz"


def ui_assets() -> Path:
    """The UI's static files, unpacked from the committed archive on first use (its checksum
    checked first)."""
    target = REPO_ROOT / ".cache" / "jaeger-ui" / UI_VERSION
    if (target / "index.html").is_file():
        return target
    data = ARCHIVE.read_bytes()
    expected = ARCHIVE.with_name(ARCHIVE.name + ".sha256").read_text().split()[0]
    assert hashlib.sha256(data).hexdigest() == expected, f"{ARCHIVE} does not match its .sha256"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=target.parent))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as archive:
        for member in archive.getmembers():
            path = (staging / member.name).resolve()
            assert path.is_relative_to(staging.resolve()), f"{member.name} leaves the directory"
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                source = archive.extractfile(member)
                assert source is not None
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(source.read())
    try:
        os.replace(staging, target)
    except OSError:  # another process unpacked it first
        shutil.rmtree(staging)
    assert (target / "index.html").is_file(), target
    return target


@dataclass
class JaegerWithUI:
    """A running Jaeger serving the real UI: OTLP/HTTP in, query API and UI on ``base_url``."""

    process: CollectorProcess
    otlp_http_port: int
    ui_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def otlp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def query(self) -> JaegerQuery:
        return JaegerQuery(self.ui_port)


@contextmanager
def jaeger_with_ui(binary: Path, workdir: Path) -> Iterator[JaegerWithUI]:
    """examples/compose/jaeger.yaml on loopback ports, its UI from the unpacked assets."""
    config = load_yaml(REPO_ROOT / "examples" / "compose" / "jaeger.yaml")
    ports = rebind_to_loopback(config)
    config["service"]["telemetry"]["metrics"] = {"level": "none"}
    query = config["extensions"]["jaeger_query"]
    query["enable_tracing"] = False
    query["ui"] = {"assets_path": str(ui_assets())}
    process = CollectorProcess(binary, config, workdir, "jaeger-ui")
    process.start([ports[4317], ports[4318], ports[16686]])
    try:
        jaeger = JaegerWithUI(process, ports[4318], ports[16686])
        status, page = http_get(jaeger.base_url + "/")
        assert status == 200 and b"<title>Jaeger UI</title>" in page, (status, page[:300])
        yield jaeger
    finally:
        process.stop()


def attempt_statuses(trace: dict[str, Any]) -> list[int | None]:
    """The HTTP status of each attempt span of a ``/api/traces`` trace, in order (None for an
    attempt without an answer, such as a timeout)."""
    attempts = sorted(
        (s for s in trace["spans"] if s["operationName"].startswith("attempt ")),
        key=lambda s: s["startTime"],
    )
    statuses = [tags(s).get("http.response.status_code") for s in attempts]
    return [None if status is None else int(status[1]) for status in statuses]


def trace_with_attempts(query: JaegerQuery, service: str, statuses: Sequence[int]) -> str:
    """The ID of the one trace of ``service`` whose attempts answered ``statuses`` in order,
    once Jaeger holds all of its spans (the logical one and one per attempt)."""

    def matching() -> list[str]:
        return [
            t["traceID"]
            for t in query.traces(service)
            if len(t["spans"]) == 1 + len(statuses) and attempt_statuses(t) == list(statuses)
        ]

    wait_until(lambda: bool(matching()), timeout=30, what=f"a trace with attempts {statuses}")
    (trace_id,) = matching()
    return trace_id


@dataclass(frozen=True)
class Row:
    """One span's row in the trace page's timeline, as the page draws it."""

    service: str
    operation: str
    error_icon: bool


ROWS = """[...document.querySelectorAll('.span-row')].map(row => ({
  service: (row.querySelector('.span-svc-name')?.textContent ?? '').trim(),
  operation: (row.querySelector('.endpoint-name')?.textContent ?? '').trim(),
  error_icon: row.querySelector('.SpanBarRow--errorIcon') !== null,
}))"""


async def open_trace(
    browser: Browser, jaeger: JaegerWithUI, trace_id: str, spans: int
) -> list[Row]:
    """Open ``/trace/<id>`` and wait until the timeline lists ``spans`` rows; the rows."""
    await browser.goto(f"{jaeger.base_url}/trace/{trace_id}")
    await browser.wait_for(
        f"document.querySelectorAll('.span-row .endpoint-name').length >= {spans}",
        what=f"{spans} span rows on the trace page of {trace_id}",
    )
    return [Row(**row) for row in await browser.evaluate(ROWS)]


TAGS = """(name => {
  const detail = [...document.querySelectorAll('.detail-row')]
    .find(row => row.querySelector('h2')?.textContent.trim() === name);
  if (!detail) return null;
  const items = detail.querySelector('.AccordianKeyValues--summary')?.children ?? [];
  return Object.fromEntries([...items].map(item => [
    item.querySelector('.AccordianKeyValues--summaryLabel').textContent,
    item.lastChild.textContent,
  ]));
})"""
"""A function of a span's name: its shown details' Tags line (folded), as {key: value text}."""


async def expand(browser: Browser, operation: str) -> dict[str, str]:
    """Click a span's name, as a person opens its details; the tags its details then show."""
    name = json.dumps(operation)
    clicked = await browser.evaluate(
        "(() => { const row = [...document.querySelectorAll('.span-row')].find("
        f"r => r.querySelector('.endpoint-name')?.textContent.trim() === {name});"
        " if (!row) return false; row.querySelector('.span-name').click(); return true; })()"
    )
    assert clicked, f"no span row named {operation}"
    shown: dict[str, str] = await browser.wait_for(
        f"({TAGS})({name})", what=f"the details of {operation}"
    )
    return shown
