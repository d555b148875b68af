"""Adaptive client-side pacing for one endpoint, engaged only after the server said 429.

Retrying alone cannot get a crowd of callers through a rate limit: they all wake together and hit
the limit again. Once an endpoint has answered 429, every attempt to it (first attempts too) takes
a send slot from a shared schedule:

- a ``Retry-After`` hint closes a gate for everyone until then;
- OpenAI's ``x-ratelimit-limit/remaining/reset-requests`` headers, when present, give the server's
  refill rate, and the schedule sends at that rate;
- without them, the rate adapts AIMD-style, as the AWS SDK's adaptive retry mode does: it starts
  from the send rate measured over the last second (what provoked the 429), then additive
  increase per success, multiplicative decrease on a 429 (at most once per ``DECREASE_GUARD``);
- when the schedule has not delayed anyone and no 429 came for ``DISENGAGE_AFTER`` seconds,
  pacing switches itself off, so an application that is within its limits pays nothing.

Pure state and arithmetic: the clock is passed in, the caller sleeps (``await`` or
``time.sleep``), so sync and async share it; a lock makes it safe across threads.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping

__all__ = ["AdaptiveLimiter", "parse_duration", "refill_rate"]

MIN_RATE = 0.5
"""Requests per second never paced below (so a wrong estimate cannot stall an endpoint)."""
START_FLOOR = 20.0
"""Lowest starting rate without headers: a lone caller's retry is not held up behind its own
earlier request (its hint-based sleep already spaces it)."""
DECREASE_FACTOR = 0.85
DECREASE_GUARD = 0.2
"""Seconds during which further 429s (from requests already in flight) do not cut the rate again."""
INCREASE_PER_SUCCESS = 0.5
INCREASE_FRACTION = 0.005
"""Each success while probing for capacity (no headers) adds the larger of these to the rate:
an absolute floor so a low rate recovers, a fraction so a high one does too."""
DISENGAGE_AFTER = 5.0
HINT_MARGIN = 0.98
"""Send slightly under the rate the headers announce, to absorb clock and latency noise."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations: ``"20ms"``, ``"1s"``, ``"6m0s"``, ``"1h2m3.5s"``; or seconds."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def refill_rate(headers: Mapping[str, str]) -> float | None:
    """Requests per second the server refills, from ``x-ratelimit-*-requests``, if it says."""
    try:
        limit = int(headers["x-ratelimit-limit-requests"])
        remaining = int(headers["x-ratelimit-remaining-requests"])
    except (KeyError, ValueError):
        return None
    reset = parse_duration(headers.get("x-ratelimit-reset-requests", ""))
    if reset is None or reset <= 0 or limit <= remaining or remaining < 0:
        return None
    return (limit - remaining) / reset


class AdaptiveLimiter:
    """The shared send schedule of one endpoint."""

    __slots__ = (
        "_gate_until",
        "_last_decrease",
        "_last_delay",
        "_last_throttled",
        "_lock",
        "_next_free",
        "_send_bucket",
        "_send_count",
        "_sends_last_second",
        "engaged",
        "rate",
    )

    def __init__(self) -> None:
        self.engaged = False
        self.rate = 0.0
        self._next_free = 0.0
        self._gate_until = 0.0
        self._last_decrease = -math.inf
        self._last_throttled = -math.inf
        self._last_delay = -math.inf
        self._send_bucket = 0
        self._send_count = 0
        self._sends_last_second = 0
        self._lock = threading.Lock()

    def reserve(self, now: float, latest: float = math.inf) -> float | None:
        """Take the next send slot; return how long to wait for it (0 when not engaged).

        A slot that would come after ``latest`` (the caller's deadline) is not taken: ``None``,
        and the schedule is left as it was, so a caller who cannot wait delays nobody else.
        """
        if not self.engaged:  # cheap bookkeeping only: the send rate seeds an engagement
            bucket = int(now)
            if bucket != self._send_bucket:
                self._sends_last_second = self._send_count if bucket == self._send_bucket + 1 else 0
                self._send_bucket, self._send_count = bucket, 0
            self._send_count += 1
            return 0.0
        with self._lock:
            if (
                now - self._last_throttled > DISENGAGE_AFTER
                and now - self._last_delay > DISENGAGE_AFTER
            ):
                self.engaged = False
                return 0.0
            start = max(now, self._gate_until, self._next_free)
            if start >= latest:
                return None
            self._next_free = start + 1.0 / self.rate
            delay = start - now
            if delay > 0.001:
                self._last_delay = now
            return delay

    def on_success(self, now: float, headers: Mapping[str, str] | None) -> None:
        if not self.engaged:
            return
        with self._lock:
            hinted = refill_rate(headers) if headers is not None else None
            if hinted is not None:
                self.rate = max(MIN_RATE, hinted * HINT_MARGIN)
            elif now - self._last_decrease >= DECREASE_GUARD:  # else: sent at the old rate
                self.rate += max(INCREASE_PER_SUCCESS, self.rate * INCREASE_FRACTION)

    def on_throttled(
        self, now: float, retry_after: float | None, headers: Mapping[str, str] | None
    ) -> None:
        """The server answered 429: engage, close the gate, slow down."""
        with self._lock:
            self._last_throttled = now
            if retry_after is not None and math.isfinite(retry_after):
                self._gate_until = max(self._gate_until, now + retry_after)
            hinted = refill_rate(headers) if headers is not None else None
            if hinted is not None:
                self.rate = max(MIN_RATE, hinted * HINT_MARGIN)
            elif not self.engaged:
                sent = max(self._sends_last_second, self._send_count)
                self.rate = max(START_FLOOR, float(sent) * DECREASE_FACTOR)
                self._last_decrease = now
            elif now - self._last_decrease >= DECREASE_GUARD:
                self.rate = max(MIN_RATE, self.rate * DECREASE_FACTOR)
                self._last_decrease = now
            if not self.engaged:
                self.engaged = True
                self._next_free = max(now, self._gate_until)
