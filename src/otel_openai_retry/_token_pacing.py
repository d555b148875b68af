"""Pacing by tokens for one endpoint, engaged once the server said a token limit was hit.

OpenAI limits tokens per minute as well as requests: a few long prompts exhaust the token bucket
while the request bucket is nearly full, and pacing requests alone either lets them through (429)
or, slowed until they pass, starves the short ones. So, once a 429 says ``type: tokens`` and the
headers (``x-ratelimit-{limit,remaining,reset}-tokens``, on that 429 or learnt before) give the
token rate, every send reserves its estimated tokens from a schedule that drains as the server's
bucket does: a GCRA (the token bucket's virtual-time form), with the server's rate (slightly
under, as for requests) and the bucket's size as its capacity. A send goes at the later of its
request slot and its token slot; an answer that used more than its estimate adds the difference
(one that used less gives nothing back: the server charged the estimate).

The bucket is also kept in step with the server's view: an answer's ``remaining-tokens`` never
leaves the schedule fuller than the server says it is (other processes share the limit). Without
a token rate a ``type: tokens`` 429 is left to request pacing (which slows tokens with requests).
Like request pacing it switches itself off after ``DISENGAGE_AFTER`` seconds with no token 429 and
no one delayed, and no slot is ever more than ``max_gate`` away.

Pure state and arithmetic, the clock passed in; one lock makes it safe across threads.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

from ._pacing_trial import DISENGAGE_AFTER
from ._rate_headers import read_limit

__all__ = ["TokenPacer"]

HINT_MARGIN = 0.98
"""Reserve slightly under the rate the headers announce, for clock and latency noise."""
MIN_TOKEN_RATE = 1.0
"""Tokens per second never paced below, so that a wrong header cannot stall an endpoint."""


class TokenPacer:
    """The token schedule of one endpoint."""

    __slots__ = (
        "_last_delay",
        "_last_throttled",
        "_lock",
        "_max_gate",
        "_tat",
        "capacity",
        "engaged",
        "rate",
    )

    def __init__(self, *, max_gate: float) -> None:
        self.engaged = False
        """Read without the lock: a call checks it before estimating its tokens."""
        self.rate = 0.0
        """Tokens per second; 0 until headers gave one."""
        self.capacity = 0.0
        self._tat = 0.0
        """The schedule's theoretical arrival time: when the bucket would be full again."""
        self._max_gate = max_gate if math.isfinite(max_gate) and max_gate >= 0 else 0.0
        self._last_throttled = -math.inf
        self._last_delay = -math.inf
        self._lock = threading.Lock()

    def reserve(self, now: float, tokens: int, earliest: float, latest: float) -> float | None:
        """Reserve ``tokens`` at the first moment from ``earliest`` (the request slot) that the
        bucket holds them; the wait from ``now``. ``None`` when that is at or after ``latest``
        (the caller's deadline), and then nothing is reserved."""
        if not self.engaged:
            return earliest - now
        with self._lock:
            if (
                now - self._last_throttled > DISENGAGE_AFTER
                and now - self._last_delay > DISENGAGE_AFTER
            ):
                self.engaged = False
                return earliest - now
            rate, capacity = self.rate, self.capacity
            cost = min(float(tokens), capacity)
            start = max(earliest, self._tat - (capacity - cost) / rate)
            if start >= latest:
                return None
            delay = start - now
            if delay > self._max_gate:  # never: the cap, and the schedule left as it was
                self._last_delay = now
                return self._max_gate if now + self._max_gate < latest else None
            self._tat = max(self._tat, start) + cost / rate
            if start - earliest > 0.001:
                self._last_delay = now
            return delay

    def used(self, now: float, reserved: int, used: int) -> None:
        """An answer reported more usage than was reserved for it: the schedule is charged the
        difference, taken from what the bucket holds now (a schedule that fell behind ``now``
        stands for a full bucket). Less gives nothing back: OpenAI's limiter charges its
        estimate (the output allowed, not the output produced) at admission, so a refund would
        send tokens the server has not got, and 429s follow."""
        if self.engaged and self.rate > 0 and used > reserved:
            with self._lock:
                excess = min(used, self.capacity) - min(reserved, self.capacity)
                self._tat = max(self._tat, now) + excess / self.rate

    def on_success(self, now: float, headers: Mapping[str, str] | None) -> None:
        if self.engaged and headers is not None:
            with self._lock:
                self._learn(now, headers)

    def on_throttled(self, now: float, headers: Mapping[str, str] | None) -> bool:
        """A 429 said a token limit was hit: pace tokens, if a token rate is known (from these
        headers or earlier ones). ``False``: it is not, so request pacing must take it."""
        with self._lock:
            if headers is not None:
                self._learn(now, headers)
            if self.rate <= 0:
                return False
            self._last_throttled = now
            self.engaged = True
            return True

    def _learn(self, now: float, headers: Mapping[str, str]) -> None:
        """The rate and the bucket's size from the headers, and no more tokens in our schedule
        than the server says remain. Only headers that give a rate of their own are read: a size
        or a fill measured against a rate from other headers could put the schedule anywhere."""
        found = read_limit(headers, "tokens")
        if found is None or found.rate is None:
            return
        self.rate = max(MIN_TOKEN_RATE, found.rate * HINT_MARGIN)
        self.capacity = float(found.limit)
        self._tat = max(self._tat, now + (found.limit - found.remaining) / self.rate)
