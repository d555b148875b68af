"""Optional integrations cost nothing for users who do not install them."""

from __future__ import annotations

import textwrap

from .helpers import run_python


def test_the_library_works_without_the_fake_servers_http_stack() -> None:
    """aiohttp belongs to the ``testing`` extra: without it (blocked here, as if not installed)
    the library instruments and patches as usual, and the fake server says what to install."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["aiohttp"] = None  # import aiohttp now raises ImportError
        import openai
        from otel_openai_retry import OpenAIRetryInstrumentor
        OpenAIRetryInstrumentor().instrument()
        from openai._base_client import SyncAPIClient
        print("patched", hasattr(SyncAPIClient.__dict__["request"], "__wrapped__"))
        try:
            import otel_openai_retry.testing
        except ImportError as exc:
            print("hint", exc)
        """
    )
    done = run_python("-c", code, env={"OTEL_SDK_DISABLED": "true"}, timeout=120)
    assert done.stdout.splitlines() == [
        "patched True",
        "hint otel_openai_retry.testing needs aiohttp: pip install 'otel-openai-retry[testing]'",
    ], done.stderr
