"""Users' own retry hooks: what they are told, when, and that their bugs never cost the call."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Iterator

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import (
    RetryDetails,
    get_on_retry_hooks,
    set_on_retry_hooks,
)
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import FAST, MESSAGES, Instrument, Sdk, async_client, one_call, sync_client


@pytest.fixture(autouse=True)
def no_hooks_left() -> Iterator[None]:
    yield
    set_on_retry_hooks(None)


def test_a_hook_sees_each_failed_attempt_with_the_sleep_on_its_span(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    seen: list[RetryDetails] = []
    set_on_retry_hooks([seen.append])
    server.script(Fault.rate_limit(retry_after_ms=20), Fault.server_error(500))

    sync_client(server).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert [d.attempt for d in seen] == [1, 2]
    assert [d.name for d in seen] == ["chat gpt-4o-mini"] * 2
    assert isinstance(seen[0].exception, openai.RateLimitError)
    assert isinstance(seen[1].exception, openai.InternalServerError)
    assert seen[0].retry_after == pytest.approx(0.02)
    assert seen[1].retry_after is None
    assert 0.02 <= seen[0].sleep <= 0.022
    assert 0 < seen[0].elapsed <= seen[1].elapsed
    call = one_call(exporter.get_finished_spans())
    slept = [a.attributes["openai_retry.sleep"] for a in call.attempts[:2] if a.attributes]
    assert slept == [d.sleep for d in seen]
    assert server.request_count == 3


async def test_an_async_call_awaits_what_a_hook_returns_before_it_sleeps(
    server: FakeOpenAIServer, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    order: list[str] = []

    async def slow_hook(details: RetryDetails) -> None:
        order.append(f"hook {details.attempt} begins")
        await asyncio.sleep(0.01)
        order.append(f"hook {details.attempt} ends, requests so far {server.request_count}")

    set_on_retry_hooks([slow_hook])
    server.script(Fault.server_error(503))

    await async_client(server).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert order == ["hook 1 begins", "hook 1 ends, requests so far 1"]
    assert server.request_count == 2


async def test_a_hook_that_raises_costs_the_call_nothing(
    sdk: Sdk,
    server: FakeOpenAIServer,
    instrument: Instrument,
    caplog: pytest.LogCaptureFixture,
    production_errors: None,
) -> None:
    instrument(policy=FAST)
    after: list[int] = []

    def broken(details: RetryDetails) -> None:
        raise RuntimeError("hook bug")

    set_on_retry_hooks([broken, lambda details: after.append(details.attempt)])
    server.script(Fault.server_error(500), Fault.server_error(500))

    client = sdk.client(server)
    result = await sdk(
        lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    )

    assert result.choices[0].message.content
    assert after == [1, 2]  # the hooks after the broken one still run
    assert server.request_count == 3
    reported = [r for r in caplog.records if "internal error in retry hook" in r.getMessage()]
    assert len(reported) == 1  # two failures of the hook, logged once
    assert "RuntimeError: hook bug" in reported[0].getMessage()


def test_a_coroutine_hook_on_a_sync_call_is_closed_and_reported(
    server: FakeOpenAIServer,
    instrument: Instrument,
    caplog: pytest.LogCaptureFixture,
    production_errors: None,
) -> None:
    instrument(policy=FAST)
    ran: list[int] = []

    async def async_only(details: RetryDetails) -> None:
        ran.append(details.attempt)

    set_on_retry_hooks([async_only])
    server.script(Fault.server_error(500))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sync_client(server).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        gc.collect()

    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert ran == []
    assert server.request_count == 2
    assert "TypeError: an observer returned an awaitable during a sync call" in caplog.text


def test_hooks_are_replaced_removed_and_checked(
    server: FakeOpenAIServer, instrument: Instrument
) -> None:
    first: list[RetryDetails] = []
    second: list[RetryDetails] = []
    set_on_retry_hooks([first.append])
    set_on_retry_hooks((second.append,))
    assert get_on_retry_hooks() == (second.append,)
    with pytest.raises(TypeError, match="a retry hook must be callable, not str"):
        set_on_retry_hooks(["print"])  # type: ignore[list-item]
    assert get_on_retry_hooks() == (second.append,)  # a bad list changes nothing
    set_on_retry_hooks(None)
    assert get_on_retry_hooks() == ()

    instrument(policy=FAST)
    server.script(Fault.server_error(500))
    sync_client(server).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert first == second == []
    assert server.request_count == 2


def test_a_hook_runs_only_while_the_library_is_instrumented(
    server: FakeOpenAIServer, instrument: Instrument
) -> None:
    seen: list[int] = []
    set_on_retry_hooks([lambda details: seen.append(details.attempt)])
    instrumentor = instrument(policy=FAST)
    instrumentor.uninstrument()
    server.script(Fault.server_error(500))

    sync_client(server).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert seen == []  # the SDK's own loop retried, out of our sight
    assert server.request_count == 2
