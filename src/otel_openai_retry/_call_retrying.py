"""Tenacity's per-call objects, for objects that only ever serve one call.

Tenacity is built to share one retrying object between threads and to hand outcomes between
them: it keeps statistics and iteration state in a ``threading.local`` and stores every outcome
in a ``concurrent.futures.Future``, which builds a ``threading.Condition`` and takes it at every
read. We make one retrying object and one state per call, driven by that call's own task or
thread, so plain attributes and an outcome that is settled when made serve, with the same
behaviour for tenacity and for the hooks that read ``retry_state.outcome``. Every OpenAI call
goes through here, so this is worth ~5 µs a call (``benchmarks/overhead_inprocess.py``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import InvalidStateError
from concurrent.futures._base import FINISHED
from typing import Any

import tenacity

__all__ = ["CallRetryState", "CallRetrying", "SettledOutcome"]

_futures_logger = logging.getLogger("concurrent.futures")


class CallRetrying(tenacity.Retrying):
    """A ``tenacity.Retrying`` for one call: its statistics and iteration state are plain
    attributes, not thread-locals looked up at every step."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._call_statistics: dict[str, Any] = {}
        self._call_iter_state = tenacity.IterState()

    @property
    def statistics(self) -> dict[str, Any]:
        return self._call_statistics

    @property
    def iter_state(self) -> tenacity.IterState:
        return self._call_iter_state

    def release(self) -> None:
        """Drop the actions of the last step: they are bound to this object, so kept they make
        every call a reference cycle that only the garbage collector frees, with everything the
        call touched (its state, its spans' observer)."""
        self._call_iter_state.reset()


class CallRetryState(tenacity.RetryCallState):
    """A ``tenacity.RetryCallState`` whose outcomes are :class:`SettledOutcome`."""

    def set_result(self, val: Any) -> None:
        self.outcome_timestamp = time.monotonic()
        self.outcome = SettledOutcome(self.attempt_number, val, None)

    def set_exception(
        self, exc_info: tuple[type[BaseException], BaseException, types.TracebackType | None]
    ) -> None:
        self.outcome_timestamp = time.monotonic()
        self.outcome = SettledOutcome(self.attempt_number, None, exc_info[1])


class SettledOutcome(tenacity.Future):
    """An attempt's outcome, complete from the start: a ``tenacity.Future`` (so ``isinstance``,
    ``failed``, ``result()``, ``exception()`` and ``RetryError`` behave as tenacity's own), without
    the ``threading.Condition`` a future that may still be pending needs."""

    _state = FINISHED  # read by ``concurrent.futures.wait`` and ``as_completed``

    def __init__(  # no super().__init__(): that builds the Condition this class exists to avoid
        self, attempt_number: int, result: Any, exception: BaseException | None
    ) -> None:
        self.attempt_number = attempt_number
        self._settled_result = result
        self._settled_exception = exception

    @property
    def failed(self) -> bool:
        return self._settled_exception is not None

    def result(self, timeout: float | None = None) -> Any:
        exception = self._settled_exception
        if exception is not None:
            try:
                raise exception
            finally:  # as concurrent.futures does: the traceback must not keep this frame's self
                del self, exception
        return self._settled_result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._settled_exception

    def done(self) -> bool:
        return True

    def running(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def cancel(self) -> bool:
        return False

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        try:  # at once, as for any future already done; a failing callback is only logged
            fn(self)
        except Exception:
            _futures_logger.exception("exception calling callback for %r", self)

    # Only ``concurrent.futures.wait`` and ``as_completed`` use these (they lock every future
    # given, in ``id`` order, and add a waiter to each), so each outcome makes its own on demand.
    @functools.cached_property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        return threading.Condition()

    @functools.cached_property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        return []

    def set_result(self, result: Any) -> None:
        raise InvalidStateError(f"{self!r} is already settled")

    def set_exception(self, exception: BaseException | None) -> None:
        raise InvalidStateError(f"{self!r} is already settled")

    def set_running_or_notify_cancel(self) -> bool:
        raise RuntimeError(f"{self!r} is already settled")

    def __repr__(self) -> str:
        if self._settled_exception is not None:
            state = f"raised {type(self._settled_exception).__name__}"
        else:
            state = f"returned {type(self._settled_result).__name__}"
        return f"<SettledOutcome of attempt {self.attempt_number}: {state}>"
