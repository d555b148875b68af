"""Tenacity's per-call objects: a settled outcome must behave as tenacity's own ``Future``."""

from __future__ import annotations

import concurrent.futures
import gc
import weakref
from typing import Any

import pytest
import tenacity

from otel_openai_retry._call_retrying import CallRetrying, CallRetryState, SettledOutcome


def test_a_successful_outcome_reads_as_tenacitys_future() -> None:
    outcome = SettledOutcome(2, "answer", None)

    assert isinstance(outcome, tenacity.Future)
    assert outcome.attempt_number == 2
    assert not outcome.failed
    assert outcome.result() == "answer"
    assert outcome.exception() is None
    assert outcome.done() and not outcome.running() and not outcome.cancelled()
    assert not outcome.cancel()
    assert repr(outcome) == "<SettledOutcome of attempt 2: returned str>"


def test_a_failed_outcome_raises_its_exception_and_reraises_through_retry_error() -> None:
    error = ConnectionError("dropped")
    outcome = SettledOutcome(3, None, error)

    assert outcome.failed
    assert outcome.exception() is error
    with pytest.raises(ConnectionError) as raised:
        outcome.result()
    assert raised.value is error
    with pytest.raises(ConnectionError):
        tenacity.RetryError(outcome).reraise()
    assert repr(outcome) == "<SettledOutcome of attempt 3: raised ConnectionError>"


def test_it_is_complete_for_concurrent_futures_and_cannot_be_settled_again() -> None:
    outcome = SettledOutcome(1, 42, None)
    futures: list[concurrent.futures.Future[Any]] = [outcome]
    seen: list[object] = []
    outcome.add_done_callback(seen.append)

    assert seen == [outcome]  # at once: there is nothing to wait for
    done, pending = concurrent.futures.wait(futures, timeout=0)
    assert done == {outcome} and not pending
    assert list(concurrent.futures.as_completed(futures, timeout=0)) == [outcome]
    with pytest.raises(concurrent.futures.InvalidStateError):
        outcome.set_result(43)
    with pytest.raises(concurrent.futures.InvalidStateError):
        outcome.set_exception(ValueError())
    assert outcome.result() == 42


def test_a_failing_callback_is_logged_as_concurrent_futures_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcome = SettledOutcome(1, 42, None)

    def broken(future: object) -> None:
        raise RuntimeError("callback bug")

    outcome.add_done_callback(broken)

    assert [record.name for record in caplog.records] == ["concurrent.futures"]
    assert "exception calling callback" in caplog.records[0].getMessage()


def test_outcomes_never_share_a_lock() -> None:
    """``wait`` locks every future it is given in ``id`` order; a lock shared between outcomes
    would break that order between threads waiting on different sets."""
    first, second = SettledOutcome(1, 1, None), SettledOutcome(2, 2, None)

    assert first._condition is not second._condition
    assert first._condition is first._condition


def test_raising_from_result_keeps_no_reference_to_the_outcome() -> None:
    """The traceback of the raised exception must not hold the outcome (a reference cycle)."""
    outcome = SettledOutcome(1, None, ValueError("bad"))
    alive = weakref.ref(outcome)
    gc.disable()
    try:
        try:
            outcome.result()
        except ValueError as error:
            caught = error
        del outcome
        assert alive() is None
        assert caught.__traceback__ is not None
    finally:
        gc.enable()


def test_tenacity_drives_a_call_state_as_its_own() -> None:
    """The same steps tenacity's ``Retrying.__call__`` takes: attempt, fail, sleep, succeed."""
    retrying = CallRetrying(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_fixed(0.25),
        retry=tenacity.retry_if_exception_type(ConnectionError),
        reraise=True,
    )
    retrying.begin()
    state = CallRetryState(retrying, fn=None, args=(), kwargs={})

    assert isinstance(retrying.iter(state), tenacity.DoAttempt)
    state.set_exception((ConnectionError, ConnectionError("first"), None))
    sleep = retrying.iter(state)
    assert isinstance(sleep, tenacity.DoSleep) and sleep == 0.25
    assert isinstance(state.outcome, SettledOutcome) and state.outcome.failed
    state.prepare_for_next_attempt()
    assert isinstance(retrying.iter(state), tenacity.DoAttempt)
    state.set_result("ok")
    assert retrying.iter(state) == "ok"
    assert retrying.statistics["attempt_number"] == 2
    assert retrying.statistics["idle_for"] == 0.25
    retrying.release()
    assert retrying.iter_state.actions == []


def test_tenacity_gives_up_with_the_last_exception() -> None:
    retrying = CallRetrying(stop=tenacity.stop_after_attempt(1), reraise=True)
    retrying.begin()
    state = CallRetryState(retrying, fn=None, args=(), kwargs={})
    retrying.iter(state)
    error = TimeoutError("slow")
    state.set_exception((TimeoutError, error, None))

    with pytest.raises(TimeoutError) as raised:
        retrying.iter(state)
    assert raised.value is error
