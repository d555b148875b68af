"""``FakeOpenAI``: the fake server, the library's telemetry and the verdicts on both, for one test.

What the plugin's ``fake_openai`` fixture yields. Entering it points the OpenAI SDK at the server
through the environment (``OPENAI_BASE_URL``, and a fake ``OPENAI_API_KEY`` so that no real key
can be sent anywhere); leaving it restores the environment and forgets the script and journal.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING

from ._checks import (
    Evidence,
    attempts_match_requests,
    budget_kept,
    retry_after_honoured,
    should_retry_false_obeyed,
)
from ._faults import Fault
from ._secrets import no_secret_in_telemetry
from ._server import FakeOpenAIServer
from ._state import RecordedRequest
from ._telemetry import RetryTelemetry
from ._verdict import Verdict

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["FAKE_API_KEY", "FakeOpenAI"]

FAKE_API_KEY = "sk-fake-openai-0d1e2f3a4b5c6d7e"
"""The key the SDK finds in ``OPENAI_API_KEY``: recognisable, so a verdict can look for it."""

_ENVIRONMENT = ("OPENAI_BASE_URL", "OPENAI_API_KEY")


class FakeOpenAI:
    """A running fake OpenAI server that the SDK is pointed at, the library's in-memory
    telemetry, and verdicts that grade the client and its telemetry together.

    ::

        def test_my_app(fake_openai):
            fake_openai.script(Fault.rate_limit(retry_after_ms=1500), Fault.server_error(503))
            my_app.summarise("some text")  # builds OpenAI() the usual way
            assert len(fake_openai.requests) == 3
            assert fake_openai.verdict()

    Attributes:
        server: The :class:`FakeOpenAIServer`, for everything else it can do.
        telemetry: The :class:`RetryTelemetry`: spans, metrics, the policy.
    """

    def __init__(self, server: FakeOpenAIServer, telemetry: RetryTelemetry) -> None:
        self.server = server
        self.telemetry = telemetry
        self._saved: dict[str, str | None] = {}

    # -- the environment --------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.server.start()
        self.server.reset()
        self._saved = {name: os.environ.get(name) for name in _ENVIRONMENT}
        os.environ["OPENAI_BASE_URL"] = self.server.base_url
        os.environ["OPENAI_API_KEY"] = FAKE_API_KEY
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.server.reset()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def api_key(self) -> str:
        return FAKE_API_KEY

    # -- the server, briefly ----------------------------------------------------------------

    def script(self, *faults: Fault, path: str | None = None) -> None:
        """:meth:`FakeOpenAIServer.script`: the answers to the next requests, in order."""
        self.server.script(*faults, path=path)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request the server received in this test, in arrival order."""
        return self.server.requests

    # -- verdicts ---------------------------------------------------------------------------
    # Each reads the journal and the spans as they are now. A verdict that passed is returned
    # (true); one that did not raises AssertionError listing every finding, so that
    # ``assert fake_openai.verdict()`` reads as one assertion and prints the whole story.

    def _evidence(self) -> Evidence:
        return Evidence(
            self.server.requests,
            self.telemetry.spans(),
            self.telemetry.policy,
            self.telemetry.all_metric_points(),
        )

    def retry_after_honoured(self) -> Verdict:
        """After every answer with ``retry-after-ms`` or ``retry-after``, the next attempt came
        no sooner than asked (by the sleep each attempt span records, which instant waits keep
        true), or none came when the hint was over ``max_retry_after``; and every hinted answer
        the server sent is on an attempt span."""
        return retry_after_honoured(self._evidence()).require()

    def should_retry_false_obeyed(self) -> Verdict:
        """No attempt followed an answer with ``x-should-retry: false``, and each such answer is
        on the last attempt span of its call."""
        return should_retry_false_obeyed(self._evidence()).require()

    def budget_kept(self) -> Verdict:
        """The retries the server received per model stayed within the policy's retry budget,
        and a call the budget stopped sent nothing more."""
        return budget_kept(self._evidence()).require()

    def attempts_match_requests(self) -> Verdict:
        """One attempt span per request the server received; ``openai_retry.attempts`` and the
        retry metrics add up to the same; no call left open."""
        return attempts_match_requests(self._evidence()).require()

    def no_secret_in_spans(self, *secrets: str) -> Verdict:
        """No credential the client sent (Authorization, api-key), nor the fixture's
        ``OPENAI_API_KEY``, nor any of ``secrets``,
        appears in a span's name, attributes, events, links or status, or in a metric's
        attributes."""
        return no_secret_in_telemetry(self._evidence(), (self.api_key, *secrets)).require()

    def verdict(self, *secrets: str) -> Verdict:
        """Every verdict at once: true when all are, listing the findings of those that are not."""
        evidence = self._evidence()
        return Verdict.every(
            retry_after_honoured(evidence),
            should_retry_false_obeyed(evidence),
            budget_kept(evidence),
            attempts_match_requests(evidence),
            no_secret_in_telemetry(evidence, (self.api_key, *secrets)),
        ).require()

    def __repr__(self) -> str:
        return f"<FakeOpenAI {self.server!r}, {len(self.server.requests)} requests>"
