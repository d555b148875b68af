"""Whether our send rate is what the 429s depend on: the trial an engagement starts with.

Not every 429 says "slower": a limit shared with other applications rejects a fraction of our
requests however slowly we send, and pacing would then only add waiting. So, without header rates,
an engagement starts with a trial of whether the 429 fraction responds to our rate. It first
measures the answers unpaced, for as many answers as a verdict needs (``REFERENCE``: gates apply,
the schedule does not, so the rates measured are the natural ones; 429s ``FAR_OVER`` times the
successes end it at once, pacing at the success rate; so do 429s as many as the successes at its
end), then sends a little under the rate the successes came at (``TRIAL``): against a limit that
rate gets as many through and the 429s vanish; against a rate-independent one, they stay. Paced
at once far over, the answers to paced sends are judged as a trial's: most answers refused by a
limit shared with others (nearly spent by them) look far over a limit too, and paced at the
success rate the callers would send a tenth of what they send unpaced for as long as it lasts
(judged early, once the 429s are clearly too many for a fall by half: ``held``). Our rate is
judged to matter only if the 429 fraction fell by half and by ``TRIAL_EVIDENCE`` standard errors;
otherwise pacing stands aside (no gate, no schedule: each caller's own retry sleep still honours
its hint) until the 429 fraction climbs clearly above the verdict's, the 429s stop, or
``INDEPENDENT_HOLD`` passes. When it does matter, AIMD goes on (``SETTLED``); should the rate then
fall well below the reference's success rate with the 429 fraction not falling with it, the
verdict was unlucky (or the 429s far over the successes were not a limit of ours: half of all
answers rejected by a limit shared with others) and pacing stands aside at once. After
``RETRIAL_AFTER`` the verdict is judged again: if the 429 fraction of every answer since it fell
from the reference's (as a trial's must), pacing itself kept proving that our rate matters and
the verdict stands, for another ``RETRIAL_AFTER``; otherwise a new trial runs (its unpaced
reference costs a crowd's worth of 429s, every ``RETRIAL_AFTER``, against a limit that pacing
kept them away from). Further ``Retry-After`` gates apply once settled.
"""

from __future__ import annotations

from ._pacing_evidence import (
    BUCKET,
    BUCKETS,
    FALLEN_MIN_ANSWERS,
    INDEPENDENT_HOLD,
    INDEPENDENT_MIN_ANSWERS,
    INDEPENDENT_RISE,
    RETRIAL_AFTER,
    TRIAL_LAG,
    TRIAL_MARGIN,
    TRIAL_MIN_ANSWERS,
    TRIAL_TIMEOUT,
    TRIAL_WINDOW,
    UNHELPED_SHARE,
    Answers,
    SendRate,
    fell,
    held,
    reference_suffices,
)

__all__ = ["DISENGAGE_AFTER", "MIN_RATE", "REFERENCE", "SETTLED", "TRIAL", "TrialRules"]

MIN_RATE = 0.5
"""Requests per second never paced below (so a wrong estimate cannot stall an endpoint)."""
DISENGAGE_AFTER = 5.0
REFERENCE, TRIAL, SETTLED = 0, 1, 2
"""The phases of an engagement without header rates: measuring, trying the success rate, AIMD."""


class TrialRules:
    """The trial's rules, run by :class:`~otel_openai_retry._pacing.AdaptiveLimiter` under its
    lock on the state it declares here."""

    __slots__ = (
        "_answers",
        "_baseline",
        "_gate_until",
        "_independent_since",
        "_last_decrease",
        "_last_throttled",
        "_phase",
        "_phase_since",
        "_reference",
        "_sends",
        "_unjudged",
        "_verdict_totals",
        "engaged",
        "rate",
    )

    rate: float
    engaged: bool
    _answers: Answers
    _sends: SendRate
    _phase: int
    _phase_since: float
    _reference: tuple[int, int, float]
    _independent_since: float | None
    _baseline: float
    _gate_until: float
    _last_decrease: float
    _last_throttled: float
    _unjudged: bool
    _verdict_totals: tuple[int, int]
    """The answers' totals (successes, 429s) when the phase settled."""

    @property
    def independent(self) -> bool:
        """Whether the 429s lately were judged not to depend on the send rate."""
        return self._independent_since is not None

    def _next_phase(self, now: float) -> None:
        """At each new bucket: begin the trial once there is a reference, judge it once its
        answers are in."""
        if self._phase == REFERENCE:
            began = self._phase_since
            ok, throttled, span = self._answers.after(now, began)
            if span < TRIAL_WINDOW * BUCKET * 0.9 or (
                not reference_suffices(throttled, ok + throttled) and now - began < TRIAL_TIMEOUT
            ):
                return
            if ok + throttled < TRIAL_WINDOW:  # too few answers to judge by: plain AIMD
                self._settle(now)
                return
            if throttled >= ok:  # far over a limit, most likely: pace, and watch that it helps
                self._reference = (throttled, ok + throttled, ok / span)
                self._settle_unjudged(now)
                return
            # Send at the rate the successes come at: against a limit, that rate gets as many
            # through and the 429s vanish; against a rate-independent one, they stay.
            self.rate = max(MIN_RATE, ok / span * TRIAL_MARGIN)
            self._last_decrease = now
            self._phase_since = now
            self._reference = (throttled, ok + throttled, ok / span)
            self._phase = TRIAL
        elif self._phase == TRIAL:
            started = self._phase_since
            if now - started < TRIAL_LAG + TRIAL_WINDOW * BUCKET:
                return
            ok, throttled, _ = self._answers.after(now, started + TRIAL_LAG)
            if ok + throttled < TRIAL_MIN_ANSWERS and now - started < TRIAL_TIMEOUT:
                return
            self._settle(now)
            answers = ok + throttled  # none at all (the caller stalled): nothing to judge by
            if answers and not fell(*self._reference[:2], throttled, answers):
                self._stand_aside(now, throttled / answers)
        elif now - self._phase_since > RETRIAL_AFTER:
            if self._verdict_holds():
                self._settle(now)
            else:  # unpaced again, briefly: still a limit?
                self._phase = REFERENCE
                self._phase_since = now
                self._reference = (0, 0, 0.0)
        elif self._slowing_did_not_help(now):
            ok, throttled, _ = self._answers.recent(now, BUCKETS - 1)
            self._stand_aside(now, throttled / max(1, ok + throttled))

    def _slowing_did_not_help(self, now: float) -> bool:
        """After a verdict that our rate matters: whether the rate has since fallen far below
        the reference's success rate and the 429 fraction has not fallen with it. A trial can
        be unlucky; this corrects its verdict long before ``RETRIAL_AFTER``.

        Paced at once, far over a limit, without a trial (``_unjudged``): whether the 429
        fraction fell once the answers to paced sends are in, as a trial's verdict, whatever
        the rate. Paced at the success rate, a limit's 429s vanish; rate-independent ones (most
        answers refused by a limit shared with others) stay, the rate stays at the success
        rate, and the watch above would never see it fall: pacing would send a tenth of what
        unpaced callers do, for as long as the 429s last."""
        throttled, answers, succeeding = self._reference
        if not answers:
            return False
        if self.rate < UNHELPED_SHARE * succeeding:
            ok, rejected, _ = self._answers.after(now, self._phase_since)
            if ok + rejected >= TRIAL_MIN_ANSWERS and not fell(
                throttled, answers, rejected, ok + rejected
            ):
                return True
        if not self._unjudged:
            return False
        ok, rejected, _ = self._answers.after(now, self._phase_since + TRIAL_LAG)
        judged = ok + rejected
        fallen = fell(throttled, answers, rejected, judged)
        if (
            judged < TRIAL_MIN_ANSWERS
            and (not judged or now - self._phase_since < TRIAL_TIMEOUT)
            and not held(throttled, answers, rejected, judged)
            and not (fallen and judged >= FALLEN_MIN_ANSWERS)
        ):
            return False
        self._unjudged = False
        if fallen:
            self._judged_ours(now)
        return not fallen

    def _judged_ours(self, now: float) -> None:
        """A pace far over a limit, judged by its answers: our rate matters. The limiter
        leaves the margin it judged under (a hook)."""

    def _verdict_holds(self) -> bool:
        """Whether every answer since the phase settled shows the 429 fraction fallen from the
        reference's, as a trial's verdict must: pacing itself is then the trial, and passes."""
        throttled, answers, _ = self._reference
        ok_then, throttled_then = self._verdict_totals
        ok = self._answers.ok_total - ok_then
        rejected = self._answers.throttled_total - throttled_then
        if ok < 0 or rejected < 0 or ok + rejected < TRIAL_MIN_ANSWERS:
            return False
        return fell(throttled, answers, rejected, ok + rejected)

    def _settle(self, now: float) -> None:
        self._phase = SETTLED
        self._phase_since = now
        self._unjudged = False
        self._verdict_totals = (self._answers.ok_total, self._answers.throttled_total)

    def _settle_unjudged(self, now: float) -> None:
        """Paced far over a limit without a trial: judged once its answers are in (see
        :meth:`_slowing_did_not_help`)."""
        self._settle(now)
        self._unjudged = True

    def _stand_aside(self, now: float, fraction: float) -> None:
        """The 429s do not depend on our rate: no gate, no schedule, until told otherwise."""
        self.engaged = False
        self._independent_since = now
        self._baseline = fraction
        self._gate_until = 0.0
        self._sends.forget()

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
