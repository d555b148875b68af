"""Server-wide conditions: rate limits, an exhausted quota, random rejections, seeded chaos, an
outage, a base latency and a per-token one, and usage that follows the request's size.

Scripts say what happens to the next few requests; conditions say how the server behaves for
everyone, for as long as they are set — what load, soak and goodput benchmarks need. A request
without a scripted fault gets its fault from here, so the journal records what was really sent.

The rate limits are OpenAI's two, requests and tokens (see ``_limits``): token buckets that answer
429 the way OpenAI does, with ``retry-after-ms`` (time until the request fits) and
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` on every response; or, by their
``hints`` mode, a whole-second ``retry-after`` instead, the ``x-ratelimit-*`` headers alone, or
no hint at all.

Random rejections answer 429 to a fixed fraction of requests whatever the send rate: a limit shared
with other applications, which no pacing of ours can relieve. They carry ``retry-after-ms`` only.
An exhausted quota answers every request ``insufficient_quota``, which no wait cures.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from ._chaos import Chaos
from ._faults import Fault
from ._limits import Gate, RateLimit, TokenLimit, requests_gate, tokens_gate

__all__ = ["Conditions", "RandomRejections"]


@dataclass(frozen=True)
class RandomRejections:
    """429 to a ``fraction`` of requests drawn at random (from ``seed``, for reproducible runs),
    each with ``retry-after-ms: retry_after_ms`` and OpenAI's body naming ``limit`` as the one
    hit (``requests`` or ``tokens``: a token quota shared with other applications)."""

    fraction: float
    seed: int | None = None
    retry_after_ms: int = 100
    limit: str = "requests"

    def __post_init__(self) -> None:
        if not (0.0 <= self.fraction <= 1.0):
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if self.retry_after_ms < 0:
            raise ValueError(f"retry_after_ms must be >= 0, got {self.retry_after_ms}")
        if self.limit not in ("requests", "tokens"):
            raise ValueError(f"limit must be 'requests' or 'tokens', got {self.limit!r}")


class Conditions:
    """The current conditions; thread-safe, consulted once per request without a scripted fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._latency = 0.0
            self._chunk_latency = 0.0
            self._chaos: Chaos | None = None
            self._chaos_random = random.Random()
            self._requests: Gate | None = None
            self._tokens: Gate | None = None
            self._quota_exhausted = False
            self._rejections: RandomRejections | None = None
            self._random = random.Random()
            self._outage_until = 0.0
            self._outage_status = 503
            # Usage follows the request's size (``_bodies.estimate``) rather than word counts.
            self.sized_usage = False

    def set_latency(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"latency must be >= 0 seconds, got {seconds}")
        with self._lock:
            self._latency = seconds

    def set_chunk_latency(self, seconds: float) -> None:
        """Seconds between the events of every streamed answer that succeeds (per token)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"chunk latency must be >= 0 seconds, got {seconds}")
        with self._lock:
            self._chunk_latency = seconds

    def set_chaos(self, chaos: Chaos | None) -> None:
        """Draw each request's fault from ``chaos`` (``None``: stop); draws start from its seed."""
        with self._lock:
            self._chaos = chaos
            self._chaos_random = random.Random(None if chaos is None else chaos.seed)

    def set_rate_limit(self, limit: RateLimit | None) -> None:
        """The requests limit (``None``: none); a new one starts full."""
        with self._lock:
            self._requests = None if limit is None else requests_gate(limit)

    def set_token_limit(self, limit: TokenLimit | None) -> None:
        """The tokens limit (``None``: none); a new one starts full."""
        with self._lock:
            self._tokens = None if limit is None else tokens_gate(limit)

    def set_quota_exhausted(self, exhausted: bool) -> None:
        with self._lock:
            self._quota_exhausted = exhausted

    def set_sized_usage(self, sized: bool) -> None:
        with self._lock:
            self.sized_usage = sized

    def set_random_rejections(
        self,
        fraction: float | None,
        seed: int | None = None,
        retry_after_ms: int = 100,
        limit: str = "requests",
    ) -> None:
        """Answer 429 to a random ``fraction`` of requests (``None``: stop doing so)."""
        rejections = (
            None if fraction is None else RandomRejections(fraction, seed, retry_after_ms, limit)
        )
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

    def decide(self, now: float, model: str | None = None, tokens: int = 0) -> Fault:
        """The fault for a request of ``tokens`` estimated tokens to ``model``, charged to the
        limits if they admit it."""
        with self._lock:
            if now < self._outage_until:
                return Fault(self._outage_status)
            if self._quota_exhausted:
                return _QUOTA
            drawn = None if self._chaos is None else self._chaos.draw(self._chaos_random)
            if drawn is not None:
                return drawn
            rejections = self._rejections
            if rejections is not None and self._random.random() < rejections.fraction:
                hint = ("retry-after-ms", str(rejections.retry_after_ms))
                return Fault(429, headers=(hint,), error_type=rejections.limit)
            charges = [
                (gate, cost)
                for gate, cost in ((self._requests, 1), (self._tokens, tokens))
                if gate is not None
            ]
            if not charges:
                latent = self._latency or self._chunk_latency
                return self._paced(()) if latent else _OK
            return self._charge(now, model, charges)

    def _paced(self, headers: tuple[tuple[str, str], ...]) -> Fault:
        """A success, after the base latency and at the per-token pace."""
        return Fault(headers=headers, delay_s=self._latency, chunk_delay_s=self._chunk_latency)

    def _charge(self, now: float, model: str | None, charges: list[tuple[Gate, int]]) -> Fault:
        for gate, _ in charges:
            gate.refill(now)
        too_large = [(gate, cost) for gate, cost in charges if gate.too_large(cost)]
        waits = [(gate.wait(cost), gate, cost) for gate, cost in charges]
        denied = [entry for entry in waits if entry[0] > 0]
        if not too_large and not denied:
            for gate, cost in charges:
                gate.take(cost)
        headers = [header for gate, _ in charges if gate.hints for header in gate.headers()]
        if too_large:
            # No retry hint: waiting never makes the request fit.
            gate, cost = too_large[0]
            message = gate.too_large_message(model, cost)
            return Fault(429, headers=tuple(headers), message=message, error_type=gate.kind)
        if not denied:
            return self._paced(tuple(headers))
        wait, gate, cost = max(denied, key=lambda entry: entry[0])
        in_ms = [entry[0] for entry in denied if entry[1].mode == "ms"]
        in_seconds = [entry[0] for entry in denied if entry[1].mode == "seconds"]
        if in_ms:
            headers.append(("retry-after-ms", str(math.ceil(max(in_ms) * 1000 - 1e-9))))
        elif in_seconds:  # whole seconds, never shorter than the wait
            headers.append(("retry-after", str(max(1, math.ceil(max(in_seconds) - 1e-9)))))
        message = gate.reached(model, cost, wait)
        return Fault(429, headers=tuple(headers), message=message, error_type=gate.kind)


_OK = Fault.ok()
_QUOTA = Fault.insufficient_quota()
