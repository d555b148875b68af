"""Server-wide conditions: a rate limit, random rejections, an outage, a base latency.

Scripts say what happens to the next few requests; conditions say how the server behaves for
everyone, for as long as they are set — what load, soak and goodput benchmarks need. A request
without a scripted fault gets its fault from here, so the journal records what was really sent.

The rate limit is a token bucket that answers 429 the way OpenAI does: ``retry-after-ms`` (time
until the next token) and ``x-ratelimit-{limit,remaining,reset}-requests`` on every response, or
no hints at all when ``hints`` is false.

Random rejections answer 429 to a fixed fraction of requests whatever the send rate: a limit shared
with other applications, which no pacing of ours can relieve. They carry ``retry-after-ms`` only.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from ._faults import Fault

__all__ = ["Conditions", "RandomRejections", "RateLimit"]


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``rate`` requests per second, up to ``burst`` at once."""

    rate: float
    burst: int = 10
    hints: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be > 0 requests per second, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")


@dataclass(frozen=True)
class RandomRejections:
    """429 to a ``fraction`` of requests drawn at random (from ``seed``, for reproducible runs),
    each with ``retry-after-ms: retry_after_ms``."""

    fraction: float
    seed: int | None = None
    retry_after_ms: int = 100

    def __post_init__(self) -> None:
        if not (0.0 <= self.fraction <= 1.0):
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if self.retry_after_ms < 0:
            raise ValueError(f"retry_after_ms must be >= 0, got {self.retry_after_ms}")


def _milliseconds(seconds: float) -> str:
    return f"{max(seconds, 0.0) * 1000:.0f}ms"


class Conditions:
    """The current conditions; thread-safe, consulted once per request without a scripted fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._latency = 0.0
            self._rate_limit: RateLimit | None = None
            self._rejections: RandomRejections | None = None
            self._random = random.Random()
            self._tokens = 0.0
            self._updated = 0.0
            self._outage_until = 0.0
            self._outage_status = 503

    def set_latency(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"latency must be >= 0 seconds, got {seconds}")
        with self._lock:
            self._latency = seconds

    def set_rate_limit(self, limit: RateLimit | None) -> None:
        with self._lock:
            self._rate_limit = limit
            self._tokens = float(limit.burst) if limit is not None else 0.0
            self._updated = time.monotonic()

    def set_random_rejections(
        self, fraction: float | None, seed: int | None = None, retry_after_ms: int = 100
    ) -> None:
        """Answer 429 to a random ``fraction`` of requests (``None``: stop doing so)."""
        rejections = None if fraction is None else RandomRejections(fraction, seed, retry_after_ms)
        with self._lock:
            self._rejections = rejections
            if rejections is not None:
                self._random = random.Random(rejections.seed)

    def start_outage(self, seconds: float, status: int = 503) -> None:
        """Answer ``status`` to every request from now for ``seconds``."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"outage must be >= 0 seconds, got {seconds}")
        with self._lock:
            self._outage_until = time.monotonic() + seconds
            self._outage_status = status

    def decide(self, now: float) -> Fault:
        with self._lock:
            if now < self._outage_until:
                return Fault(self._outage_status)
            rejections = self._rejections
            if rejections is not None and self._random.random() < rejections.fraction:
                return Fault(429, headers=(("retry-after-ms", str(rejections.retry_after_ms)),))
            limit = self._rate_limit
            if limit is None:
                return Fault(delay_s=self._latency) if self._latency else _OK
            self._tokens = min(limit.burst, self._tokens + (now - self._updated) * limit.rate)
            self._updated = now
            allowed = self._tokens >= 1.0
            if allowed:
                self._tokens -= 1.0
            headers: list[tuple[str, str]] = []
            if limit.hints:
                headers += [
                    ("x-ratelimit-limit-requests", str(limit.burst)),
                    ("x-ratelimit-remaining-requests", str(math.floor(self._tokens))),
                    (
                        "x-ratelimit-reset-requests",
                        _milliseconds((limit.burst - self._tokens) / limit.rate),
                    ),
                ]
            if allowed:
                return Fault(headers=tuple(headers), delay_s=self._latency)
            if limit.hints:
                wait_ms = math.ceil((1.0 - self._tokens) / limit.rate * 1000)
                headers.append(("retry-after-ms", str(wait_ms)))
            return Fault(429, headers=tuple(headers))


_OK = Fault.ok()
