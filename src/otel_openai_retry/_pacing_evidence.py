"""The evidence pacing judges by: answers counted per time bucket, and whether a 429 fraction
fell by more than noise explains."""

from __future__ import annotations

import math

__all__ = [
    "BACKOFF",
    "BUCKET",
    "BUCKETS",
    "FALLEN_MIN_ANSWERS",
    "FAR_OVER",
    "FLOOR_WINDOW",
    "HELD_MIN_ANSWERS",
    "INDEPENDENT_HOLD",
    "INDEPENDENT_MIN_ANSWERS",
    "INDEPENDENT_RISE",
    "PROBE_BAND",
    "PROBE_PER_SECOND",
    "PROVISIONAL",
    "REFERENCE_MIN_ANSWERS",
    "RETRIAL_AFTER",
    "TRIAL_EVIDENCE",
    "TRIAL_KEPT",
    "TRIAL_LAG",
    "TRIAL_MARGIN",
    "TRIAL_MIN_ANSWERS",
    "TRIAL_RESIDUE",
    "TRIAL_TIMEOUT",
    "TRIAL_WINDOW",
    "UNHELPED_SHARE",
    "WATCH_EVIDENCE",
    "WATCH_RISE",
    "Answers",
    "SendRate",
    "fell",
    "held",
    "reference_suffices",
    "rose",
]

BUCKET = 0.1
"""Seconds per bucket of the answer counts the estimator reads."""
BUCKETS = 30
FLOOR_WINDOW = 10
"""Buckets (1 s) over which the success rate (the decrease floor) and a trial's reference are
measured."""
TRIAL_KEPT = 0.5
"""Our rate matters only if the trial's 429 fraction fell to this share of the reference's..."""
TRIAL_EVIDENCE = 2.5
"""... and the fall is this many standard errors (a two-proportion z-test): a 10 % fraction
measured over 100 answers varies by a third, so a fall by half alone proves nothing, and wrongly
judging the 429s rate-dependent slows everyone down for ``RETRIAL_AFTER``."""


FAR_OVER = 2
"""While the reference is measured, 429s this many times the successes over the last second end
it at once (no doubt: pacing is needed). Only then: a 429 comes back at once and a success after
the latency, so early counts overstate the 429 fraction."""
TRIAL_WINDOW = 5
"""Buckets (0.5 s) of answers that judge a trial."""
TRIAL_LAG = 0.3
"""Seconds after a trial starts before its answers count: requests in flight were sent before."""
TRIAL_MARGIN = 0.8
"""A trial sends this share of the success rate it measured: a bucket's burst inflates that rate
(by a tenth or more over a short reference), and a trial sent at the limit meets 429s from a busy
client's bunched sends, which would judge a real limit not one of ours."""
TRIAL_TIMEOUT = 5.0
TRIAL_MIN_ANSWERS = 100
"""Answers a trial's reference and its verdict each wait for (or for ``TRIAL_TIMEOUT``): with
fewer, a 10 % fraction of 429s is too noisy to tell from half of it."""
REFERENCE_MIN_ANSWERS = 20
TRIAL_RESIDUE = 10
"""A reference with a large 429 fraction ends sooner: once it has this many answers and a trial
of ``TRIAL_MIN_ANSWERS`` answers with this many 429s left (answers to requests sent before it,
or bunched by a busy client) would be judged a fall. Its 429s are what the reference costs:
measured unpaced, at the natural rate."""
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

# Finding the rate without any hint (see ``_pacing``):
PROBE_PER_SECOND = 0.03
"""Without headers, near the rate that last met a 429 (``PROBE_BAND`` of it), the rate grows by
this share per second only: a bucket's burst hides a small excess for seconds, so a fast climb
overshoots it far before the first 429 says so."""
PROBE_BAND = (0.85, 1.1)
PROVISIONAL = 0.7
"""The share of the first success rate measured (a bucket's burst inflates it) paced at until a
clean one is measured."""
BACKOFF = 0.95
"""Without headers, a 429 to a settled schedule sets the rate to this share of the lower of the
rate and the success rate over the last second: where the limit was met, minus a margin."""
SEND_RATE_SPAN = 0.25
"""Shortest span the send rate is measured over (sends began this recently: a burst)."""


class SendRate:
    """Sends per second over about the last second, counted per whole second: what provoked a
    first 429, and so where an engagement starts."""

    __slots__ = ("_bucket", "_count", "_last_second", "_since")

    def __init__(self) -> None:
        self._bucket = 0
        self._count = 0
        self._since = 0.0
        self._last_second = 0

    def add(self, now: float) -> None:
        bucket = int(now)
        if bucket != self._bucket:
            if bucket == self._bucket + 1:
                self._last_second = self._count
            else:
                self._last_second, self._since = 0, now
            self._bucket, self._count = bucket, 0
        self._count += 1

    def forget(self) -> None:
        self._count = self._last_second = 0

    def rate(self, now: float) -> float:
        into = now - self._bucket
        if 0 <= into < 1:
            sent = self._count + self._last_second * (1.0 - into)
        elif 1 <= into < 2:  # nothing sent yet in this second
            sent = self._count * (2.0 - into)
        else:
            return 0.0
        return sent / max(SEND_RATE_SPAN, min(1.0, now - self._since))


class Answers:
    """Successes and 429s counted per ``BUCKET`` seconds over the last ``BUCKETS`` buckets,
    and in all since ``since`` (``totals``: what a verdict older than the buckets is judged by)."""

    __slots__ = ("_index", "_ok", "_throttled", "ok_total", "since", "throttled_total")

    def __init__(self, now: float) -> None:
        self._ok = [0] * BUCKETS
        self._throttled = [0] * BUCKETS
        self._index = math.floor(now / BUCKET)
        self.since = now
        self.ok_total = self.throttled_total = 0

    def add(self, now: float, throttled: bool, weight: int = 1) -> bool:
        """Count one answer (``weight`` of them: a token count); ``True`` when a new bucket
        began (time to re-judge)."""
        index = math.floor(now / BUCKET)
        rolled = index > self._index
        if rolled:
            for step in range(self._index + 1, min(index, self._index + BUCKETS) + 1):
                self._ok[step % BUCKETS] = self._throttled[step % BUCKETS] = 0
            self._index = index
        if throttled:
            self._throttled[self._index % BUCKETS] += weight
            self.throttled_total += weight
        else:
            self._ok[self._index % BUCKETS] += weight
            self.ok_total += weight
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


def fell(throttled: int, answers: int, trial_throttled: int, trial_answers: int) -> bool:
    """Whether the trial's 429 fraction fell clearly below the reference's: by ``TRIAL_KEPT``
    at least, and by ``TRIAL_EVIDENCE`` standard errors (so that noise does not make it)."""
    if not (answers and trial_answers):
        return False
    before, during = throttled / answers, trial_throttled / trial_answers
    if during > TRIAL_KEPT * before:
        return False
    error = _pooled_error(throttled, answers, trial_throttled, trial_answers)
    return error == 0.0 or before - during >= TRIAL_EVIDENCE * error


WATCH_RISE = 1.5
"""How many times as frequent as paced a watch wants the unpaced 429s at least (beyond noise
too). Against a limit the verdict wrongly left, they came 2-2.5 times as often; 429s that do
not depend on our rate come about as often, and by noise alone seldom half as often again
over a hundred answers."""
WATCH_EVIDENCE = 4.0
"""Standard errors the rise must pass: more than a trial's verdict wants, for the verdict to
stand aside is reached more often when the paced answers happened to bring few 429s (their
fraction not fallen enough), and unpaced, the fraction comes back to what it is (a tenth of
429s that do not depend on our tokens, with the bar at a trial's 2.5, came back so in 2 of
the tests' 24 simulated runs). Against a limit the verdict wrongly left, the rise was 5
errors and more."""


def rose(throttled: int, answers: int, later_throttled: int, later_answers: int) -> bool:
    """Whether the later 429 fraction rose from the earlier one by ``WATCH_RISE`` at least,
    and by ``WATCH_EVIDENCE`` standard errors (the z-test of :func:`fell`, the other way)."""
    if not (answers and later_answers):
        return False
    before, after = throttled / answers, later_throttled / later_answers
    if after <= before or after < WATCH_RISE * before:
        return False
    error = _pooled_error(throttled, answers, later_throttled, later_answers)
    return error == 0.0 or after - before >= WATCH_EVIDENCE * error


def _pooled_error(throttled: int, answers: int, other_throttled: int, other_answers: int) -> float:
    """The standard error of the difference of two 429 fractions, were they one (pooled)."""
    pooled = (throttled + other_throttled) / (answers + other_answers)
    return math.sqrt(pooled * (1.0 - pooled) * (1.0 / answers + 1.0 / other_answers))


FALLEN_MIN_ANSWERS = 20
"""Paced far over a limit (429s at least twice the successes), answers enough to show the 429s
fell, when they did, clearly. A rate-independent fraction of two in three seems to fall by half
and by ``TRIAL_EVIDENCE`` standard errors in 20 answers about once in a thousand (nine in ten:
once in a million), and pacing it then wrongly is still watched (``UNHELPED_SHARE``, the
retrial). Waiting for ``TRIAL_MIN_ANSWERS`` would hold the schedule a trial's margin under the
limit a second longer."""

HELD_MIN_ANSWERS = 10
"""Fewer answers than these show nothing held, however many of them are 429s."""


def held(throttled: int, answers: int, trial_throttled: int, trial_answers: int) -> bool:
    """Whether the trial's 429 fraction is clearly above ``TRIAL_KEPT`` of the reference's, by
    ``TRIAL_EVIDENCE`` standard errors: no fall by half, already, so its verdict need not wait
    for all its answers (while it waits, everyone is paced at the rate it tries)."""
    if answers <= 0 or trial_answers < HELD_MIN_ANSWERS:
        return False
    before, during = throttled / answers, trial_throttled / trial_answers
    error = math.sqrt(
        during * (1.0 - during) / trial_answers
        + TRIAL_KEPT * TRIAL_KEPT * before * (1.0 - before) / answers
    )
    return during - TRIAL_KEPT * before > TRIAL_EVIDENCE * error


def reference_suffices(throttled: int, answers: int) -> bool:
    """Whether a trial's reference has answers enough: ``TRIAL_MIN_ANSWERS``, or fewer when its
    429 fraction is so high that a trial removing them all but ``TRIAL_RESIDUE`` would show it.
    A short reference only costs the trial power, never its verdict's correctness: the z-test
    of :func:`fell` weighs both sample sizes."""
    return answers >= TRIAL_MIN_ANSWERS or (
        answers >= REFERENCE_MIN_ANSWERS
        and fell(throttled, answers, TRIAL_RESIDUE, TRIAL_MIN_ANSWERS)
    )
