"""A LangChain run manager as a retry listener: ``on_retry`` before each sleep, ids on spans.

This is the one place where a run manager meets the retry loop. The loop calls the hook before the
sleep and waits for it, so handlers see the attempt that just failed; LangChain's own async path
fires ``on_retry`` as a background task that reads the state after tenacity has reset it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import tenacity
from langchain_core.callbacks import AsyncRunManager, RunManager
from opentelemetry.util.types import AttributeValue

from .._hooks import RetryListener, listening
from .._loop import RetryDetails

__all__ = ["AnyRunManager", "listener_for", "reporting_to"]

AnyRunManager = RunManager | AsyncRunManager
"""Any run manager with ``on_retry``: an LLM's, or a chain's when a drop-in is called from one."""


def listener_for(run_manager: AnyRunManager) -> RetryListener:
    """The listener that reports every retry of the calls beneath to ``run_manager``.

    Either path can meet either kind of manager (LangChain runs a sync ``_generate`` in an
    executor with ``get_sync()`` of an async manager; a user may await a drop-in with a sync one),
    so both hooks are always set.
    """
    attributes: dict[str, AttributeValue] = {"langchain.run_id": str(run_manager.run_id)}
    if run_manager.parent_run_id is not None:
        attributes["langchain.parent_run_id"] = str(run_manager.parent_run_id)

    if isinstance(run_manager, AsyncRunManager):
        async_manager = run_manager

        async def on_retry_async(details: RetryDetails, state: tenacity.RetryCallState) -> None:
            await async_manager.on_retry(snapshot(state))

        def on_retry_sync(details: RetryDetails, state: tenacity.RetryCallState) -> None:
            async_manager.get_sync().on_retry(snapshot(state))

    else:
        sync_manager = run_manager

        def on_retry_sync(details: RetryDetails, state: tenacity.RetryCallState) -> None:
            sync_manager.on_retry(snapshot(state))

        async def on_retry_async(details: RetryDetails, state: tenacity.RetryCallState) -> None:
            sync_manager.on_retry(snapshot(state))

    return RetryListener(
        on_retry_async=on_retry_async, on_retry_sync=on_retry_sync, span_attributes=attributes
    )


def snapshot(state: tenacity.RetryCallState) -> tenacity.RetryCallState:
    """A copy of tenacity's live state that stays as it is now.

    Right after the hook returns, tenacity resets the live object for the next attempt (outcome
    and next action cleared, attempt number bumped). A handler that keeps the state, or reads it
    later, must still see the attempt that failed. Resetting rebinds attributes and mutates
    nothing they point to, so a shallow copy is enough.
    """
    return copy.copy(state)


@contextmanager
def reporting_to(run_manager: AnyRunManager | None) -> Iterator[None]:
    """Report the retries of the OpenAI calls made inside the block to ``run_manager``, if any."""
    if run_manager is None:
        yield
        return
    with listening(listener_for(run_manager)):
        yield
