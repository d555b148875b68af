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


def test_redis_is_imported_only_when_its_url_is_set() -> None:
    """No URL: not even imported. A URL without redis-py installed (blocked here): a clear error
    at instrument time, naming the variable and the extra, and nothing patched."""
    code = textwrap.dedent(
        """
        import os, sys
        from otel_openai_retry import ConfigurationError, OpenAIRetryInstrumentor
        instrumentor = OpenAIRetryInstrumentor()
        instrumentor.instrument()
        print("imported", "redis" in sys.modules)
        instrumentor.uninstrument()
        sys.modules["redis"] = None  # import redis now raises ImportError
        os.environ["OTEL_OPENAI_RETRY_REDIS_URL"] = "redis://127.0.0.1:1/0"
        try:
            instrumentor.instrument()
        except ConfigurationError as exc:
            print("refused", exc)
        print("patched", instrumentor.is_instrumented_by_opentelemetry)
        """
    )
    done = run_python("-c", code, env={"OTEL_SDK_DISABLED": "true"}, timeout=120)
    assert done.stdout.splitlines() == [
        "imported False",
        "refused OTEL_OPENAI_RETRY_REDIS_URL is set but redis-py is not installed: "
        "pip install 'otel-openai-retry[redis]'",
        "patched False",
    ], done.stderr
