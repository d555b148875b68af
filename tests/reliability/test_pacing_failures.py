"""Pacing (or the call's setup) that fails must not touch the call: it goes on as the bare
SDK's would.

Pacing and the retry budget only ever hold a call back. A bug of ours in them (here: one method
of the endpoint's guard, or all of them, raising) must cost the caller nothing: every answer and
every exception is the one the script earns without pacing, every retry is made, the spans still
count the attempts, and the bug is logged once. The suite re-raises the library's internal
errors (tests/conftest.py); ``production_errors`` logs them, as in production.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import _call
from otel_openai_retry._endpoints import EndpointGuard, LocalGuard
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from ..helpers import FAST, Instrument, Sdk, calls

POLICY = replace(FAST, max_attempts=4)
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "broken pacing"}
]
REPLY = "Echo: broken pacing"

GUARD_METHODS = sorted(
    name
    for name, member in vars(EndpointGuard).items()
    if not name.startswith("_") and inspect.isfunction(member)
)
"""Every method the retry loop calls on an endpoint's guard."""


def test_every_method_of_the_guard_is_broken_by_some_case() -> None:
    assert {"slot_delay", "sent", "may_retry", "throttled", "answered"} <= set(GUARD_METHODS)
    assert all(hasattr(LocalGuard, name) for name in GUARD_METHODS)


def _broken(name: str) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(getattr(LocalGuard, name)):

        async def broken_async(self: LocalGuard, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"pacing bug in {name}")

        return broken_async

    def broken(self: LocalGuard, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"pacing bug in {name}")

    return broken


def ours(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "otel_openai_retry"]


async def one_round(server: FakeOpenAIServer, sdk: Sdk) -> int:
    """Calls that a pacer would hear of (429s of both kinds, with and without hints), a retried
    failure, a 400 and a stream; each answered as the bare SDK answers it. Returns the requests
    the round should make."""
    client = sdk.client(server)

    async def create() -> Any:
        return await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))

    server.script(Fault.rate_limit(retry_after_ms=5), Fault.rate_limit())
    assert (await create()).choices[0].message.content == REPLY
    server.script(Fault.rate_limit(error_type="tokens"))
    assert (await create()).choices[0].message.content == REPLY
    server.script(Fault.server_error(500), Fault.drop())
    assert (await create()).choices[0].message.content == REPLY
    server.script(Fault.status(400))
    with pytest.raises(openai.BadRequestError):
        await create()
    server.script(Fault.rate_limit(retry_after_ms=5))
    chunks = await sdk.drain(
        lambda: client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    return 3 + 2 + 3 + 1 + 2


@pytest.mark.parametrize("broken", [*GUARD_METHODS, "all"])
async def test_a_pacing_bug_costs_the_call_nothing_and_is_logged_once(
    broken: str,
    sdk: Sdk,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    production_errors: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in GUARD_METHODS if broken == "all" else [broken]:
        monkeypatch.setattr(LocalGuard, name, _broken(name))
    instrument(policy=POLICY)
    expected = await one_round(server, sdk)
    first = ours(caplog)
    expected += await one_round(server, sdk)
    assert server.request_count == expected, "every retry made, none added"
    assert sum(len(c.attempts) for c in calls(exporter.get_finished_spans())) == expected
    if broken not in ("pacing_tokens", "aslot_delay") and (sdk.is_async or broken != "shared_slot"):
        # (asked only while tokens are paced, of a shared guard, or of an async call)
        assert first, "the bug must be logged"
    assert all(
        "internal error in pacing" in m or "internal error in token usage" in m for m in first
    ), first
    assert ours(caplog) == first, "logged once: nothing more on the second round"


def _chain(exc: BaseException) -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        found.append(type(current))
        pending += [current.__cause__, current.__context__]
    return found


async def test_a_bug_setting_up_the_call_leaves_the_sdks_own_path_and_errors(
    sdk: Sdk,
    server: FakeOpenAIServer,
    instrument: Instrument,
    production_errors: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug of ours before the first attempt: the call takes the SDK's own path (its own
    retries), and an error it raises is the SDK's alone, with nothing of ours in its chain."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug setting up the call")

    monkeypatch.setattr(_call, "describe_request", broken)
    instrument(policy=POLICY)
    client = sdk.client(server)
    server.script(Fault.server_error(503))
    reply = await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))
    assert reply.choices[0].message.content == REPLY
    assert server.request_count == 2, "the SDK's own retry"
    server.script(Fault.status(400))
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk(lambda: client.chat.completions.create(model="m", messages=MESSAGES))
    assert RuntimeError not in _chain(raised.value), _chain(raised.value)
    assert len(ours(caplog)) == 1 and "internal error in request setup" in ours(caplog)[0]
