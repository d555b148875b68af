"""What one logical call remembers between its attempts, and every decision tenacity asks of it
(:meth:`~CallState.should_retry`, :meth:`~CallState.stop`, :meth:`~CallState.wait`): the pure
rules live in ``_decisions``, pacing and the budget in the call's endpoint guard. The state tells
its observers what happens, each one guarded: an observer's bug costs only its own record.

Pacing and the budget only ever hold a call back, so a bug of ours in them (``PACING``) must not
reach the call: the state then goes on as if the endpoint were not paced (no wait, the retry
allowed, nothing learnt from the answer), which is what the bare SDK does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tenacity

from ._decisions import Outcome, Verdict, classify, retry_after_wait
from ._endpoints import NULL_GUARD, EndpointGuard
from ._hooks import RetryDetails
from ._internal import report_internal_error
from ._observers import CallObserver, CallSummary
from ._replay import BodyReplay
from ._slots import TokenCost, correct_tokens, take_slot, take_slot_async
from ._strategies import MAX_SLEEP, Strategies

__all__ = ["CallState"]

PACING = "pacing"
"""Where an internal error of the guard is reported (once, or raised under tests)."""

_CLEAN = CallSummary(Outcome.SUCCESS, 1, 0.0, 0.0)
"""How a call that succeeded at its first attempt, unpaced, ended."""


class CallState:
    """Everything one logical call remembers between its attempts."""

    __slots__ = (
        "_booked_at",
        "_queued",
        "_reserved",
        "_stop",
        "attempts",
        "deadline",
        "guard",
        "max_attempts",
        "name",
        "observers",
        "replay",
        "retry_details",
        "sendable",
        "started",
        "strategies",
        "tokens",
        "total_sleep",
        "total_throttle",
        "verdict",
    )

    def __init__(
        self,
        strategies: Strategies,
        observers: tuple[CallObserver, ...],
        max_attempts: int,
        guard: EndpointGuard = NULL_GUARD,
        replay: BodyReplay | None = None,
        sendable: Callable[[], bool] | None = None,
        name: str = "",
        tokens: TokenCost | None = None,
    ) -> None:
        self.strategies = strategies
        self.observers = observers
        """Told in order; the call's spans and metrics come first."""
        self.max_attempts = max_attempts
        self._stop = (
            strategies.stop
            if max_attempts == strategies.policy.max_attempts
            else strategies.stop_after(max_attempts)
        )
        self.guard = guard
        """Pacing and the retry budget of this call's pacing key: the one owner of both."""
        self.replay = replay
        """The body's rewind, if more than plain data: one that cannot be sent again is not."""
        self.sendable = sendable
        """Whether the transport would send the next attempt at all (the client is open, the
        headers are legal); one that would not is no attempt: no span, no budget."""
        self.name = name
        """The logical call's span name, for users' retry hooks."""
        self.tokens = tokens
        """What the request costs in tokens, asked only while its endpoint paces tokens."""
        self._reserved = 0
        """Tokens the current attempt's send reserved."""
        self._booked_at = 0.0
        """When the current attempt's slot was taken: the rate it went at was the one then."""
        self.attempts = 0
        self.total_sleep = 0.0
        self.total_throttle = 0.0
        self._queued: tuple[str, float] | None = None
        """A paced attempt's slot, until the attempt starts: its result and when it was asked."""
        self.verdict: Verdict | None = None
        self.retry_details: RetryDetails | None = None
        """The retry tenacity just decided on (set before each sleep)."""
        self.started = time.monotonic()
        timeout = strategies.policy.timeout
        self.deadline = self.started + timeout if timeout > 0 else None
        """Monotonic time by which the whole call must be over, if the policy sets one."""

    # -- what tenacity asks ------------------------------------------------------------------

    def should_retry(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        verdict = self.verdict
        return not (outcome is None or not outcome.failed or verdict is None) and verdict.retryable

    def stop(self, retry_state: tenacity.RetryCallState) -> bool:
        """Tenacity asks this only once it has decided to retry and chosen the wait: attempts
        and the deadline first, then the body, and the budget last, so that only a retry that
        will really be sent is charged to it."""
        if self._stop(retry_state):
            return True
        replay = self.replay
        if replay is not None and not replay.rewind():
            self._give_up_as(Outcome.NON_RETRYABLE)
            return True
        verdict = self.verdict
        status = verdict.status_code if verdict is not None else None
        try:
            allowed = self.guard.may_retry(time.monotonic(), status)
        except Exception:
            report_internal_error(PACING)
            allowed = True
        if not allowed:
            self._give_up_as(Outcome.BUDGET_EXHAUSTED)
            return True
        return False

    def wait(self, retry_state: tenacity.RetryCallState) -> float:
        hint = self.verdict.retry_after if self.verdict else None
        if hint is not None:
            return min(retry_after_wait(hint), MAX_SLEEP)
        return min(self.strategies.backoff(retry_state), MAX_SLEEP)

    def before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        """Tenacity's last word on a retry: the sleep it chose, recorded for the driver."""
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        assert exc is not None
        self.retry_details = RetryDetails(
            name=self.name,
            attempt=retry_state.attempt_number,
            exception=exc,
            sleep=retry_state.upcoming_sleep,
            retry_after=self.verdict.retry_after if self.verdict else None,
            elapsed=time.monotonic() - self.started,
        )

    def _give_up_as(self, outcome: Outcome) -> None:
        verdict = self.verdict
        if verdict is not None:
            self.verdict = verdict.given_up(outcome)

    # -- what the driver does ----------------------------------------------------------------

    def pacing_delay(self) -> float:
        """Seconds to wait for this endpoint's next send slot (0 unless it is being paced);
        negative: no slot booked yet, wait that long and ask again.

        Never past the deadline: a slot that comes too late is not waited for, the attempt goes
        at once and the server decides (the caller gets its answer, not our guess).
        """
        self.verdict = None  # whatever fails from here on is judged afresh
        deadline, now = self.deadline, time.monotonic()
        latest = math.inf if deadline is None else deadline
        try:
            delay, queued, self._reserved = take_slot(self.guard, now, latest, self.tokens)
        except Exception:
            report_internal_error(PACING)
            delay, queued, self._reserved = 0.0, None, 0
        return self._slot_answered(delay, queued, now)

    async def pacing_delay_async(self) -> float:
        """:meth:`pacing_delay` for a guard whose slot is a round trip away (``shared_slot``)."""
        self.verdict = None
        deadline, now = self.deadline, time.monotonic()
        latest = math.inf if deadline is None else deadline
        try:
            delay, queued, self._reserved = await take_slot_async(
                self.guard, now, latest, self.tokens
            )
        except Exception:
            report_internal_error(PACING)
            delay, queued, self._reserved = 0.0, None, 0
        return self._slot_answered(delay, queued, now)

    def slot_is_shared(self) -> bool:
        """Whether the slot is a round trip away (:meth:`pacing_delay_async` then, in async
        code)."""
        try:
            return self.guard.shared_slot()
        except Exception:
            report_internal_error(PACING)
            return False

    def _slot_answered(self, delay: float | None, queued: str | None, now: float) -> float:
        self._booked_at = now
        if queued is not None:  # asked again: the last answer, since the first asking
            self._queued = (queued, now if self._queued is None else self._queued[1])
        return 0.0 if delay is None else max(-MAX_SLEEP, min(delay, MAX_SLEEP))

    def will_send(self) -> bool:
        if self.sendable is None or self.sendable():
            return True
        self.verdict = None  # what the SDK raises now is judged as it stands: not retried
        return False

    def begin_attempt(self, throttle: float) -> int:
        self.attempts += 1
        attempt = self.attempts
        self.total_throttle += throttle
        try:
            self.guard.sent(time.monotonic())
        except Exception:
            report_internal_error(PACING)
        queued, self._queued = self._queued, None
        if queued is not None:
            self._tell_paced(queued[0], throttle)
        for observer in self.observers:
            try:
                observer.attempt_started(attempt, throttle)
            except Exception:
                report_internal_error("observer attempt_started")
        return attempt

    def record_success(
        self, retry_state: tenacity.RetryCallState | None, attempt: int, result: Any
    ) -> None:
        """``retry_state`` is ``None`` for a first attempt (tenacity not built yet)."""
        if self._reserved:
            correct_tokens(self.guard, self.tokens, self._reserved, result, self._booked_at)
        for observer in self.observers:
            try:
                observer.attempt_succeeded(attempt, result)
            except Exception:
                report_internal_error("observer attempt_succeeded")
        if retry_state is not None:
            retry_state.set_result(result)

    def record_failure(
        self, retry_state: tenacity.RetryCallState, attempt: int, exc: BaseException
    ) -> None:
        verdict = classify(exc, self.strategies.policy)
        if verdict.status_code == 429 and verdict.give_up_as is not Outcome.QUOTA_EXHAUSTED:
            response = getattr(exc, "response", None)
            # Only a hint this call itself would wait for may make everyone else wait: one the
            # policy refuses, or one on an answer not to be retried, must not close the gate.
            try:
                self.guard.throttled(
                    time.monotonic(),
                    verdict.retry_after if verdict.retryable else None,
                    getattr(response, "headers", None),
                    verdict.limit,
                    self._reserved,
                    self._booked_at,
                )
            except Exception:
                report_internal_error(PACING)
        if verdict.retryable and not self.will_send():  # closed meanwhile: a retry is refused
            verdict = verdict.given_up(Outcome.NON_RETRYABLE)
        self.verdict = verdict
        for observer in self.observers:
            try:
                observer.attempt_failed(attempt, exc, verdict)
            except Exception:
                report_internal_error("observer attempt_failed")
        retry_state.set_exception((type(exc), exc, exc.__traceback__))

    def retrying(self, retry_state: tenacity.RetryCallState) -> list[Awaitable[object]]:
        """Tell every observer of the retry tenacity decided on, before tenacity resets its state
        for the next attempt; what they return is for the driver to wait for."""
        details = self.retry_details
        assert details is not None
        pending = []
        for observer in self.observers:
            try:
                waiting = observer.retrying(details, retry_state)
            except Exception:
                report_internal_error("observer retrying")
                continue
            if waiting is not None:
                pending.append(waiting)
        return pending

    def _tell_paced(self, result: str, waited: float) -> None:
        for observer in self.observers:
            try:
                observer.paced(result, waited)
            except Exception:
                report_internal_error("observer paced")

    def finish(self, exc: BaseException | None) -> None:
        queued, self._queued = self._queued, None
        if queued is not None:  # the call ended while it waited for its slot
            waited = time.monotonic() - queued[1]
            self.total_throttle += waited
            self._tell_paced("canceled", waited)
        if exc is None and self.attempts == 1 and not self.total_sleep and not self.total_throttle:
            summary = _CLEAN  # most calls: one summary for all, as it cannot be changed
        else:
            summary = CallSummary(
                self._outcome(exc), self.attempts, self.total_sleep, self.total_throttle
            )
        for observer in self.observers:
            try:
                observer.finished(summary, exc)
            except Exception:
                report_internal_error("observer finished")

    def release(
        self, retrying: tenacity.Retrying | None, retry_state: tenacity.RetryCallState | None
    ) -> None:
        """At the end of the call, drop what would tie its objects into reference cycles, so that
        they are freed now rather than by the garbage collector: tenacity's last actions (bound
        to its retrying object), and every reference to an attempt's exception, whose traceback
        holds the frames that hold this state."""
        if retrying is not None:
            retrying.iter_state.reset()
        if retry_state is not None:
            retry_state.outcome = None
        self.retry_details = None
        self.sendable = self.tokens = None  # the caller's side, which holds this state

    def _outcome(self, exc: BaseException | None) -> Outcome:
        if exc is None:
            return Outcome.SUCCESS
        if not isinstance(exc, Exception):  # CancelledError, KeyboardInterrupt, ...
            return Outcome.CANCELLED
        verdict = self.verdict
        if verdict is None:
            return Outcome.NON_RETRYABLE
        if verdict.give_up_as is not None:
            return verdict.give_up_as
        return Outcome.EXHAUSTED if self.attempts >= self.max_attempts else Outcome.DEADLINE
