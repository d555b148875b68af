"""Adaptive client-side pacing for one endpoint, engaged only after the server said 429.

Retrying alone cannot get a crowd of callers through a rate limit: they all wake together and hit
the limit again. Once an endpoint has answered 429, every attempt to it (first attempts too) takes
a send slot from a shared schedule:

- a ``Retry-After`` hint closes a gate for everyone until then; a hint longer than ``max_gate``
  (the policy's ``max_retry_after``) is ignored, and no slot is ever more than ``max_gate`` away;
- OpenAI's ``x-ratelimit-limit/remaining/reset-requests`` headers, when present, give the server's
  refill rate, and the schedule sends at that rate (they are trusted over any estimate);
- without them, the rate adapts AIMD-style, as the AWS SDK's adaptive retry mode does: it starts
  from the send rate measured over the last second (what provoked the 429), then additive
  increase per success, multiplicative decrease on a 429 (at most once per ``DECREASE_GUARD``),
  but never below the rate at which successes are coming back: against a token bucket that rate
  is the bucket's, so slowing below it would only waste capacity;
- when the schedule has not delayed anyone and no 429 came for ``DISENGAGE_AFTER`` seconds,
  pacing switches itself off, so an application that is within its limits pays nothing.

Not every 429 says "slower": a limit shared with other applications rejects a fraction of our
requests however slowly we send, and pacing would then only add waiting. So, without header rates,
an engagement starts with a trial of whether the 429 fraction responds to our rate. It first
measures the answers unpaced (``REFERENCE``: gates apply, the schedule does not, so the rates
measured are the natural ones; 429s ``FAR_OVER`` times the successes end it at once, pacing at the
success rate, when there is no doubt), then sends a little under the rate the successes came at
(``TRIAL``): against a limit that rate gets as many through and the 429s vanish; against a
rate-independent one, they stay. Our rate is judged to matter only if the 429 fraction fell by
half and by ``TRIAL_EVIDENCE`` standard errors; otherwise pacing stands aside (no gate, no
schedule: each caller's own retry sleep still honours its hint) until the 429 fraction climbs
clearly above the verdict's, the 429s stop, or ``INDEPENDENT_HOLD`` passes. When it does matter,
AIMD goes on (``SETTLED``); should the rate then fall well below the reference's success rate
with the 429 fraction not falling with it, the verdict was unlucky and pacing stands aside at
once; else a new trial runs after ``RETRIAL_AFTER``. Further ``Retry-After`` gates apply once
settled.

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
MAX_HINT_RATE = 1e6
"""Requests per second above which a header's rate is nonsense (and pacing at it meaningless)."""
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
DISENGAGE_AFTER = 5.0
HINT_MARGIN = 0.98
"""Send slightly under the rate the headers announce, to absorb clock and latency noise."""
DEFAULT_MAX_GATE = 120.0
"""The policy's default ``max_retry_after``: the longest any caller waits for a slot."""

SEND_RATE_SPAN = 0.25
"""Shortest span the send rate is measured over (sends began this recently: a burst)."""
BUCKET = 0.1
"""Seconds per bucket of the answer counts the estimator reads."""
BUCKETS = 30
FLOOR_WINDOW = 10
"""Buckets (1 s) over which the success rate (the decrease floor) and a trial's reference are
measured."""
FLOOR_MIN_SPAN = 0.1
FLOOR_MIN_SUCCESSES = 5
"""Fewer seconds or successes than these measure no success rate."""
FAR_OVER = 2
"""While the reference is measured, 429s this many times the successes over the last second end
it at once (no doubt: pacing is needed). Only then: a 429 comes back at once and a success after
the latency, so early counts overstate the 429 fraction."""
TRIAL_WINDOW = 5
"""Buckets (0.5 s) of answers that judge a trial."""
TRIAL_LAG = 0.3
"""Seconds after a trial starts before its answers count: requests in flight were sent before."""
TRIAL_MARGIN = 0.9
"""A trial sends slightly under the success rate it measured (a bucket's burst inflates it)."""
TRIAL_KEPT = 0.5
"""Our rate matters only if the trial's 429 fraction fell to this share of the reference's..."""
TRIAL_EVIDENCE = 2.5
"""... and the fall is this many standard errors (a two-proportion z-test): a 10 % fraction
measured over 100 answers varies by a third, so a fall by half alone proves nothing, and wrongly
judging the 429s rate-dependent slows everyone down for ``RETRIAL_AFTER``."""
TRIAL_TIMEOUT = 5.0
TRIAL_MIN_ANSWERS = 100
"""Answers a trial's reference and its verdict each wait for (or for ``TRIAL_TIMEOUT``): with
fewer, a 10 % fraction of 429s is too noisy to tell from half of it."""
UNHELPED_SHARE = 0.8
"""A verdict that our rate matters is withdrawn once pacing is below this share of the
reference's success rate and the 429 fraction has not clearly fallen: slowing did not help."""
RETRIAL_AFTER = 10.0
"""Seconds after a verdict of "our rate matters" before the next trial: a wrong verdict (or a
limit that changed) does not pace the endpoint for good."""
INDEPENDENT_HOLD = 60.0
"""Seconds a verdict of rate-independent 429s stands before a new trial may run."""
INDEPENDENT_RISE = 0.15
"""Rate-independent mode ends when the 429 fraction exceeds twice its verdict's fraction and this
much more than it: a new limit that our rate does hit."""
INDEPENDENT_MIN_ANSWERS = 30

_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,12})?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_COUNT = re.compile(r"\d{1,15}")
MAX_RESET = 7 * 86400.0
"""A reset duration beyond a week is no rate limit OpenAI has: ignored."""


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations: ``"20ms"``, ``"1s"``, ``"6m0s"``, ``"1h2m3.5s"``; or seconds.

    ``None`` for anything else, including what is not a finite number of seconds.
    """
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
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    return seconds if math.isfinite(seconds) else None


def _count(headers: Mapping[str, str], name: str) -> int | None:
    """A header holding a plain count (digits only, at most 15 of them), else ``None``."""
    value = headers.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return int(value) if _COUNT.fullmatch(value) else None


def refill_rate(headers: Mapping[str, str]) -> float | None:
    """Requests per second the server refills, from ``x-ratelimit-*-requests``, if it says.

    Hostile values (huge, negative, non-numeric, non-finite, a reset of a year) say nothing:
    ``None``, never an exception; a rate, when given, is finite and at most ``MAX_HINT_RATE``.
    """
    try:
        limit = _count(headers, "x-ratelimit-limit-requests")
        remaining = _count(headers, "x-ratelimit-remaining-requests")
        reset_text = headers.get("x-ratelimit-reset-requests")
    except Exception:  # a mapping that fails to read is no hint
        return None
    if limit is None or remaining is None or not isinstance(reset_text, str):
        return None
    reset = parse_duration(reset_text)
    if reset is None or not 0 < reset <= MAX_RESET or limit <= remaining:
        return None
    rate = (limit - remaining) / reset
    return rate if math.isfinite(rate) and 0 < rate <= MAX_HINT_RATE else None


class _Answers:
    """Successes and 429s counted per ``BUCKET`` seconds over the last ``BUCKETS`` buckets."""

    __slots__ = ("_index", "_ok", "_throttled", "since")

    def __init__(self, now: float) -> None:
        self._ok = [0] * BUCKETS
        self._throttled = [0] * BUCKETS
        self._index = math.floor(now / BUCKET)
        self.since = now

    def add(self, now: float, throttled: bool) -> bool:
        """Count one answer; ``True`` when a new bucket began (time to re-judge)."""
        index = math.floor(now / BUCKET)
        rolled = index > self._index
        if rolled:
            for step in range(self._index + 1, min(index, self._index + BUCKETS) + 1):
                self._ok[step % BUCKETS] = self._throttled[step % BUCKETS] = 0
            self._index = index
        counts = self._throttled if throttled else self._ok
        counts[self._index % BUCKETS] += 1
        return rolled

    def last_second(self, now: float) -> tuple[int, int, float]:
        """Successes, 429s and the seconds they span over the last second, this bucket included."""
        ok, throttled, _ = self.recent(now, FLOOR_WINDOW - 1)
        if math.floor(now / BUCKET) == self._index:
            ok += self._ok[self._index % BUCKETS]
            throttled += self._throttled[self._index % BUCKETS]
        return ok, throttled, min(FLOOR_WINDOW * BUCKET, now - self.since)

    def after(self, now: float, start: float) -> tuple[int, int, float]:
        """Like :meth:`recent`, over the whole buckets that began at ``start`` or later."""
        return self.recent(
            now, min(BUCKETS - 1, math.floor(now / BUCKET) - math.ceil(start / BUCKET))
        )

    def recent(self, now: float, buckets: int) -> tuple[int, int, float]:
        """Successes, 429s and the seconds they span, over the last ``buckets`` whole buckets
        (the current, partial one left out); fewer seconds if counting began later."""
        index = math.floor(now / BUCKET)
        ok = throttled = 0
        for step in range(max(index - buckets, self._index - BUCKETS + 1), index):
            if step <= self._index:
                ok += self._ok[step % BUCKETS]
                throttled += self._throttled[step % BUCKETS]
        span = index * BUCKET - max((index - buckets) * BUCKET, self.since)
        return ok, throttled, span


def _fell(throttled: int, answers: int, trial_throttled: int, trial_answers: int) -> bool:
    """Whether the trial's 429 fraction fell clearly below the reference's: by ``TRIAL_KEPT``
    at least, and by ``TRIAL_EVIDENCE`` standard errors (so that noise does not make it)."""
    if not (answers and trial_answers):
        return False
    before, during = throttled / answers, trial_throttled / trial_answers
    if during > TRIAL_KEPT * before:
        return False
    pooled = (throttled + trial_throttled) / (answers + trial_answers)
    error = math.sqrt(pooled * (1.0 - pooled) * (1.0 / answers + 1.0 / trial_answers))
    return error == 0.0 or before - during >= TRIAL_EVIDENCE * error


_REFERENCE, _TRIAL, _SETTLED = 0, 1, 2
"""The phases of an engagement without header rates: measuring, trying the success rate, AIMD."""


class AdaptiveLimiter:
    """The shared send schedule of one endpoint."""

    __slots__ = (
        "_answers",
        "_baseline",
        "_gate_until",
        "_independent_since",
        "_last_decrease",
        "_last_delay",
        "_last_throttled",
        "_lock",
        "_max_gate",
        "_next_free",
        "_phase",
        "_phase_since",
        "_reference",
        "_send_bucket",
        "_send_count",
        "_send_since",
        "_sends_last_second",
        "engaged",
        "rate",
    )

    def __init__(self, *, max_gate: float = DEFAULT_MAX_GATE) -> None:
        self.engaged = False
        self.rate = 0.0
        self._max_gate = max_gate if math.isfinite(max_gate) and max_gate >= 0 else 0.0
        self._next_free = 0.0
        self._gate_until = 0.0
        self._last_decrease = -math.inf
        self._last_throttled = -math.inf
        self._last_delay = -math.inf
        self._send_bucket = 0
        self._send_count = 0
        self._send_since = 0.0
        self._sends_last_second = 0
        self._answers = _Answers(0.0)
        self._phase = _SETTLED
        self._phase_since = 0.0
        """When the phase began."""
        self._reference = (0, 0, 0.0)
        """A trial's reference, measured unpaced: 429s, answers, successes per second."""
        self._independent_since: float | None = None
        self._baseline = 0.0
        """The 429 fraction when the 429s were judged rate-independent."""
        self._lock = threading.Lock()

    @property
    def independent(self) -> bool:
        """Whether the 429s lately were judged not to depend on the send rate."""
        return self._independent_since is not None

    def reserve(self, now: float, latest: float = math.inf) -> float | None:
        """Take the next send slot; return how long to wait for it (0 when not engaged).

        A slot that would come after ``latest`` (the caller's deadline) is not taken: ``None``,
        and the schedule is left as it was, so a caller who cannot wait delays nobody else. A
        slot more than ``max_gate`` away is not taken either: the caller waits ``max_gate``.
        """
        if not self.engaged:  # cheap bookkeeping only: the send rate seeds an engagement
            bucket = int(now)
            if bucket != self._send_bucket:
                if bucket == self._send_bucket + 1:
                    self._sends_last_second = self._send_count
                else:
                    self._sends_last_second, self._send_since = 0, now
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
            measuring = self._phase == _REFERENCE  # the natural rates: no schedule, gates only
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
            if not measuring:
                self._next_free = start + 1.0 / self.rate
            if delay > 0.001:
                self._last_delay = now
            return delay

    def _send_rate(self, now: float) -> float:
        """Sends per second over about the last second, from the unengaged bookkeeping."""
        into = now - self._send_bucket
        if 0 <= into < 1:
            sent = self._send_count + self._sends_last_second * (1.0 - into)
        elif 1 <= into < 2:  # nothing sent yet in this second
            sent = self._send_count * (2.0 - into)
        else:
            return 0.0
        return sent / max(SEND_RATE_SPAN, min(1.0, now - self._send_since))

    def on_success(self, now: float, headers: Mapping[str, str] | None) -> None:
        if not self.engaged:
            if self._independent_since is not None:
                with self._lock:
                    self._watch_independent(now, throttled=False)
            return
        with self._lock:
            hinted = refill_rate(headers) if headers is not None else None
            if hinted is not None:
                self.rate = max(MIN_RATE, hinted * HINT_MARGIN)
                self._phase = _SETTLED
            elif self._phase != _TRIAL and now - self._last_decrease >= DECREASE_GUARD:
                self.rate += max(INCREASE_PER_SUCCESS, self.rate * INCREASE_FRACTION)
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
            if (
                retry_after is not None
                and math.isfinite(retry_after)
                and 0 <= retry_after <= self._max_gate
                and (self._phase == _SETTLED or not self.engaged)
            ):
                self._gate_until = max(self._gate_until, now + retry_after)
            hinted = refill_rate(headers) if headers is not None else None
            if not self.engaged:
                self._engage(now)
            elif hinted is None:
                self._decrease(now)
            if hinted is not None:
                self.rate = max(MIN_RATE, hinted * HINT_MARGIN)
                self._phase = _SETTLED
            if self._answers.add(now, throttled=True) and hinted is None:
                self._next_phase(now)

    def _engage(self, now: float) -> None:
        self.rate = max(START_FLOOR, self._send_rate(now) * ENGAGE_FACTOR)
        self._last_decrease = now
        self.engaged = True
        self._next_free = max(now, self._gate_until)
        self._answers = _Answers(now)
        self._phase = _REFERENCE
        self._phase_since = now
        self._reference = (0, 0, 0.0)

    def _decrease(self, now: float) -> None:
        """Far over a limit (429s the majority, successes measured), straight down to the rate
        the successes come at; else a multiplicative decrease (once per guard), floored at that
        rate. Only the first while a trial is prepared (the trial will tell), neither during it."""
        if self._phase == _TRIAL:
            return
        ok, throttled, span = self._answers.last_second(now)
        succeeding = ok / span if span >= FLOOR_MIN_SPAN and ok >= FLOOR_MIN_SUCCESSES else 0.0
        measuring = self._phase == _REFERENCE
        if succeeding and throttled >= (FAR_OVER if measuring else 1) * ok:
            lowered = succeeding * TRIAL_MARGIN  # a short count: a bucket's burst inflates it
            if measuring:  # no doubt: pace now, no trial
                self._settle(now)
        elif self._phase == _REFERENCE or now - self._last_decrease < DECREASE_GUARD:
            return
        else:
            lowered = max(self.rate * DECREASE_FACTOR, succeeding)
        if lowered < self.rate:
            self.rate = max(MIN_RATE, lowered)
            self._last_decrease = now

    def _next_phase(self, now: float) -> None:
        """At each new bucket: begin the trial once there is a reference, judge it once its
        answers are in."""
        if self._phase == _REFERENCE:
            began = self._phase_since
            ok, throttled, span = self._answers.after(now, began)
            if span < TRIAL_WINDOW * BUCKET * 0.9 or (
                ok + throttled < TRIAL_MIN_ANSWERS and now - began < TRIAL_TIMEOUT
            ):
                return
            if ok + throttled < TRIAL_WINDOW:  # too few answers to judge by: plain AIMD
                self._settle(now)
                return
            if throttled >= ok:  # far over a limit: no doubt our rate matters
                self._settle(now)
                return
            # Send at the rate the successes come at: against a limit, that rate gets as many
            # through and the 429s vanish; against a rate-independent one, they stay.
            self.rate = max(MIN_RATE, ok / span * TRIAL_MARGIN)
            self._last_decrease = now
            self._phase_since = now
            self._reference = (throttled, ok + throttled, ok / span)
            self._phase = _TRIAL
        elif self._phase == _TRIAL:
            started = self._phase_since
            if now - started < TRIAL_LAG + TRIAL_WINDOW * BUCKET:
                return
            ok, throttled, _ = self._answers.after(now, started + TRIAL_LAG)
            if ok + throttled < TRIAL_MIN_ANSWERS and now - started < TRIAL_TIMEOUT:
                return
            self._settle(now)
            if not _fell(*self._reference[:2], throttled, ok + throttled):
                self._stand_aside(now, throttled / (ok + throttled))
        elif now - self._phase_since > RETRIAL_AFTER:  # unpaced again, briefly: still a limit?
            self._phase = _REFERENCE
            self._phase_since = now
            self._reference = (0, 0, 0.0)
        elif self._slowing_did_not_help(now):
            ok, throttled, _ = self._answers.recent(now, BUCKETS - 1)
            self._stand_aside(now, throttled / (ok + throttled))

    def _slowing_did_not_help(self, now: float) -> bool:
        """After a verdict that our rate matters: whether the rate has since fallen far below
        the reference's success rate and the 429 fraction has not fallen with it. A trial can
        be unlucky; this corrects its verdict long before ``RETRIAL_AFTER``."""
        throttled, answers, succeeding = self._reference
        if not answers or self.rate >= UNHELPED_SHARE * succeeding:
            return False
        ok, rejected, _ = self._answers.after(now, self._phase_since)
        return ok + rejected >= TRIAL_MIN_ANSWERS and not _fell(
            throttled, answers, rejected, ok + rejected
        )

    def _settle(self, now: float) -> None:
        self._phase = _SETTLED
        self._phase_since = now

    def _stand_aside(self, now: float, fraction: float) -> None:
        """The 429s do not depend on our rate: no gate, no schedule, until told otherwise."""
        self.engaged = False
        self._independent_since = now
        self._baseline = fraction
        self._gate_until = 0.0
        self._send_count = self._sends_last_second = 0

    def _watch_independent(self, now: float, *, throttled: bool) -> bool:
        """Count an answer while standing aside; ``False`` when that is over (the 429s stopped,
        the verdict is old, or the 429 fraction rose well above the verdict's)."""
        since = self._independent_since
        if since is None:
            return False
        if throttled:
            if now - self._last_throttled > DISENGAGE_AFTER or now - since > INDEPENDENT_HOLD:
                self._independent_since = None
                return False
            self._last_throttled = now
        elif now - self._last_throttled > DISENGAGE_AFTER:
            self._independent_since = None
            return False
        if self._answers.add(now, throttled) and throttled:
            ok, rejected, _ = self._answers.recent(now, BUCKETS - 1)
            answers = ok + rejected
            baseline = self._baseline
            if answers >= INDEPENDENT_MIN_ANSWERS and rejected / answers > max(
                2 * baseline, baseline + INDEPENDENT_RISE
            ):
                self._independent_since = None
                return False
        return True
