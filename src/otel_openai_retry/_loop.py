"""The retrying coroutine: one tenacity retrying object per logical call.

The loop knows nothing of OpenTelemetry or of the OpenAI SDK's internals. It calls a ``send``
function once per attempt and tells an observer what happens (attempt start and end, the sleep
chosen, the end of the call). Every decision lives in :class:`CallState` and the pure functions of
``_decisions``.

Both drivers step one synchronous ``tenacity.Retrying`` per call, as tenacity's own
``Retrying.__call__`` does (``iter`` → ``DoAttempt`` / ``DoSleep`` / the result): tenacity decides
whether to retry, when to stop and how long to wait; the driver performs the attempt and the
sleep (``await`` or not). So sync and async differ only in ``await``, and the async path avoids
``AsyncRetrying``, which wraps every strategy call in a new coroutine after an ``inspect`` check
at every step of every call (about half of tenacity's cost per call). When tenacity stops
retrying, it gives up quietly and the driver raises the last attempt's exception itself, with no
``RetryError`` and no tenacity frame added; at the end of every call the driver drops what would
make its objects a reference cycle, so a call's objects, spans included, are freed as it returns.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import tenacity

from ._call_retrying import CallRetrying, CallRetryState
from ._decisions import Outcome, Verdict, backoff_wait, classify, retry_after_wait
from ._endpoints import NULL_GUARD, EndpointGuard
from ._internal import report_internal_error
from ._policy import RetryPolicy
from ._replay import BodyReplay

__all__ = [
    "AsyncRetryHook",
    "CallObserver",
    "CallState",
    "CallSummary",
    "RetryDetails",
    "RetryHook",
    "Strategies",
    "run_async",
    "run_sync",
]

MAX_SLEEP = 1e9
"""Longest single sleep, in seconds (about 31 years): ``time.sleep`` and event loops refuse
values past ~9.2e9, and a policy may accept hints longer than that."""


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """A failed attempt that is about to be retried, handed to every before-sleep hook."""

    attempt: int
    """The attempt that failed, from 1."""
    exception: BaseException
    sleep: float
    """Seconds chosen before the next attempt."""
    retry_after: float | None
    """The server's hint in seconds, when it sent one."""
    elapsed: float
    """Seconds since the logical call started."""


@dataclass(frozen=True, slots=True)
class CallSummary:
    """How a logical call ended."""

    outcome: Outcome
    attempts: int
    total_sleep: float


class CallObserver(Protocol):
    """Told about one logical call as it runs; telemetry lives behind this."""

    def attempt_started(self, attempt: int, throttle: float) -> None: ...

    def attempt_succeeded(self, attempt: int, result: Any) -> None: ...

    def attempt_failed(self, attempt: int, exc: BaseException, verdict: Verdict) -> None: ...

    def retrying(self, details: RetryDetails) -> None: ...

    def finished(self, summary: CallSummary, exc: BaseException | None) -> None: ...


RetryHook = Callable[[RetryDetails, tenacity.RetryCallState], object]
"""Called before each sleep of a sync call (e.g. a LangChain run manager's ``on_retry``)."""
AsyncRetryHook = Callable[[RetryDetails, tenacity.RetryCallState], Awaitable[object]]
"""Awaited before each sleep of an async call."""


class Strategies:
    """The parts of a retrying object that carry no per-call state, built once per policy."""

    __slots__ = ("_stops", "deadline_stop", "policy")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.deadline_stop: tenacity.stop.stop_base | None = (
            tenacity.stop_before_delay(policy.timeout) if policy.timeout > 0 else None
        )
        self._stops: dict[int, tenacity.stop.stop_base] = {}

    def stop(self, max_attempts: int) -> tenacity.stop.stop_base:
        """``stop_after_attempt(n) | stop_before_delay(deadline)``, cached by ``n``."""
        stop = self._stops.get(max_attempts)
        if stop is None:
            stop = tenacity.stop_after_attempt(max_attempts)
            if self.deadline_stop is not None:
                stop = stop | self.deadline_stop
            if len(self._stops) < 64:
                self._stops[max_attempts] = stop
        return stop


class CallState:
    """Everything one logical call remembers between its attempts."""

    __slots__ = (
        "attempts",
        "guard",
        "max_attempts",
        "observer",
        "replay",
        "retry_details",
        "sendable",
        "started",
        "strategies",
        "total_sleep",
        "verdict",
    )

    def __init__(
        self,
        strategies: Strategies,
        observer: CallObserver,
        max_attempts: int,
        guard: EndpointGuard = NULL_GUARD,
        replay: BodyReplay | None = None,
        sendable: Callable[[], bool] | None = None,
    ) -> None:
        self.strategies = strategies
        self.observer = observer
        self.max_attempts = max_attempts
        self.guard = guard
        """Pacing and the retry budget of this call's pacing key: the one owner of both."""
        self.replay = replay
        """The body's rewind, when it is more than plain data: a body that cannot be sent
        again is never retried."""
        self.sendable = sendable
        """Whether the transport would send the next attempt at all (the client is open, the
        headers are legal); one that would not is no attempt: no span, no budget."""
        self.attempts = 0
        self.total_sleep = 0.0
        self.verdict: Verdict | None = None
        self.retry_details: RetryDetails | None = None
        """The retry tenacity just decided on (set before each sleep)."""
        self.started = time.monotonic()

    @property
    def deadline(self) -> float | None:
        """Monotonic time by which the whole call must be over, if the policy sets one."""
        timeout = self.strategies.policy.timeout
        return self.started + timeout if timeout > 0 else None

    def retrying(self) -> tuple[CallRetrying, tenacity.RetryCallState]:
        """A fresh tenacity object for this call (tenacity keeps per-call state in it), begun."""
        retrying = CallRetrying(
            stop=self.stop,
            wait=self.wait,
            retry=self.should_retry,
            before_sleep=self._before_sleep,
            retry_error_callback=_give_up,
        )
        retrying.begin()
        return retrying, CallRetryState(retrying, fn=None, args=(), kwargs={})

    @staticmethod
    def final_result(retry_state: tenacity.RetryCallState) -> Any:
        """The last attempt's result, or its exception raised again. Tenacity, told to give up
        quietly (``retry_error_callback``), raises no ``RetryError`` when it stops retrying, so an
        exhausted call's traceback gains no tenacity frame (an error not worth retrying is still
        raised from inside tenacity's step, as before)."""
        assert retry_state.outcome is not None
        return retry_state.outcome.result()

    def release(self, retrying: CallRetrying, retry_state: tenacity.RetryCallState) -> None:
        """At the end of the call, drop what would tie its objects into reference cycles, so that
        they are freed now rather than by the garbage collector: tenacity's last actions, and
        every reference to an attempt's exception, whose traceback holds the frames that hold
        this state."""
        retrying.release()
        retry_state.outcome = None
        self.retry_details = None
        self.sendable = None  # bound to the caller's side, which holds this state

    @property
    def pending_retry(self) -> RetryDetails:
        """The retry tenacity has just decided on (its ``before_sleep`` records it)."""
        assert self.retry_details is not None
        return self.retry_details

    def sleeping(self, retry_state: tenacity.RetryCallState, seconds: float) -> _Sleep:
        """Around the driver's sleep: tenacity moves on to the next attempt, and the sleep is
        counted in ``retry.total_sleep_s``: all of it, or what passed before a cancel."""
        retry_state.prepare_for_next_attempt()
        return _Sleep(self, seconds)

    def pacing_delay(self) -> float:
        """Seconds to wait for this endpoint's next send slot (0 unless it is being paced).

        Never past the deadline: a slot that comes too late is not waited for, the attempt goes
        at once and the server decides (the caller gets its answer, not our guess).
        """
        self.verdict = None  # whatever fails from here on is judged afresh
        deadline = self.deadline
        delay = self.guard.slot_delay(time.monotonic(), math.inf if deadline is None else deadline)
        return 0.0 if delay is None else min(delay, MAX_SLEEP)

    def will_send(self) -> bool:
        if self.sendable is None or self.sendable():
            return True
        self.verdict = None  # what the SDK raises now is judged as it stands: not retried
        return False

    def begin_attempt(self, throttle: float) -> int:
        self.attempts += 1
        self.guard.sent(time.monotonic())
        self.observer.attempt_started(self.attempts, throttle)
        return self.attempts

    def record_success(
        self, retry_state: tenacity.RetryCallState, attempt: int, result: Any
    ) -> None:
        self.observer.attempt_succeeded(attempt, result)
        retry_state.set_result(result)

    def record_failure(
        self, retry_state: tenacity.RetryCallState, attempt: int, exc: BaseException
    ) -> None:
        self.attempt_failed(attempt, exc)
        retry_state.set_exception((type(exc), exc, exc.__traceback__))

    def attempt_failed(self, attempt: int, exc: BaseException) -> None:
        verdict = classify(exc, self.strategies.policy)
        self.verdict = verdict
        if verdict.status_code == 429:
            response = getattr(exc, "response", None)
            # Only a hint this call itself would wait for may make everyone else wait: one the
            # policy refuses, or one on an answer not to be retried, must not close the gate.
            self.guard.throttled(
                time.monotonic(),
                verdict.retry_after if verdict.retryable else None,
                getattr(response, "headers", None),
            )
        self.observer.attempt_failed(attempt, exc, verdict)

    def should_retry(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        verdict = self.verdict
        return not (outcome is None or not outcome.failed or verdict is None) and verdict.retryable

    def stop(self, retry_state: tenacity.RetryCallState) -> bool:
        """Tenacity asks this only once it has decided to retry and chosen the wait: attempts
        and the deadline first, then the body, and the budget last, so that only a retry that
        will really be sent is charged to it."""
        if self.strategies.stop(self.max_attempts)(retry_state):
            return True
        replay = self.replay
        if replay is not None and not replay.rewind():
            self._give_up_as(Outcome.NON_RETRYABLE)
            return True
        verdict = self.verdict
        status = verdict.status_code if verdict is not None else None
        if not self.guard.may_retry(time.monotonic(), status):
            self._give_up_as(Outcome.BUDGET_EXHAUSTED)
            return True
        return False

    def _give_up_as(self, outcome: Outcome) -> None:
        verdict = self.verdict
        if verdict is not None:
            self.verdict = dataclasses.replace(verdict, retryable=False, give_up_as=outcome)

    def wait(self, retry_state: tenacity.RetryCallState) -> float:
        hint = self.verdict.retry_after if self.verdict else None
        if hint is not None:
            return min(retry_after_wait(hint), MAX_SLEEP)
        return min(backoff_wait(retry_state.attempt_number, self.strategies.policy), MAX_SLEEP)

    def details(self, retry_state: tenacity.RetryCallState) -> RetryDetails:
        """Record the sleep tenacity chose and describe it to the observer and hooks."""
        sleep = retry_state.upcoming_sleep
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        assert exc is not None
        details = RetryDetails(
            attempt=retry_state.attempt_number,
            exception=exc,
            sleep=sleep,
            retry_after=self.verdict.retry_after if self.verdict else None,
            elapsed=time.monotonic() - self.started,
        )
        self.observer.retrying(details)
        return details

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        self.retry_details = self.details(retry_state)

    def finish(self, exc: BaseException | None) -> None:
        self.observer.finished(
            CallSummary(self._outcome(exc), self.attempts, self.total_sleep), exc
        )

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


def _give_up(retry_state: tenacity.RetryCallState) -> None:
    """Tenacity's last step when it stops retrying: the driver raises the outcome itself."""


class _Sleep:
    """See :meth:`CallState.sleeping`."""

    __slots__ = ("_seconds", "_started", "_state")

    def __init__(self, state: CallState, seconds: float) -> None:
        self._state, self._seconds = state, seconds
        self._started = time.monotonic()

    def __enter__(self) -> None:
        pass

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        taken = self._seconds if exc_type is None else time.monotonic() - self._started
        self._state.total_sleep += min(self._seconds, taken)


async def run_async(
    state: CallState,
    send: Callable[[int], Awaitable[Any]],
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    hooks: tuple[AsyncRetryHook, ...] = (),
) -> Any:
    """Run one logical call; ``send(attempt)`` performs one HTTP attempt."""
    retrying, retry_state = state.retrying()
    try:
        while True:
            do = retrying.iter(retry_state)
            if isinstance(do, tenacity.DoAttempt):
                if not state.will_send():  # the SDK's own refusal; see ``CallState.sendable``
                    retry_state.set_result(await send(0))
                    break
                throttle = state.pacing_delay()
                if throttle > 0:
                    await sleep(throttle)
                number = state.begin_attempt(throttle)
                try:
                    result = await send(number)
                except BaseException as exc:
                    state.record_failure(retry_state, number, exc)
                else:
                    state.record_success(retry_state, number, result)
            elif isinstance(do, tenacity.DoSleep):
                for hook in hooks:  # before the reset: they see the attempt that failed
                    try:
                        await hook(state.pending_retry, retry_state)
                    except Exception:  # a listener's bug must not lose the user's call
                        report_internal_error("retry hook")
                with state.sleeping(retry_state, do):
                    await sleep(do)
            else:
                break  # tenacity is done: its outcome is the call's
        result = state.final_result(retry_state)
    except BaseException as exc:
        state.finish(exc)
        raise
    finally:
        state.release(retrying, retry_state)
    state.finish(None)
    return result


def run_sync(
    state: CallState,
    send: Callable[[int], Any],
    sleep: Callable[[float], None] = time.sleep,
    hooks: tuple[RetryHook, ...] = (),
) -> Any:
    """The synchronous twin of :func:`run_async`: the same lines without ``await``."""
    retrying, retry_state = state.retrying()
    try:
        while True:
            do = retrying.iter(retry_state)
            if isinstance(do, tenacity.DoAttempt):
                if not state.will_send():  # the SDK's own refusal; see ``CallState.sendable``
                    retry_state.set_result(send(0))
                    break
                throttle = state.pacing_delay()
                if throttle > 0:
                    sleep(throttle)
                number = state.begin_attempt(throttle)
                try:
                    result = send(number)
                except BaseException as exc:
                    state.record_failure(retry_state, number, exc)
                else:
                    state.record_success(retry_state, number, result)
            elif isinstance(do, tenacity.DoSleep):
                for hook in hooks:  # before the reset: they see the attempt that failed
                    try:
                        hook(state.pending_retry, retry_state)
                    except Exception:  # a listener's bug must not lose the user's call
                        report_internal_error("retry hook")
                with state.sleeping(retry_state, do):
                    sleep(do)
            else:
                break  # tenacity is done: its outcome is the call's
        result = state.final_result(retry_state)
    except BaseException as exc:
        state.finish(exc)
        raise
    finally:
        state.release(retrying, retry_state)
    state.finish(None)
    return result
