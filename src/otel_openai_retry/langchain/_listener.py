"""A LangChain run manager as an observer of the OpenAI calls made under its run.

The bridge marks the code that runs under a run manager (``reporting_to``, or a stream's
:class:`~._runs.StreamRun`) with a context variable of its own; every instrumented call started
there is watched by one :class:`RunManagerObserver`, found through the factory this module
registers with the core. The core knows nothing of LangChain: a context with no run costs one
context-variable read per call.

The observer calls ``on_retry`` before the sleep and the loop waits for it, so handlers see the
attempt that just failed; LangChain's own async path fires ``on_retry`` as a background task that
reads the state after tenacity has reset it.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import tenacity
from langchain_core.callbacks import AsyncRunManager, RunManager
from opentelemetry.util.types import AttributeValue

from .._hooks import RetryDetails
from .._observers import Observer, add_observer_factory

__all__ = ["AnyRunManager", "RunManagerObserver", "reporting_to", "running_under"]

AnyRunManager = RunManager | AsyncRunManager
"""Any run manager with ``on_retry``: an LLM's, or a chain's when a drop-in is called from one."""


class RunSource(Protocol):
    """What the context holds: a run manager now, or a stream's run once it has started."""

    @property
    def run_manager(self) -> AnyRunManager | None: ...


class _Known:
    __slots__ = ("run_manager",)

    def __init__(self, run_manager: AnyRunManager) -> None:
        self.run_manager: AnyRunManager | None = run_manager


_current: ContextVar[RunSource | None] = ContextVar("otel_openai_retry_lc_run", default=None)


class RunManagerObserver(Observer):
    """Reports every retry of one call to a run manager, and puts its ids on the call's span.

    Either path can meet either kind of manager (LangChain runs a sync ``_generate`` in an
    executor with ``get_sync()`` of an async manager; a user may await a drop-in with a sync one).
    """

    __slots__ = ("_is_async", "_run_manager", "span_attributes")

    def __init__(self, run_manager: AnyRunManager, is_async: bool) -> None:
        self._run_manager = run_manager
        self._is_async = is_async
        attributes: dict[str, AttributeValue] = {"langchain.run_id": str(run_manager.run_id)}
        if run_manager.parent_run_id is not None:
            attributes["langchain.parent_run_id"] = str(run_manager.parent_run_id)
        self.span_attributes = attributes

    def retrying(
        self, details: RetryDetails, retry_state: tenacity.RetryCallState
    ) -> Awaitable[object] | None:
        manager = self._run_manager
        if isinstance(manager, AsyncRunManager):
            if self._is_async:
                return manager.on_retry(snapshot(retry_state))
            manager.get_sync().on_retry(snapshot(retry_state))
        else:
            manager.on_retry(snapshot(retry_state))
        return None


def snapshot(state: tenacity.RetryCallState) -> tenacity.RetryCallState:
    """A copy of tenacity's live state that stays as it is now.

    Right after the observers are told, tenacity resets the live object for the next attempt
    (outcome and next action cleared, attempt number bumped). A handler that keeps the state, or
    reads it later, must still see the attempt that failed. Resetting rebinds attributes and
    mutates nothing they point to, so a shallow copy is enough.
    """
    return copy.copy(state)


def _observer_for_call(is_async: bool) -> RunManagerObserver | None:
    source = _current.get()
    if source is None:
        return None
    manager = source.run_manager
    return None if manager is None else RunManagerObserver(manager, is_async)


add_observer_factory(_observer_for_call)


@contextmanager
def running_under(source: RunSource) -> Iterator[None]:
    """The OpenAI calls made inside the block report to ``source``'s run manager."""
    token = _current.set(source)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def reporting_to(run_manager: AnyRunManager | None) -> Iterator[None]:
    """Report the retries of the OpenAI calls made inside the block to ``run_manager``, if any."""
    if run_manager is None:
        yield
        return
    with running_under(_Known(run_manager)):
        yield


def current_run_manager() -> AnyRunManager | None:
    """The run manager the calls made here would report to (for tests and custom code)."""
    source = _current.get()
    return None if source is None else source.run_manager
