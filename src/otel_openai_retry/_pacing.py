"""Adaptive client-side pacing for one endpoint, engaged only after the server said 429.

Retrying alone cannot get a crowd of callers through a rate limit: they all wake together and hit
the limit again. Once an endpoint has answered 429, every attempt to it (first attempts too) takes
a send slot from a shared schedule:

- a ``Retry-After`` hint closes a gate for everyone until then, or, when the same answer's
  ``x-ratelimit-*`` headers give the refill rate, for one interval of it at most (a whole-second
  hint, rounded up, would idle the endpoint for most of a second the schedule can use); a hint
  longer than ``max_gate`` (the policy's ``max_retry_after``) is ignored, and no slot is ever
  more than ``max_gate`` away;
- OpenAI's ``x-ratelimit-limit/remaining/reset-requests`` headers, when present, give the server's
  refill rate: the schedule starts at it and never exceeds it, but a 429 past it (the limit is
  shared: a fleet's other processes) takes it down, AIMD-style, as below;
- without them, the rate is found from the answers alone: far over a limit (429s the majority),
  the schedule starts at once at a share of the success rate (``PROVISIONAL``: a bucket's burst
  inflates the first count), then at the rate successes come at once the burst is spent; a later
  429 sets it a margin (``BACKOFF``) under where the limit was met (the lower of the rate and the
  success rate over the last second: against a token bucket, the bucket's rate), at most once
  per ``DECREASE_GUARD`` and not for the 429s of slots booked before; successes raise it, a step
  each, or, near where the limit was met, by ``PROBE_PER_SECOND`` (a bucket's burst hides a small
  excess for seconds: a fast climb overshoots it by far before the next 429 says so), but not
  while the answers to it are judged (a trial, or a pace far over not yet judged): a rate that
  climbs past the limit meanwhile keeps its 429s and has a real limit judged not ours;
- when the schedule has not delayed anyone and no 429 came for ``DISENGAGE_AFTER`` seconds,
  pacing switches itself off, so an application that is within its limits pays nothing.

Pure state and arithmetic: the clock is passed in, the caller sleeps (``await`` or
``time.sleep``), so sync and async share it; a lock makes it safe across threads.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

from ._pacing_evidence import (
    BACKOFF,
    BUCKET,
    BUCKETS,
    FAR_OVER,
    PROBE_BAND,
    PROBE_PER_SECOND,
    PROVISIONAL,
    TRIAL_MARGIN,
    Answers,
    SendRate,
)
from ._pacing_trial import (
    DISENGAGE_AFTER,
    MIN_RATE,
    REFERENCE,
    SETTLED,
    TRIAL,
    TrialRules,
)
from ._rate_headers import MAX_HINT_RATE, parse_duration, refill_rate, shared_gate

__all__ = [
    "DISENGAGE_AFTER",
    "MAX_HINT_RATE",
    "MIN_RATE",
    "AdaptiveLimiter",
    "parse_duration",
    "refill_rate",
]

START_FLOOR = 20.0
"""Lowest starting rate without headers: a lone caller's retry is not held up behind its own
earlier request (its hint-based sleep already spaces it)."""
DECREASE_FACTOR = 0.85
ENGAGE_FACTOR = 0.85
"""An engagement starts at this share of the send rate measured over the last second."""
DECREASE_GUARD = 0.2
"""Seconds during which further 429s (from requests already in flight) do not cut the rate again."""
INCREASE_PER_SUCCESS = 0.5
INCREASE_FRACTION = 0.005
"""Each success while probing for capacity (no headers) adds the larger of these to the rate:
an absolute floor so a low rate recovers, a fraction so a high one does too."""
HINT_MARGIN = 0.98
"""Send slightly under the rate the headers announce, to absorb clock and latency noise."""
DEFAULT_MAX_GATE = 120.0
"""The policy's default ``max_retry_after``: the longest any caller waits for a slot."""
HORIZON = 0.5
"""Seconds ahead that a slot is booked at most. Further back in the queue, a caller is told to
ask again when its turn would be within them (a negative delay), nothing booked: a queue then
moves at the rate of now, not at the one it had when the caller came, and a limiter that
stands aside (the 429s were not ours) frees every caller within half a second, not after the
whole queue booked at a rate that was never needed. Half a second: after a decrease, the slots
booked before keep the old rate's spacing for that long, and without hints each probe past the
limit costs 429s for as long; a caller further back asks twice (a lock and a sleep), not more."""

CLEAN_REFUSED = 0.5
"""429s per success in the window a provisional rate is corrected from, at least, for its
successes to be the limit's rate: against a limit, a crowd's unpaced retries meet nearly as
many 429s as successes; under it, only the stragglers of sends made before meet any."""

FLOOR_MIN_SPAN = 0.1
FLOOR_MIN_SUCCESSES = 5
"""Fewer seconds or successes than these measure no success rate."""


class AdaptiveLimiter(TrialRules):
    """The shared send schedule of one endpoint."""

    __slots__ = (
        "_ceiling",
        "_grown_at",
        "_hinted",
        "_hold",
        "_last_delay",
        "_lock",
        "_max_gate",
        "_next_free",
        "_provisional",
    )

    def __init__(self, *, max_gate: float = DEFAULT_MAX_GATE) -> None:
        self.engaged = False
        self.rate = 0.0
        self._max_gate = max_gate if math.isfinite(max_gate) and max_gate >= 0 else 0.0
        self._next_free = 0.0
        self._hinted = 0.0
        """The highest refill rate the headers gave this engagement: each is a lower bound."""
        self._gate_until = 0.0
        self._ceiling = 0.0
        """Without headers: the rate at which the last 429 came (0: none yet)."""
        self._grown_at = 0.0
        self._provisional = False
        """Without headers: paced at a burst-inflated success rate until the clean one is in."""
        self._hold = 0.0
        """Without headers: until then 429s (to slots booked before a decrease) lower nothing."""
        self._last_decrease = -math.inf
        self._last_throttled = -math.inf
        self._last_delay = -math.inf
        self._sends = SendRate()
        self._answers = Answers(0.0)
        self._phase = SETTLED
        self._phase_since = 0.0
        """When the phase began."""
        self._reference = (0, 0, 0.0)
        """A trial's reference, measured unpaced: 429s, answers, successes per second."""
        self._unjudged = False
        """Paced far over a limit without a trial, its 429s not yet judged."""
        self._verdict_totals = (0, 0)
        self._independent_since: float | None = None
        self._baseline = 0.0
        """The 429 fraction when the 429s were judged rate-independent."""
        self._lock = threading.Lock()

    def reserve(self, now: float, latest: float = math.inf) -> float | None:
        """Take the next send slot; return how long to wait for it (0 when not engaged), or,
        for a slot beyond ``HORIZON``, minus how long to wait before asking again.

        A slot that would come after ``latest`` (the caller's deadline) is not taken: ``None``,
        and the schedule is left as it was, so a caller who cannot wait delays nobody else. A
        slot more than ``max_gate`` away is not taken either: the caller waits ``max_gate``.
        """
        if not self.engaged:  # cheap bookkeeping only: the send rate seeds an engagement
            self._sends.add(now)
            return 0.0
        with self._lock:
            if (
                now - self._last_throttled > DISENGAGE_AFTER
                and now - self._last_delay > DISENGAGE_AFTER
            ):
                self.engaged = False
                return 0.0
            measuring = self._phase == REFERENCE  # the natural rates: no schedule, gates only
            start = (
                max(now, self._gate_until)
                if measuring
                else max(now, self._gate_until, self._next_free)
            )
            if start >= latest:
                return None
            delay = start - now
            if delay > self._max_gate:  # never: the cap, and the schedule left as it was
                self._last_delay = now
                return self._max_gate if now + self._max_gate < latest else None
            if delay > HORIZON:  # ask again nearer the turn: nothing booked
                self._last_delay = max(self._last_delay, start - HORIZON)  # delayed until then
                return HORIZON - delay
            if not measuring:
                self._next_free = start + 1.0 / self.rate
            if delay > 0.001:
                self._last_delay = now
            return delay

    def on_success(self, now: float, headers: Mapping[str, str] | None) -> None:
        if not self.engaged:
            if self._independent_since is not None:
                with self._lock:
                    self._watch_independent(now, throttled=False)
            return
        with self._lock:
            hinted = refill_rate(headers) if headers is not None else None
            if hinted is not None:
                self._follow(hinted, now, throttled=False)
            elif self._provisional:
                self._measure_clean(now)
            elif (
                self._phase != TRIAL
                and not self._unjudged
                and now - self._last_decrease >= DECREASE_GUARD
            ):
                self._grow(now)
            if self._answers.add(now, throttled=False) and hinted is None:
                self._next_phase(now)

    def on_throttled(
        self, now: float, retry_after: float | None, headers: Mapping[str, str] | None
    ) -> None:
        """The server answered 429: engage, close the gate, slow down (unless we learnt that
        slowing down does not help)."""
        with self._lock:
            if self._independent_since is not None and self._watch_independent(now, throttled=True):
                return
            self._last_throttled = now
            hinted = refill_rate(headers) if headers is not None else None
            gate = shared_gate(retry_after, hinted, self._max_gate)
            if gate is not None and (self._phase == SETTLED or not self.engaged):
                self._gate_until = max(self._gate_until, now + gate)
            if not self.engaged:
                self._engage(now)
            elif hinted is None and self._provisional:
                self._measure_clean(now)
            elif hinted is None:
                self._decrease(now)
            if hinted is not None:
                self._follow(hinted, now, throttled=True)
            if self._answers.add(now, throttled=True) and hinted is None:
                self._next_phase(now)

    def stand_aside(self, now: float) -> None:
        """Told that the 429s do not depend on the send rate (a fleet judged so from all its
        processes' answers): stand aside now, the 429 fraction lately as the verdict's."""
        with self._lock:
            if self._independent_since is not None:
                return
            ok, throttled, _ = self._answers.recent(now, BUCKETS - 1)
            self._settle(now)
            self._stand_aside(now, throttled / max(1, ok + throttled))

    def _follow(self, hinted: float, now: float, throttled: bool) -> None:
        """The headers' rate (the highest they gave: each is a lower bound) is the server's, for
        everyone its limit covers: the first one is where the schedule starts; past it, a 429
        means others (a fleet's other processes) send too, so the rate goes down (at most once
        per ``DECREASE_GUARD``), and each success takes it back up towards the headers' rate."""
        first = self._hinted <= 0.0
        self._hinted = max(self._hinted, hinted)
        ceiling = max(MIN_RATE, self._hinted * HINT_MARGIN)
        self._phase = SETTLED
        if first:
            self.rate = ceiling
        elif now - self._last_decrease < DECREASE_GUARD:
            self.rate = min(self.rate, ceiling)
        elif throttled:
            self.rate = max(MIN_RATE, min(self.rate, ceiling) * DECREASE_FACTOR)
            self._last_decrease = now
        else:
            increase = max(INCREASE_PER_SUCCESS, self.rate * INCREASE_FRACTION)
            self.rate = min(ceiling, self.rate + increase)

    def _measure_clean(self, now: float) -> None:
        """After a provisional rate: the rate successes come at once a bucket's burst (spent
        first) is, from half a bucket after the engagement began: the schedule's and ceiling.

        Only while the limit still turns sends away (``CLEAN_REFUSED``) is that the limit's
        rate. With hardly a 429 among them, the sends came under it (the provisional schedule
        itself, or callers asleep in their backoff): the rate measured is a floor, and taken as
        the ceiling it would hold the schedule there, probing up a few percent a second."""
        later, refused, spanned = self._answers.after(now, self._answers.since + BUCKET / 2)
        if spanned < BUCKET * 0.9 or later < FLOOR_MIN_SUCCESSES:
            return
        self._provisional = False
        measured = later / spanned
        # While its answers are judged (``_unjudged``), well under the rate measured, as a
        # trial: a short window's edges inflate it, and a pace a little over the limit keeps
        # half its 429s and has a real limit judged not ours.
        margin = TRIAL_MARGIN if self._unjudged else BACKOFF
        if refused >= CLEAN_REFUSED * later:
            self._ceiling = measured
            self.rate = max(MIN_RATE, measured * margin)
        else:  # a floor: grow from here as before any 429, until one says where the limit is
            self._ceiling = 0.0
            self.rate = max(MIN_RATE, self.rate, measured * margin)
        self._last_decrease = self._grown_at = now
        self._hold = max(now, self._next_free)

    def _judged_ours(self, now: float) -> None:
        """Judged under a trial's margin: now at the usual one under where the limit was met."""
        if self._ceiling and not self._provisional:
            self.rate = max(self.rate, MIN_RATE, self._ceiling * BACKOFF)
            self._grown_at = now

    def _grow(self, now: float) -> None:
        """Additive increase per success, or, near the rate that met the last 429, a slow probe
        by time; past the band, that rate is forgotten (the limit rose)."""
        low, high = PROBE_BAND
        ceiling = self._ceiling
        if ceiling and self.rate > high * ceiling:
            self._ceiling = ceiling = 0.0
        if ceiling and self.rate >= low * ceiling:
            self.rate += self.rate * PROBE_PER_SECOND * min(1.0, max(0.0, now - self._grown_at))
        else:
            self.rate += max(INCREASE_PER_SUCCESS, self.rate * INCREASE_FRACTION)
        self._grown_at = now

    def _engage(self, now: float) -> None:
        self._hinted = 0.0
        self.rate = max(START_FLOOR, self._sends.rate(now) * ENGAGE_FACTOR)
        self._last_decrease = self._grown_at = now
        self._ceiling = self._hold = 0.0
        self._provisional = False
        self.engaged = True
        self._next_free = max(now, self._gate_until)
        self._answers = Answers(now)
        self._phase = REFERENCE
        self._phase_since = now
        self._reference = (0, 0, 0.0)

    def _decrease(self, now: float) -> None:
        """Far over a limit (429s the majority, successes measured), straight down to the rate
        the successes come at; else a multiplicative decrease (once per guard), floored at that
        rate. Only the first while a trial is prepared (the trial will tell), neither during it."""
        if self._phase == TRIAL:
            return
        ok, throttled, span = self._answers.last_second(now)
        succeeding = ok / span if span >= FLOOR_MIN_SPAN and ok >= FLOOR_MIN_SUCCESSES else 0.0
        measuring = self._phase == REFERENCE
        if measuring and succeeding and throttled >= FAR_OVER * ok:
            # No doubt: pace now, no trial; at once at this rate (a bucket's burst, spent
            # first, inflates it), then at the clean one as soon as it is measured.
            self._provisional = True
            lowered = succeeding * PROVISIONAL
            self._reference = (throttled, ok + throttled, succeeding)  # see _slowing_did_not_help
            self._settle_unjudged(now)
        elif self._phase == REFERENCE or now < max(
            self._last_decrease + DECREASE_GUARD, self._hold
        ):
            return  # measuring; or answers to slots booked before the last decrease
        else:
            self._ceiling = min(self.rate, succeeding or self.rate)
            lowered = self._ceiling * BACKOFF
        if lowered < self.rate:
            self.rate = max(MIN_RATE, lowered)
            self._last_decrease = self._grown_at = now
            # Slots booked before now keep the old rate's spacing: their 429s are no news.
            self._hold = max(now, self._next_free)
