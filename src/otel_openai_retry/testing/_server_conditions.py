"""The server's calls that set how it behaves for every request: rate limits, latency, chaos.

A class of their own, which :class:`FakeOpenAIServer` inherits, so that the server module keeps
to its lifecycle and its script; each call forwards to the shared :class:`Conditions`.
"""

from __future__ import annotations

from ._chaos import Chaos
from ._limits import Hints, RateLimit, TokenLimit
from ._state import ServerState

__all__ = ["ServerConditions"]


class ServerConditions:
    """Server-wide conditions; a request without a scripted fault gets its answer from them."""

    _state: ServerState

    def set_latency(self, seconds: float) -> None:
        """Answer every successful request after this long (a model's think time)."""
        self._state.conditions.set_latency(seconds)

    def set_rate_limit(
        self, rate: float | None, burst: int = 10, *, hints: bool | Hints = True
    ) -> None:
        """A token bucket of ``rate`` requests/s (``None`` removes it); over it, 429.

        With ``hints``, answers carry ``retry-after-ms`` and OpenAI's ``x-ratelimit-*`` headers;
        ``"seconds"`` gives a whole-second ``retry-after`` instead of ``retry-after-ms``,
        ``"headers"`` the ``x-ratelimit-*`` headers alone, ``False`` (``"none"``) no header.
        """
        self._state.conditions.set_rate_limit(
            None if rate is None else RateLimit(rate, burst, hints)
        )

    def set_token_limit(
        self, per_minute: int | None, bucket_seconds: float = 60.0, *, hints: bool | Hints = True
    ) -> None:
        """OpenAI's tokens-per-minute limit (``None`` removes it), beside the requests one: a
        request must fit both. Each request is charged its estimate at admission (prompt
        characters / 4, plus ``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``
        times ``n``); the bucket holds ``bucket_seconds`` of tokens; over it, 429 with ``type:
        tokens``. With ``hints``, answers carry ``retry-after-ms`` and
        ``x-ratelimit-{limit,remaining,reset}-tokens`` (modes as in :meth:`set_rate_limit`).
        See :meth:`set_sized_usage` for usage that matches the charge.
        """
        self._state.conditions.set_token_limit(
            None if per_minute is None else TokenLimit(per_minute, bucket_seconds, hints)
        )

    def set_quota_exhausted(self, exhausted: bool = True) -> None:
        """Answer every request OpenAI's ``insufficient_quota`` 429 until set back to ``False``."""
        self._state.conditions.set_quota_exhausted(exhausted)

    def set_sized_usage(self, sized: bool = True) -> None:
        """Report usage that follows each request's size: prompt tokens as the token limit
        estimates them, completion tokens the request's maximum times ``n`` (16 per choice
        when it sets none). Off, usage counts words, which tests find easier to read."""
        self._state.conditions.set_sized_usage(sized)

    def set_random_rejections(
        self,
        fraction: float | None,
        seed: int | None = None,
        *,
        retry_after_ms: int = 100,
        limit: str = "requests",
    ) -> None:
        """Answer 429 with ``retry-after-ms`` to a random ``fraction`` of requests, whatever the
        send rate (a limit shared with other applications), the body naming ``limit``
        (``requests`` or ``tokens``) as the one hit; ``None`` removes it."""
        self._state.conditions.set_random_rejections(fraction, seed, retry_after_ms, limit)

    def start_outage(self, seconds: float, status: int = 503) -> None:
        """From now, answer ``status`` to every request for ``seconds``."""
        self._state.conditions.start_outage(seconds, status)

    def set_chunk_latency(self, seconds: float) -> None:
        """Send the events of every successful stream ``seconds`` apart (a model's per-token
        pace; ``0`` for none). A scripted :meth:`Fault.slow_stream` does so for one answer."""
        self._state.conditions.set_chunk_latency(seconds)

    def set_chaos(self, chaos: Chaos | None) -> None:
        """Chaos mode: each request without a scripted fault draws one from ``chaos``'s
        probabilities, in arrival order from its seed, so a seed replays the same sequence
        (``chaos.sequence(n)`` lists it); ``None`` ends it."""
        self._state.conditions.set_chaos(chaos)
