"""The Jaeger UI, in a real browser: the page of a retried call's trace lists every attempt span,
marks the failed ones, and their details name the error — what the README's picture shows
(scripts/screenshot.py takes it from the same page).

The Jaeger is the e2e one (scripts/build-jaeger.sh) serving the real UI's assets
(third_party/jaeger-ui, see tests/e2e/jaeger_ui.py); the browser is Debian's headless Chromium
(`make chromium` installs it). Without Chromium the test skips and says why; under CI=true it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .browser import Browser, ChromiumUnavailable, find_chromium
from .harness import run_scenario
from .jaeger_ui import Row, expand, jaeger_with_ui, open_trace, trace_with_attempts

pytestmark = pytest.mark.e2e

SERVICE = "e2e-jaeger-ui"


@pytest.fixture(scope="session")
def chromium() -> Path:
    try:
        return find_chromium()
    except ChromiumUnavailable as why:
        message = f"the Jaeger UI test opens the trace page in headless Chromium: {why}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " — and CI must run it.")
        pytest.skip(message)


def flat(text: str) -> str:
    """The page's text with its line breaks and runs of spaces as single spaces."""
    return " ".join(text.split())


async def test_the_trace_page_lists_every_attempt_of_a_retried_call(
    jaeger_binary: Path, chromium: Path, tmp_path: Path
) -> None:
    with jaeger_with_ui(jaeger_binary, tmp_path) as jaeger:
        result = run_scenario(
            "rate-limited-then-500",
            endpoint=jaeger.otlp_endpoint,
            protocol="http/protobuf",
            service=SERVICE,
        )
        assert result["rate-limited-then-500"] == {"caller_saw": "ok", "requests": 3}
        trace_id = trace_with_attempts(jaeger.query, SERVICE, (429, 500, 200))

        async with Browser() as browser:
            rows = await open_trace(browser, jaeger, trace_id, spans=4)
            details = {name: await expand(browser, name) for name in ("attempt 1", "attempt 2")}
            header = flat(
                await browser.evaluate("document.querySelector('.TracePageHeader').innerText")
            )

    # The timeline: the logical call, then its three attempts in order; the two that failed carry
    # the error mark, the one that succeeded and the call itself do not.
    assert rows == [
        Row(SERVICE, "chat gpt-4o-mini", error_icon=False),
        Row(SERVICE, "attempt 1", error_icon=True),
        Row(SERVICE, "attempt 2", error_icon=True),
        Row(SERVICE, "attempt 3", error_icon=False),
    ]
    assert f"{SERVICE}: chat gpt-4o-mini" in header
    assert "TotalSpans4" in header.replace(" ", "")  # "Total Spans" and "4" are two elements
    # Opened, an attempt's details name its error type and the HTTP status it got.
    first, second = details["attempt 1"], details["attempt 2"]
    assert first["error.type"] == "openai.RateLimitError"
    assert first["http.response.status_code"] == "429"
    assert first["http.response.header.retry-after-ms"] == '["50"]'
    assert second["error.type"] == "openai.InternalServerError"
    assert second["http.response.status_code"] == "500"
    assert second["http.request.resend_count"] == "1"
