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
concurrent tasks loses their exceptions.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import tenacity

from ._call_state import CallState
from ._internal import report_internal_error

__all__ = ["run_async", "run_sync"]


def _give_up(retry_state: tenacity.RetryCallState) -> None:
    """Tenacity's last step when it stops retrying: the driver raises the outcome itself."""


def _begin(state: CallState) -> tuple[tenacity.Retrying, tenacity.RetryCallState]:
    retrying = tenacity.Retrying(
        stop=state.stop,
        wait=state.wait,
        retry=state.should_retry,
        before_sleep=state.before_sleep,
        retry_error_callback=_give_up,
    )
    retrying.begin()
    return retrying, tenacity.RetryCallState(retrying, fn=None, args=(), kwargs={})


def _result(retry_state: tenacity.RetryCallState) -> Any:
    """The last attempt's result, or its exception raised again."""
    assert retry_state.outcome is not None
    return retry_state.outcome.result()


async def run_async(
    state: CallState,
    send: Callable[[int], Awaitable[Any]],
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> Any:
    """Run one logical call; ``send(attempt)`` performs one HTTP attempt (``0``: not one)."""
    retrying, retry_state = _begin(state)
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
                for waiting in state.retrying(retry_state):  # before the reset
                    try:
                        await waiting
                    except Exception:  # an observer's bug must not lose the user's call
                        report_internal_error("retry hook")
                with state.sleeping(retry_state, do):
                    await sleep(do)
            else:
                break  # tenacity is done: its outcome is the call's
        result = _result(retry_state)
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
) -> Any:
    """The synchronous twin of :func:`run_async`: the same lines without ``await``."""
    retrying, retry_state = _begin(state)
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
                for waiting in state.retrying(retry_state):  # before the reset
                    discard(waiting)
                with state.sleeping(retry_state, do):
                    sleep(do)
            else:
                break  # tenacity is done: its outcome is the call's
        result = _result(retry_state)
    except BaseException as exc:
        state.finish(exc)
        raise
    finally:
        state.release(retrying, retry_state)
    state.finish(None)
    return result


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
