"""``make matrix``: the test suite under the dependency versions ``pyproject.toml`` admits.

Every lower bound in ``pyproject.toml`` must be a version CI has run, not a guess (design.md,
"Core dependencies"), and a floor is only as true as the oldest resolution that was tested. So
each cell here is resolved afresh by uv — the lowest version of every direct dependency
(``--resolution lowest-direct``) or the newest of everything — for one Python and, where named,
one openai major, installed into a virtualenv of its own under ``.cache/matrix/``, and a part of
the suite runs there. The table at the end (resolution, Python, openai: passed, failed) is
what a release note quotes.

    python scripts/matrix.py                # every cell (tens of minutes on 2 cores)
    python scripts/matrix.py --ci           # CI's share: lowest-direct, this Python, the retry
                                            # scenarios
    python scripts/matrix.py --only lowest  # the cells whose name contains "lowest"
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "matrix"
EXTRAS = ("test", "langchain")

CORE = ("-m", "not slow")
"""The suite's inner loop: everything but the end-to-end, chaos and differential runs."""
RETRY = (
    "tests/test_retry_loop.py",
    "tests/test_retry_stops.py",
    "tests/test_streams.py",
    "tests/test_error_recording.py",
    "tests/test_request_integrity.py",
    "tests/test_auto.py",
    "tests/test_auto_exit.py",
    "tests/test_langchain_models.py",
)
"""The retry scenarios a new major of openai could break: the loop, its stops, streams, errors
as the SDK raises them, what each attempt sends, the auto import and LangChain."""


SHOWN = (
    "openai",
    "httpx",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "wrapt",
    "tenacity",
    "langchain-core",
)
"""The resolved versions the table shows, so that a row says what it ran on."""


@dataclass(frozen=True)
class Cell:
    """One resolution of the dependencies, on one Python, with one part of the suite."""

    resolution: str  # uv's --resolution: "lowest-direct" or "highest"
    python: str  # "3.10"
    openai: str  # a constraint on openai ("openai<2"), or "" for what the resolution picks
    tests: tuple[str, ...]

    @property
    def name(self) -> str:
        label = self.openai.replace("<", "lt").replace(">=", "ge").replace(",", "-")
        return f"{self.resolution}-py{self.python}" + (f"-{label}" if label else "")


CELLS = (
    Cell("lowest-direct", "3.10", "", CORE),
    Cell("lowest-direct", "3.13", "", CORE),
    Cell("highest", "3.10", "", CORE),
    Cell("highest", "3.13", "", CORE),
    Cell("highest", "3.13", "openai<2", RETRY),
    Cell("highest", "3.13", "openai>=2,<3", RETRY),
    Cell("highest", "3.13", "openai>=3", RETRY),
)


@dataclass(frozen=True)
class Outcome:
    cell: Cell
    passed: int
    failed: int
    skipped: int
    failures: tuple[str, ...]
    versions: dict[str, str]
    seconds: float
    note: str = ""


def uv() -> str:
    """uv from the virtualenv running this script (the test extra brings it), else from PATH."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        sys.exit("matrix: uv not found; `pip install uv` (the test extra brings it)")
    return found


def find_python(version: str) -> str | None:
    """An interpreter of ``version``: this one, one on PATH that runs, or one under pyenv
    (whose shims on PATH refuse versions that are not selected)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(str(p) for p in pyenv.glob(f"{version}.*/bin/python{version}"))
    for candidate in candidates:
        if candidate and _runs(candidate):
            return candidate
    return None


def _runs(interpreter: str) -> bool:
    return subprocess.run([interpreter, "-c", ""], check=False, capture_output=True).returncode == 0


def run(*command: str) -> None:
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        causes = [line.strip() for line in lines if "Error" in line or "error" in line]
        raise RuntimeError(f"{' '.join(command[1:3])}: {(causes or lines)[-1]}")


def resolve(cell: Cell, interpreter: str, where: Path) -> dict[str, str]:
    """A fresh virtualenv with the cell's resolution installed; the versions it pinned."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    run(uv(), "venv", "--quiet", "--python", interpreter, str(where / "venv"))
    python = str(where / "venv" / "bin" / "python")
    pins = where / "requirements.txt"
    compile_args = ["--resolution", cell.resolution, "--python", python, "-o", str(pins)]
    if cell.openai:
        (where / "constraints.txt").write_text(cell.openai + "\n")
        compile_args += ["-c", str(where / "constraints.txt")]
    extras = [arg for extra in EXTRAS for arg in ("--extra", extra)]
    run(uv(), "pip", "compile", "--quiet", "--no-header", "pyproject.toml", *extras, *compile_args)
    run(uv(), "pip", "sync", "--quiet", "--python", python, str(pins))
    run(uv(), "pip", "install", "--quiet", "--python", python, "--no-deps", "-e", ".")
    versions = {}
    for line in pins.read_text().splitlines():
        name, _, version = line.partition("==")
        if version and not line.startswith(" "):
            versions[name.strip()] = version.split(";")[0].strip()
    return versions


def junit_counts(report: Path) -> tuple[int, int, int, tuple[str, ...]]:
    """Passed, failed (errors included), skipped and the failed tests' ids, from pytest's JUnit
    XML."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = failed = skipped = 0
    for suite in suites:
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    names = tuple(
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    )
    return total - failed - skipped, failed, skipped, names


def run_cell(cell: Cell) -> Outcome:
    started = time.monotonic()
    interpreter = find_python(cell.python)
    if interpreter is None:
        return Outcome(cell, 0, 0, 0, (), {}, 0.0, f"no Python {cell.python} here")
    where = CACHE / cell.name
    try:
        versions = resolve(cell, interpreter, where)
    except RuntimeError as why:
        seconds = time.monotonic() - started
        return Outcome(cell, 0, 0, 0, (), {}, seconds, f"install failed: {why}")
    report = where / "junit.xml"
    log = where / "pytest.log"
    python = str(where / "venv" / "bin" / "python")
    pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    with log.open("w") as out:
        subprocess.run(
            [*pytest, "--junitxml", str(report), *cell.tests],
            check=False,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    seconds = time.monotonic() - started
    if not report.exists():
        return Outcome(cell, 0, 0, 0, (), versions, seconds, f"pytest did not report; see {log}")
    return Outcome(cell, *junit_counts(report), versions, seconds)


def table(outcomes: Sequence[Outcome]) -> str:
    head = ["resolution", "python", "openai", "tests", "passed", "failed", "skipped", "resolved"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for o in outcomes:
        resolved = ", ".join(f"{n} {o.versions[n]}" for n in SHOWN if n in o.versions)
        labels = {CORE: "core (-m 'not slow')", RETRY: "retry scenarios"}
        tests = labels.get(o.cell.tests, " ".join(o.cell.tests))
        openai = o.cell.openai or "(resolved)"
        cells = [o.cell.resolution, o.cell.python, openai, tests, str(o.passed), str(o.failed)]
        note = o.note.strip().splitlines()[-1][:160].replace("|", "/") if o.note else resolved
        rows.append("| " + " | ".join([*cells, str(o.skipped), note]) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ci", action="store_true", help="lowest-direct on this Python, the retry scenarios"
    )
    parser.add_argument("--only", default="", help="run the cells whose name contains this")
    parser.add_argument("--tests", nargs="*", help="pytest arguments instead of each cell's")
    args = parser.parse_args(argv)
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")  # the interpreters found here only
    if args.ci:
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        cells = [Cell("lowest-direct", here, "", RETRY)]
    else:
        cells = [cell for cell in CELLS if args.only in cell.name]
    if args.tests is not None:
        cells = [Cell(c.resolution, c.python, c.openai, tuple(args.tests)) for c in cells]
    outcomes = []
    for cell in cells:
        print(f"matrix: {cell.name} ...", flush=True)
        outcome = run_cell(cell)
        outcomes.append(outcome)
        print(
            f"matrix: {cell.name}: {outcome.passed} passed, {outcome.failed} failed, "
            f"{outcome.skipped} skipped in {outcome.seconds:.0f} s {outcome.note}",
            flush=True,
        )
    print(table(outcomes))
    for outcome in outcomes:
        for name in outcome.failures:
            print(f"failed in {outcome.cell.name}: {name}")
    broken = [o for o in outcomes if o.failed or o.note or not o.passed]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
