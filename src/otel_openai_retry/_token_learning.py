"""The token rate of a limit whose answers do not state it, found from the answers themselves.

OpenAI states its token limit in ``x-ratelimit-*-tokens``; Azure OpenAI, proxies and other
OpenAI-compatible servers often do not, and only a 429's body says ``type: tokens``. Pacing
requests against such a limit treats a 10-token prompt like a 4,000-token one: the long prompts
keep meeting 429s (some exhaust their attempts) while short ones are held back for nothing. So,
from the first such 429, the endpoint's token schedule runs at a rate found the way request
pacing finds its rate without headers:

- **measuring**: each send estimates its tokens, and the successes' tokens per second are
  measured; once ``LEARN_MIN_SUCCESSES`` are in, sends are held to the rate measured so far (a
  brake that follows the measurement; request pacing is not told of these 429s, as a request
  rate would skew it). After ``LEARN_SPAN`` seconds of successes, that rate is where the limit
  is (a drained bucket admits tokens at its refill rate). The 429 fraction of the answers from
  the first success on is the trial's reference: a 429 comes back at once and a success only
  after the latency, so the answers before it are 429s alone, whatever the limit;
- **a trial**: sends go at ``TRIAL_MARGIN`` of that, held there, until the answers to them
  judge it: at once if their 429 fraction already fell clearly below the measuring phase's
  (:func:`fell`, from ``VERDICT_MIN_ANSWERS`` on) or has 429s too many for that, else at
  ``TRIAL_MIN_ANSWERS`` (or ``TRIAL_TIMEOUT``). If it did not fall by more than noise explains
  (with fewer answers, at the timeout: not even by ``TRIAL_KEPT``), our tokens are not what the
  429s depend on (a quota shared with other applications): the token pacer stands aside (and
  request pacing is not told of them either), each caller's own retry wait alone. A tenth of
  429s that do not depend on our tokens halves by chance in one trial of twenty; a real limit,
  paced under, leaves none or nearly none, which is a fall beyond noise;
- **AIMD in tokens**: a token 429 sets the rate ``BACKOFF`` under the lower of the rate and the
  token rate of the successes lately, not for slots taken before the rate last changed (a
  queue books seconds ahead); successes make it grow by ``ADD_PER_SECOND`` requests'
  worth of tokens a second (each success a share of it, as TCP's congestion window grows), or,
  near where the last 429 came, by ``PROBE_PER_SECOND``. Should the rate be lowered under the
  trial's while the 429s since the verdict are not even half as frequent as before it, or fall
  below ``UNHELPED_TOKEN_SHARE`` of the measured one with their fraction not clearly fallen (as
  request pacing watches its own verdict), the trial was unlucky and the finder stands aside
  after all: lowered at each 429 that does not depend on it, the rate would sink towards
  nothing, slowing every call on the way.

The schedule lets ``LEARNT_BURST`` seconds of the rate go at once: no answer gives the bucket's
size. Pure state and arithmetic, run under the token pacer's lock.
"""

from __future__ import annotations

import math

from ._pacing_evidence import (
    BACKOFF,
    BUCKET,
    BUCKETS,
    FLOOR_WINDOW,
    PROBE_BAND,
    PROBE_PER_SECOND,
    TRIAL_KEPT,
    TRIAL_LAG,
    TRIAL_MARGIN,
    TRIAL_MIN_ANSWERS,
    TRIAL_TIMEOUT,
    Answers,
    fell,
)

__all__ = ["LEARNT_BURST", "TokenRateFinder"]

LEARN_SPAN = 0.5
LEARN_MIN_SUCCESSES = 5
LEARNT_BURST = 0.25
"""Seconds of the found rate the schedule lets go at once."""
PROVISIONAL_HEADROOM = 1.5
"""While measuring, sends are held to this multiple of the rate measured so far: a brake on a
crowd far over the limit that leaves the measurement room to rise (held to the rate measured
so far, an early count that came out low would hold itself there)."""
ADD_PER_SECOND = 5.0
"""Far under where the last 429 came, the rate grows by this many requests' worth of tokens (of
the mean size measured) per second of successes at the rate, whatever the rate: processes
sharing a limit, each finding its own share, grow alike and converge to fair shares."""
DECREASE_GUARD = 0.2
"""Seconds after a change of the rate during which an answer to a slot whose booking time is
not known is taken as one to a slot booked before."""
FLOOR_MIN_SPAN = 0.1
FLOW_WINDOW = BUCKETS - 1
"""Buckets over which the successes' token rate is measured at most (since the rate last
changed, a second at least): a single long prompt is a large share of a second's tokens, so a
second alone is too short to tell the rate by."""
UNHELPED_TOKEN_SHARE = 0.5
"""A verdict that the 429s depend on our tokens is withdrawn once the rate is under this share
of the one measured and their fraction has not clearly fallen. Lower than request pacing's
share: the trial starts at 0.8 of the measured rate and one decrease takes it under that, while
against a real token limit long prompts keep meeting 429s (a fraction that need not halve)."""
VERDICT_MIN_ANSWERS = 20
"""Fewer answers than these judge nothing, even after ``TRIAL_TIMEOUT``."""


class TokenRateFinder:
    """The token rate of one endpoint's limit, from its answers (see the module)."""

    __slots__ = (
        "_ceiling",
        "_changed_at",
        "_first",
        "_flow",
        "_grown_at",
        "_measured",
        "_paced",
        "_paced_since",
        "_reference",
        "_reference_rate",
        "_settled_answers",
        "_since",
        "_successes",
        "aside",
        "judged_on",
        "proven",
        "provisional",
        "rate",
    )

    def __init__(self, now: float, proven: bool = False) -> None:
        self.proven = proven
        """Slowing our tokens was seen to make the 429s fall (by the token pacer's watch while
        it stood aside): the trial does not stand aside again."""
        self.judged_on = (0, 0)
        """The 429s and answers a verdict that the 429s do not depend on our tokens was reached
        on (paced): the token pacer's watch compares its unpaced answers with them."""
        self.rate = 0.0
        """Tokens per second; 0 while measuring (sends are then not held back by tokens)."""
        self.aside = False
        """Judged: the 429s do not depend on our tokens."""
        self.provisional = 0.0
        """While measuring: ``PROVISIONAL_HEADROOM`` times the rate measured so far (0 until
        ``LEARN_MIN_SUCCESSES``)."""
        self._since = now
        self._first: float | None = None
        self._measured = 0
        self._successes = 0
        self._flow = Answers(now)
        """Tokens of successes per bucket (as its "ok" counts): what got through lately."""
        self._reference = [0, 0]
        """429s and answers while measuring."""
        self._reference_rate = 0.0
        """The successes' token rate measured."""
        self._settled_answers = [0, 0]
        """429s and answers since the verdict that the 429s depend on our tokens."""
        self._paced: list[int] | None = None
        """429s and answers to paced sends, until the verdict (``None`` then)."""
        self._paced_since = now
        self._ceiling = 0.0
        """The token rate that got through when the last 429 came (0: none yet)."""
        self._changed_at = self._grown_at = now
        """When the rate last changed (tried, judged or lowered); when it last grew."""

    @property
    def measuring(self) -> bool:
        return self.rate <= 0.0

    @property
    def settled(self) -> bool:
        """Measured and tried: AIMD now."""
        return self.rate > 0.0 and self._paced is None

    def answered(self, now: float, throttled: bool) -> None:
        """Any answer of this endpoint: a success, or a token 429."""
        if self.measuring:
            if self._first is not None:  # before it, 429s (back at once) only: too many
                self._reference[0] += throttled
                self._reference[1] += 1
            return
        paced = self._paced
        if paced is None:
            self._settled_answers[0] += throttled
            self._settled_answers[1] += 1
            return
        if now - self._paced_since < TRIAL_LAG:
            return  # answers to sends made before pacing
        paced[0] += throttled
        paced[1] += 1
        rejected, answers = paced
        if answers < VERDICT_MIN_ANSWERS:
            return
        throttled_before, answered_before = self._reference
        fallen = fell(throttled_before, answered_before, rejected, answers)
        # Judged as soon as it is clear: fallen already, or too many 429s for a fall even at
        # the trial's full count; else at that count, or at its timeout.
        before = throttled_before / max(1, answered_before)
        unfallen = rejected > TRIAL_KEPT * before * TRIAL_MIN_ANSWERS
        if not (
            fallen
            or unfallen
            or answers >= TRIAL_MIN_ANSWERS
            or now - self._paced_since >= TRIAL_TIMEOUT
        ):
            return
        self._paced = None
        # Not proven to have fallen: not ours, even if half as frequent (a tenth halves by
        # chance one time in twenty); but at the timeout, with too few answers to prove a fall,
        # half as frequent is taken as one.
        self.aside = (
            not fallen
            and not self.proven
            and (answers >= TRIAL_MIN_ANSWERS or rejected / answers > TRIAL_KEPT * before)
        )
        self.judged_on = (rejected, answers)
        self._grown_at = self._changed_at = now

    def succeeded(self, now: float, tokens: int, booked: float | None) -> None:
        """A success that brought ``tokens`` (its estimate, or its usage if that is more), its
        slot taken at ``booked`` (``None``: not known)."""
        self._flow.add(now, False, tokens)
        if self.measuring:
            if booked is not None and booked < self._since:
                return  # sent before the 429: it may have come out of a full bucket
            if self._first is None:
                self._first = now
            self._measured += tokens
            self._successes += 1
            # The first success starts the clock: the span holds the successes after it, and
            # a mean share of the tokens (a success's later charge cannot be told from another's).
            after_first = self._successes - 1
            span = now - self._first
            if after_first < LEARN_MIN_SUCCESSES or span < FLOOR_MIN_SPAN:
                return
            through = self._measured * after_first / self._successes / span
            self.provisional = through * PROVISIONAL_HEADROOM
            if span >= LEARN_SPAN:
                self._reference_rate = through
                self.rate = through * TRIAL_MARGIN  # no 429 there: no ceiling
                self._paced = [0, 0]
                self._paced_since = self._changed_at = self._grown_at = now
            return
        self._measured += tokens  # from here on, for the mean size only
        self._successes += 1
        if self._paced is not None or self._before_last_change(now, booked):
            return  # the trial's rate is held; a slot taken at an older rate says nothing
        low, high = PROBE_BAND
        ceiling = self._ceiling
        if ceiling and self.rate > high * ceiling:
            self._ceiling = ceiling = 0.0  # far past where the last 429 came: the limit rose
        elapsed = min(1.0, max(0.0, now - self._grown_at))
        if ceiling and self.rate >= low * ceiling:
            self.rate += self.rate * PROBE_PER_SECOND * elapsed
        else:
            # Per success, so that a schedule whose sends lag it (booked at a slower rate) stops
            # growing; by mean size squared over the rate, so that it grows by
            # ``ADD_PER_SECOND`` requests' worth a second whatever the rate.
            mean = self._measured / max(1, self._successes)
            self.rate += ADD_PER_SECOND * mean * mean / self.rate
        self._grown_at = now

    def charged(self, now: float, tokens: int, booked: float | None) -> None:
        """A success counted at its estimate when it came (a stream) used ``tokens`` more, known
        once it was read: they went through the limit too, though no success is added."""
        self._flow.add(now, False, tokens)
        if self.measuring and booked is not None and booked < self._since:
            return  # as :meth:`succeeded` leaves its success out of the measurement
        self._measured += tokens

    def _through(self, now: float, buckets: int) -> float:
        tokens, _, span = self._flow.recent(now, buckets)
        return tokens / span if span >= FLOOR_MIN_SPAN and tokens > 0 else 0.0

    def _before_last_change(self, now: float, booked: float | None) -> bool:
        """Whether an answer is to a slot taken before the rate last changed (a queue books
        seconds ahead: its answers say nothing of the rate since); not known, whether it came
        within ``DECREASE_GUARD`` of the change."""
        if booked is None:
            return now - self._changed_at < DECREASE_GUARD
        return booked < self._changed_at

    def throttled(self, now: float, booked: float | None, floor: float) -> None:
        """A token 429 to a slot taken at ``booked`` (if known): the rate goes down (see the
        module), never under ``floor``."""
        if (
            self.measuring
            or self._paced is not None  # the trial's rate is held until its verdict
            or self._before_last_change(now, booked)
        ):
            return
        # Over the seconds since the rate last changed: what got through at an older, slower
        # rate says nothing of where the limit is.
        since = math.floor((now - self._changed_at) / BUCKET)
        succeeding = self._through(now, min(FLOW_WINDOW, max(FLOOR_WINDOW - 1, since)))
        self._ceiling = min(self.rate, succeeding or self.rate)
        lowered = self._ceiling * BACKOFF
        if lowered < self.rate:
            self.rate = max(floor, lowered)
            self._changed_at = self._grown_at = now
        if self._slowing_did_not_help():
            self.aside = True
            self.judged_on = (self._settled_answers[0], self._settled_answers[1])

    def _slowing_did_not_help(self) -> bool:
        """Whether the rate went under the trial's with the 429s not even halved since the
        verdict, or far under the one measured with them not clearly fallen (see the module)."""
        rate, reference = self.rate, self._reference_rate
        if rate >= TRIAL_MARGIN * reference:
            return False
        throttled, answers = self._settled_answers
        throttled_before, answered_before = self._reference
        if answers < TRIAL_MIN_ANSWERS or fell(
            throttled_before, answered_before, throttled, answers
        ):
            return False
        return rate < UNHELPED_TOKEN_SHARE * reference or (
            throttled * answered_before > TRIAL_KEPT * throttled_before * answers
        )
