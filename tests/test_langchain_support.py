"""Shared by the ``test_langchain_*`` modules: handlers that record ``on_retry``, the bridge setup,
and the check that what LangChain saw is what the spans say. No tests of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

import tenacity
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

from otel_openai_retry.langchain import LangChainRetryInstrumentor

from .helpers import FAST, Call, Instrument, attrs

ISOLATED = replace(FAST, adaptive=False, budget=0)
"""Fast backoff; no pacing or retry budget, so that each test sees only its own script."""


@dataclass(frozen=True)
class SeenRetry:
    """What one ``on_retry`` call handed to a handler, read when it was handed."""

    attempt: int
    exception: BaseException | None
    sleep: float | None
    run_id: UUID
    parent_run_id: UUID | None
    state: tenacity.RetryCallState


@dataclass
class Seen:
    retries: list[SeenRetry] = field(default_factory=list)
    llm_runs: list[UUID] = field(default_factory=list)
    chain_runs: list[UUID] = field(default_factory=list)

    def record(
        self, state: tenacity.RetryCallState, run_id: UUID, parent_run_id: UUID | None
    ) -> None:
        outcome = state.outcome
        assert outcome is not None and outcome.failed, "on_retry must describe a failed attempt"
        self.retries.append(
            SeenRetry(
                attempt=state.attempt_number,
                exception=outcome.exception(),
                sleep=state.next_action.sleep if state.next_action is not None else None,
                run_id=run_id,
                parent_run_id=parent_run_id,
                state=state,
            )
        )


class AsyncRecorder(AsyncCallbackHandler):
    """An async handler, as LangChain applications write them."""

    def __init__(self) -> None:
        self.seen = Seen()

    async def on_retry(
        self,
        retry_state: tenacity.RetryCallState,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.seen.record(retry_state, run_id, parent_run_id)

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: Any, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.seen.llm_runs.append(run_id)

    async def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.seen.llm_runs.append(run_id)

    async def on_chain_start(
        self, serialized: dict[str, Any], inputs: dict[str, Any], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.seen.chain_runs.append(run_id)


class SyncRecorder(BaseCallbackHandler):
    """A sync handler; LangChain runs it in an executor on the async path."""

    def __init__(self) -> None:
        self.seen = Seen()

    def on_retry(
        self,
        retry_state: tenacity.RetryCallState,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.seen.record(retry_state, run_id, parent_run_id)

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: Any, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.seen.llm_runs.append(run_id)

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.seen.llm_runs.append(run_id)


def bridge_on(instrument: Instrument) -> Iterator[None]:
    """Body of a fixture: the core with :data:`ISOLATED`, the bridge on, both undone after."""
    instrument(policy=ISOLATED)
    bridge = LangChainRetryInstrumentor()
    bridge.instrument()
    try:
        yield
    finally:
        bridge.uninstrument()


def assert_retries_match(call: Call, seen: Seen, run_id: UUID | None = None) -> None:
    """One ``on_retry`` per failed attempt that a retry followed, describing that attempt."""
    retried = call.attempts[:-1]
    assert [r.attempt for r in seen.retries] == [attrs(a)["openai_retry.attempt"] for a in retried]
    for retry, attempt in zip(seen.retries, retried, strict=True):
        exception = retry.exception
        assert exception is not None
        assert attrs(attempt)["error.type"] == f"openai.{type(exception).__name__}"
        assert retry.sleep == attrs(attempt)["openai_retry.sleep"]
    if run_id is not None:
        assert {r.run_id for r in seen.retries} <= {run_id}
        assert call.attr("langchain.run_id") == str(run_id)
