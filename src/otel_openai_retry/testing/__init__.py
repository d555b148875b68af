"""A fake OpenAI-compatible HTTP server, for testing retry behaviour against the real SDK.

The real SDK over real HTTP, because retry behaviour lives in the details a mock would skip:
``retry-after`` headers, ``x-should-retry``, timeouts, dropped connections, streams cut halfway.
Shipped with the package so that applications can test their own retry settings the same way::

    from openai import OpenAI
    from otel_openai_retry.testing import FakeOpenAIServer, Fault

    with FakeOpenAIServer() as server:
        server.script(Fault.rate_limit(retry_after_ms=20), Fault.server_error(503))
        client = OpenAI(api_key="sk-test", base_url=server.base_url)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", ...}])
        assert server.request_count == 3

``python -m otel_openai_retry.testing --help`` runs it as a process; :class:`FakeServerProcess`
runs that process and drives it with the same calls, for tests and benchmarks that measure time or
CPU and so need the server off the client's GIL.

For pytest users the package's plugin does the wiring: ``def test_my_app(fake_openai): ...`` gets
a running server with ``OPENAI_BASE_URL`` pointing at it, the library instrumented with in-memory
telemetry and instant waits (:func:`set_testing`), and verdicts on the client and its telemetry
together (:class:`FakeOpenAI`, :class:`RetryTelemetry`, :class:`Verdict`).

Needs the ``testing`` extra (``pip install 'otel-openai-retry[testing]'``): its HTTP stack,
aiohttp, is no dependency of the library itself.
"""

try:
    import aiohttp  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "otel_openai_retry.testing needs aiohttp: pip install 'otel-openai-retry[testing]'"
    ) from exc

from .._sleeps import set_testing
from ._chaos import Chaos
from ._faults import Fault
from ._harness import FakeOpenAI
from ._process import FakeServerProcess
from ._server import FakeOpenAIServer
from ._state import RecordedRequest
from ._telemetry import RetryTelemetry
from ._verdict import Verdict

__all__ = [
    "Chaos",
    "FakeOpenAI",
    "FakeOpenAIServer",
    "FakeServerProcess",
    "Fault",
    "RecordedRequest",
    "RetryTelemetry",
    "Verdict",
    "set_testing",
]
