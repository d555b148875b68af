"""The README's picture of a retried call, docs/images/retried-call.png: ``make screenshot``.

It starts the end-to-end tests' Jaeger v2 (the binary of scripts/build-jaeger.sh) serving the real
Jaeger UI (tests/e2e/jaeger_ui.py), runs ``examples/demo.py`` exporting to it over OTLP, picks the
demo's call whose attempts met a 429, then a 500, then succeeded, opens that trace's page in
headless Chromium, opens the attempt spans' details as a person would click them, and saves what
the browser shows.

    .venv/bin/python scripts/screenshot.py [--output PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.browser import Browser, ChromiumUnavailable, find_chromium  # noqa: E402
from tests.e2e.harness import JaegerUnavailable, build_jaeger  # noqa: E402
from tests.e2e.jaeger_ui import (  # noqa: E402
    JaegerWithUI,
    expand,
    jaeger_with_ui,
    open_trace,
    trace_with_attempts,
)
from tests.helpers import run_python  # noqa: E402

OUTPUT = REPO_ROOT / "docs" / "images" / "retried-call.png"
SERVICE = "demo"
STATUSES = (429, 500, 200)
"""The demo's call "Rate limited, then a 500, then success"."""
WIDTH, HEIGHT = 1440, 1200
"""CSS pixels; the picture is cut just below the last span's row or details."""


def run_demo(jaeger: JaegerWithUI) -> None:
    env = {
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRICS_EXPORTER": "none",  # Jaeger takes traces only
        "NO_COLOR": "1",
        "NO_PROXY": "*",
    }
    done = run_python(str(REPO_ROOT / "examples" / "demo.py"), env=env, cwd=REPO_ROOT)
    assert "Failed to export" not in done.stderr, done.stderr


async def capture(jaeger: JaegerWithUI, trace_id: str) -> bytes:
    """The trace page with the attempts' details open, as PNG."""
    async with Browser(WIDTH, HEIGHT, scale=1.0) as browser:
        rows = await open_trace(browser, jaeger, trace_id, spans=1 + len(STATUSES))
        attempts = [row.operation for row in rows if row.operation.startswith("attempt ")]
        assert attempts == [f"attempt {n}" for n in range(1, len(STATUSES) + 1)], rows
        for name in attempts:
            await expand(browser, name)
        # The picture ends below the last row the timeline drew (attributes folded to one line).
        bottom = await browser.evaluate(
            "Math.max(...[...document.querySelectorAll('.span-row, .detail-row')]"
            ".map(e => e.getBoundingClientRect().bottom))"
        )
        return await browser.screenshot(clip_height=min(HEIGHT, float(bottom) + 12))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        find_chromium()
        binary = build_jaeger()
    except (ChromiumUnavailable, JaegerUnavailable) as why:
        print(f"screenshot: {why}", file=sys.stderr)
        return 3
    with (
        tempfile.TemporaryDirectory(prefix="screenshot-") as workdir,
        jaeger_with_ui(binary, Path(workdir)) as jaeger,
    ):
        run_demo(jaeger)
        trace_id = trace_with_attempts(jaeger.query, SERVICE, STATUSES)
        png = asyncio.run(capture(jaeger, trace_id))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(png)
    print(f"wrote {args.output} (trace {trace_id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
