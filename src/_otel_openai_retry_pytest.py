"""The pytest plugin of otel-openai-retry (the ``pytest11`` entry point ``otel_openai_retry``).

A module of its own, outside the package, so that loading it costs nothing: pytest loads every
installed plugin at start-up, and this one imports neither the library, the OpenAI SDK nor the
fake server's HTTP stack until a test asks for one of its fixtures. Disable it with
``-p no:otel_openai_retry``.

- ``fake_openai``: a running fake OpenAI server, the SDK pointed at it (``OPENAI_BASE_URL``, a
  fake ``OPENAI_API_KEY``), the library instrumented with in-memory telemetry and instant waits,
  and the verdicts; a :class:`otel_openai_retry.testing.FakeOpenAI`.
- ``openai_retry_telemetry``: the instrumentation alone (no server);
  a :class:`otel_openai_retry.testing.RetryTelemetry`.
- ``openai_retry_policy``: the policy both use; override it to test your own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from otel_openai_retry import RetryPolicy
    from otel_openai_retry.testing import FakeOpenAI, FakeOpenAIServer, RetryTelemetry


@pytest.fixture
def openai_retry_policy() -> RetryPolicy:
    """The retry policy of ``openai_retry_telemetry`` and ``fake_openai``: the defaults with no
    backoff and no pacing (pacing is about time, which instant waits do not let pass).

    Override it in a ``conftest.py`` or a test module to grade your own policy::

        @pytest.fixture
        def openai_retry_policy():
            return RetryPolicy(max_attempts=3, max_retry_after=10)
    """
    from otel_openai_retry import RetryPolicy

    return RetryPolicy(initial_wait=0, max_wait=0, adaptive=False)


@pytest.fixture
def openai_retry_telemetry(openai_retry_policy: RetryPolicy) -> Iterator[RetryTelemetry]:
    """The library instrumented with ``openai_retry_policy`` and in-memory span and metric
    readers, its waits instant (recorded, not slept); all undone after the test."""
    from otel_openai_retry.testing import RetryTelemetry

    with RetryTelemetry(openai_retry_policy).instrumented() as telemetry:
        yield telemetry


@pytest.fixture(scope="session")
def _openai_retry_fake_server() -> Iterator[FakeOpenAIServer]:
    from otel_openai_retry.testing import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def fake_openai(
    _openai_retry_fake_server: FakeOpenAIServer, openai_retry_telemetry: RetryTelemetry
) -> Iterator[FakeOpenAI]:
    """A running fake OpenAI server with ``OPENAI_BASE_URL`` (and a fake ``OPENAI_API_KEY``)
    pointing at it, the library instrumented as ``openai_retry_telemetry``, and verdicts on
    both: ``assert fake_openai.verdict()``. One server per session, its script and journal
    forgotten and the environment restored after each test."""
    from otel_openai_retry.testing import FakeOpenAI

    with FakeOpenAI(_openai_retry_fake_server, openai_retry_telemetry) as fake:
        yield fake
