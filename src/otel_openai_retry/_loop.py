"""The retrying coroutine: one plain ``tenacity.Retrying`` per logical call, stepped directly.

The loop knows nothing of OpenTelemetry or of the OpenAI SDK's internals. It calls a ``send``
function once per attempt; every decision is :class:`~._call_state.CallState`'s, and the state
tells the call's observers.

Both drivers step the call's ``tenacity.Retrying`` as tenacity's own ``Retrying.__call__`` does
(``iter`` → ``DoAttempt`` / ``DoSleep`` / the result): tenacity decides whether to retry, when to
stop and how long to wait; the driver performs the attempt and the sleep (``await`` or not). So
sync and async differ only in ``await``, and the async path avoids ``AsyncRetrying``, which wraps
every strategy call in a new coroutine after an ``inspect`` check at every step. When tenacity
stops retrying it gives up quietly (``retry_error_callback``) and the driver raises the last
attempt's exception itself, with no ``RetryError`` and no tenacity frame added. At the end of
every call the state drops what would make its objects a reference cycle, so a call's objects,
spans included, are freed as it returns.

A retrying object is made per call because tenacity keeps per-call state in it: one shared by
concurrent tasks loses their exceptions. It is made only once a first attempt has failed:
tenacity's first step is always an attempt, and most calls succeed at once, so they never need it
(it is then built as if at the call's start, so the deadline and statistics are the same).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any

import anyio
import tenacity

from ._call_state import CallState
from ._internal import report_internal_error

__all__ = ["run_async", "run_sync"]


def _give_up(retry_state: tenacity.RetryCallState) -> None:
    """Tenacity's last step when it stops retrying: the driver raises the outcome itself."""


_FIRST = tenacity.DoAttempt()
"""Tenacity's first step, taken without it."""


class _Steps:
    """Tenacity's side of one call: its objects, made only once the first attempt has failed
    (as if made when the call started, so the deadline and statistics are the same)."""

    __slots__ = ("_retry_state", "_retrying", "state")

    def __init__(self, state: CallState) -> None:
        self.state = state
        self._retrying: tenacity.Retrying | None = None
        self._retry_state: tenacity.RetryCallState | None = None

    def next(self) -> object:
        """What to do now: an attempt, a sleep, or (anything else) stop."""
        if self._retrying is None or self._retry_state is None:
            return _FIRST
        return self._retrying.iter(self._retry_state)

    def failed(self, attempt: int, exc: BaseException) -> None:
        retry_state = self._retry_state
        if retry_state is None:
            state = self.state
            retrying = self._retrying = tenacity.Retrying(
                stop=state.stop,
                wait=state.wait,
                retry=state.should_retry,
                before_sleep=state.before_sleep,
                retry_error_callback=_give_up,
            )
            retrying.begin()
            retrying.statistics["start_time"] = state.started
            retry_state = self._retry_state = tenacity.RetryCallState(
                retrying, fn=None, args=(), kwargs={}
            )
            retry_state.start_time = state.started  # the deadline counts from the call's start
        self.state.record_failure(retry_state, attempt, exc)

    def succeeded(self, attempt: int, result: Any) -> bool:
        """Whether the call is over: a first attempt's success leaves nothing to decide."""
        self.state.record_success(self._retry_state, attempt, result)
        return self._retry_state is None

    def refused(self, result: Any) -> None:
        """The SDK's own answer to a request the transport would not send."""
        if self._retry_state is not None:
            self._retry_state.set_result(result)

    def retrying(self) -> list[Awaitable[object]]:
        assert self._retry_state is not None
        return self.state.retrying(self._retry_state)

    def sleeping(self, seconds: float) -> AbstractContextManager[None]:
        """Around the driver's sleep: tenacity moves on to the next attempt, and the sleep is
        counted in the call's total: all of it, or what passed before a cancel."""
        assert self._retry_state is not None
        self._retry_state.prepare_for_next_attempt()
        return _Sleep(self.state, seconds)

    def result(self, result: Any) -> Any:
        """The call's result: the first attempt's, or tenacity's last outcome (raised again if
        it is an exception)."""
        retry_state = self._retry_state
        if retry_state is None:
            return result
        assert retry_state.outcome is not None
        return retry_state.outcome.result()

    def release(self) -> None:
        self.state.release(self._retrying, self._retry_state)


class _Sleep:
    """See :meth:`_Steps.sleeping`."""

    __slots__ = ("_seconds", "_started", "_state")

    def __init__(self, state: CallState, seconds: float) -> None:
        self._state, self._seconds = state, seconds
        self._started = time.monotonic()

    def __enter__(self) -> None:
        pass

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        taken = self._seconds if exc_type is None else time.monotonic() - self._started
        self._state.total_sleep += min(self._seconds, taken)


async def _slot_async(state: CallState, sleep: Callable[[float], Awaitable[None]]) -> float:
    """Wait for the attempt's send slot: the seconds waited. A negative delay booked no slot
    yet (a queue books only so far ahead): wait it, then ask again."""
    cap, waited = state.strategies.policy.max_retry_after, 0.0
    while True:
        delay = (
            await state.pacing_delay_async()
            if state.slot_is_shared()  # a round trip: awaited, never blocking the loop
            else state.pacing_delay()
        )
        pause = _pause(delay, waited, cap)
        if pause:
            await sleep(pause)
            waited += pause
        if delay >= 0 or waited >= cap:
            return waited


def _slot(state: CallState, sleep: Callable[[float], None]) -> float:
    """:func:`_slot_async`, for the sync driver."""
    cap, waited = state.strategies.policy.max_retry_after, 0.0
    while True:
        delay = state.pacing_delay()
        pause = _pause(delay, waited, cap)
        if pause:
            sleep(pause)
            waited += pause
        if delay >= 0 or waited >= cap:
            return waited


def _pause(delay: float, waited: float, cap: float) -> float:
    """The sleep for a slot's answer ``delay`` (negative: ask again after it) after ``waited``:
    never past ``cap`` in all, for no caller waits for its slot longer than a server may make
    it wait (asked again, a slot may be further away still: the rate was lowered meanwhile);
    then the attempt goes, and the server decides."""
    return min(abs(delay), max(0.0, cap - waited))


async def run_async(
    state: CallState,
    send: Callable[[int], Awaitable[Any]],
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> Any:
    """Run one logical call; ``send(attempt)`` performs one HTTP attempt (``0``: not one)."""
    steps = _Steps(state)
    result: Any = None
    do: object = _FIRST  # tenacity's first step, taken without asking it
    try:
        while True:
            if do is _FIRST or isinstance(do, tenacity.DoAttempt):
                if not state.will_send():  # the SDK's own refusal; see ``CallState.sendable``
                    steps.refused(result := await send(0))
                    break
                number = state.begin_attempt(await _slot_async(state, sleep))
                try:
                    result = await send(number)
                except BaseException as exc:
                    steps.failed(number, exc)
                else:
                    if steps.succeeded(number, result):
                        break
            elif isinstance(do, tenacity.DoSleep):
                await _wait_for(steps.retrying())  # before the reset
                with steps.sleeping(do):
                    await sleep(do)
            else:
                break  # tenacity is done: its outcome is the call's
            do = steps.next()
        result = steps.result(result)
    except BaseException as exc:
        state.finish(exc)
        raise
    finally:
        steps.release()
    state.finish(None)
    return result


def run_sync(
    state: CallState,
    send: Callable[[int], Any],
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """The synchronous twin of :func:`run_async`: the same lines without ``await``."""
    steps = _Steps(state)
    result: Any = None
    do: object = _FIRST  # tenacity's first step, taken without asking it
    try:
        while True:
            if do is _FIRST or isinstance(do, tenacity.DoAttempt):
                if not state.will_send():  # the SDK's own refusal; see ``CallState.sendable``
                    steps.refused(result := send(0))
                    break
                number = state.begin_attempt(_slot(state, sleep))
                try:
                    result = send(number)
                except BaseException as exc:
                    steps.failed(number, exc)
                else:
                    if steps.succeeded(number, result):
                        break
            elif isinstance(do, tenacity.DoSleep):
                for waiting in steps.retrying():  # before the reset
                    discard(waiting)
                with steps.sleeping(do):
                    sleep(do)
            else:
                break  # tenacity is done: its outcome is the call's
            do = steps.next()
        result = steps.result(result)
    except BaseException as exc:
        state.finish(exc)
        raise
    finally:
        steps.release()
    state.finish(None)
    return result


async def _wait_for(pending: list[Awaitable[object]]) -> None:
    """What observers returned before a sleep; an observer's bug must not lose the user's call."""
    for waiting in pending:
        try:
            await waiting
        except Exception:
            report_internal_error("retry hook")


def discard(waiting: Awaitable[object]) -> None:
    """A sync call cannot wait: close what an observer returned (so Python does not warn that it
    was never awaited) and report it as the observer's bug."""
    if inspect.iscoroutine(waiting):
        coroutine: Coroutine[Any, Any, Any] = waiting
        coroutine.close()
    try:
        raise TypeError("an observer returned an awaitable during a sync call: not awaited")
    except TypeError:
        report_internal_error("retry hook")
