"""Evaluating the dashboard's PromQL with the Prometheus query engine itself.

``promql_eval/`` is a small Go program on ``github.com/prometheus/prometheus`` v0.307.3, the
module of the pinned ``prom/prometheus:v3.7.3`` image: it loads Prometheus text expositions
(what the collector's prometheus exporter serves) with Prometheus's own scrape parser into a TSDB,
and runs instant queries with Prometheus's engine. So ``or`` matching, ``label_replace``,
``histogram_quantile`` and Prometheus 3's ``le`` normalisation (``le="0"`` is stored as
``"0.0"``) behave here exactly as they do behind Grafana.

It is built with Go from the module proxy like the Jaeger binary (once, into
``.cache/promql-eval/<hash of its sources>/``); without Go the tests that need it skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .harness import REPO_ROOT

SOURCE_DIR = Path(__file__).with_name("promql_eval")
SOURCES = ("go.mod", "go.sum", "main.go")


class GoUnavailable(Exception):
    """Go is not installed, so the evaluator cannot be built."""


def _cache_dir() -> Path:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((SOURCE_DIR / name).read_bytes())
    return REPO_ROOT / ".cache" / "promql-eval" / digest.hexdigest()[:16]


def is_cached() -> bool:
    return (_cache_dir() / "promql-eval").is_file()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(timeout: float = 3600) -> Path:
    """The cached evaluator, building it first if needed (one build at a time)."""
    cache = _cache_dir()
    binary = cache / "promql-eval"
    if binary.is_file():
        return binary
    go = shutil.which("go")
    if go is None:
        raise GoUnavailable("'go' is not on PATH")
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        if binary.is_file():
            return binary
        partial = cache / "promql-eval.partial"
        env = {**os.environ, "GOFLAGS": "-mod=readonly"}
        done = subprocess.run(
            [go, "build", "-o", str(partial), "."],
            cwd=SOURCE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"building tests/e2e/promql_eval failed:\n{done.stderr}"
        partial.replace(binary)
    return binary


@dataclass(frozen=True)
class Scrape:
    time: float
    """Unix seconds."""
    text: str
    """Prometheus text exposition."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Answer:
    expr: str
    error: str
    samples: list[Sample]

    @property
    def values(self) -> list[float]:
        """The sample values that are numbers (``histogram_quantile`` of nothing is NaN)."""
        return [s.value for s in self.samples if not math.isnan(s.value)]


def evaluate(
    binary: Path, scrapes: Sequence[Scrape], exprs: Sequence[str], at: float
) -> list[Answer]:
    """Every expression as an instant query at ``at``, over the scrapes."""
    request = {
        "scrapes": [{"time": s.time, "text": s.text} for s in scrapes],
        "queries": [{"id": str(i), "expr": e, "time": at} for i, e in enumerate(exprs)],
    }
    done = subprocess.run(
        [str(binary)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    return [
        Answer(
            expr,
            result["error"],
            [Sample(s["metric"], float(s["value"])) for s in result["samples"]],
        )
        for expr, result in zip(exprs, results, strict=True)
    ]


def zero_baseline(text: str) -> str:
    """The same exposition with every value 0: the scrape before any call, so that ``rate`` and
    ``increase`` see each counter and histogram series go from 0 to its value."""
    lines = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            lines.append(line)
            continue
        brace = line.rfind("}")  # label values may hold spaces, never after the last brace
        series = line[: brace + 1] if brace >= 0 else line.split()[0]
        lines.append(f"{series} 0")
    return "\n".join(lines) + "\n"


_LABEL_VALUES = re.compile(r"^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*(\w+)\s*\)$")


def grafana_to_promql(expr: str, *, service: str, window: str) -> str:
    """A dashboard query as Grafana sends it: variables replaced (``$model`` = All), and a
    ``label_values(metric, label)`` variable query as the series it lists."""
    variable = _LABEL_VALUES.match(expr)
    if variable:
        metric, label = variable.groups()
        return f'group by ({label}) ({metric}{{job=~"{service}"}})'
    return (
        expr.replace("$service", service)
        .replace("$model", ".*")
        .replace("$__rate_interval", window)
        .replace("$__range", window)
    )
