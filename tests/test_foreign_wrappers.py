"""Someone else's ``request`` on the client classes does not bypass our loop, or is named.

The wrappers here are the shapes real instrumentations use, set on ``OpenAI``/``AsyncOpenAI``
(beneath which ours sits on the SDK's base classes): a ``functools.wraps`` closure over the
method it found (Logfire's shape), a user's subclass overriding ``request``, a wrapper set on one
client instance, and one that keeps the SDK's function where we cannot see it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import FAST, Instrument, Sdk, calls

FAILING = [Fault.server_error(500)] * 4
"""Then a 200: our 5 attempts succeed where the SDK's own 3 would fail."""


@pytest.fixture
def client_class(sdk: Sdk) -> Iterator[type]:
    """The public client class of the flavour; whatever a test sets on it is taken off after."""
    cls = openai.AsyncOpenAI if sdk.is_async else openai.OpenAI
    yield cls
    if "request" in vars(cls):
        delattr(cls, "request")


def counting(original: Callable[..., Any], seen: list[int]) -> Callable[..., Any]:
    @functools.wraps(original)
    def request(*args: Any, **kwargs: Any) -> Any:
        seen.append(1)
        return original(*args, **kwargs)  # for the async client: the coroutine, awaited above

    return request


async def chat(sdk: Sdk, client: Any) -> Any:
    return await sdk(
        lambda: client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    )


@pytest.mark.parametrize("order", ["theirs-first", "ours-first"])
async def test_a_closure_wrapper_on_the_client_class_runs_once_around_our_loop(
    sdk: Sdk,
    server: FakeOpenAIServer,
    instrument: Instrument,
    exporter: InMemorySpanExporter,
    client_class: type,
    order: str,
) -> None:
    seen: list[int] = []
    if order == "theirs-first":
        client_class.request = counting(client_class.request, seen)  # type: ignore[attr-defined]
    instrumentor = instrument(FAST)
    if order == "ours-first":
        client_class.request = counting(client_class.request, seen)  # type: ignore[attr-defined]
    server.script(*FAILING)
    await chat(sdk, sdk.client(server))
    assert server.request_count == 5
    (call,) = calls(exporter.get_finished_spans())
    assert len(call.attempts) == 5 and call.attr("openai_retry.outcome") == "success"
    assert seen == [1], "theirs once per call, outside our loop"

    instrumentor.uninstrument()  # theirs keeps working, nothing of ours on its path
    exporter.clear()
    await chat(sdk, sdk.client(server))
    assert seen == [1, 1]
    assert exporter.get_finished_spans() == ()
    cell = [c.cell_contents for c in client_class.request.__closure__]  # type: ignore[attr-defined]
    base = client_class.__mro__[1]
    assert vars(base)["request"] in cell, "their wrapper holds the SDK's function again"


async def test_a_subclass_overriding_request_gets_one_loop(
    sdk: Sdk, server: FakeOpenAIServer, instrument: Instrument, exporter: InMemorySpanExporter
) -> None:
    seen: list[int] = []
    base: Any = openai.AsyncOpenAI if sdk.is_async else openai.OpenAI

    class MyClient(base):  # type: ignore[misc]
        def request(self, *args: Any, **kwargs: Any) -> Any:
            seen.append(1)
            return super().request(*args, **kwargs)

    instrument(FAST)
    server.script(*FAILING)
    await chat(sdk, MyClient(api_key="sk-x", base_url=server.base_url))
    assert server.request_count == 5
    assert len(calls(exporter.get_finished_spans())[0].attempts) == 5
    assert seen == [1]


async def test_a_wrapper_on_one_client_instance_runs_around_our_loop(
    sdk: Sdk, server: FakeOpenAIServer, instrument: Instrument, exporter: InMemorySpanExporter
) -> None:
    seen: list[int] = []
    instrumentor = instrument(FAST)
    client = sdk.client(server)
    client.request = counting(client.request, seen)  # type: ignore[method-assign]
    server.script(*FAILING)
    await chat(sdk, client)
    assert server.request_count == 5 and seen == [1]
    assert len(calls(exporter.get_finished_spans())[0].attempts) == 5

    instrumentor.uninstrument()  # what it holds of ours only passes the call through
    exporter.clear()
    await chat(sdk, client)
    assert server.request_count == 6 and seen == [1, 1]
    assert exporter.get_finished_spans() == ()


async def test_a_wrapper_we_cannot_reach_is_named_once(
    sdk: Sdk,
    server: FakeOpenAIServer,
    instrument: Instrument,
    exporter: InMemorySpanExporter,
    client_class: type,
    caplog: pytest.LogCaptureFixture,
) -> None:
    original = client_class.request  # type: ignore[attr-defined]

    def hidden(*args: Any, _sdk: Callable[..., Any] = original, **kwargs: Any) -> Any:
        return _sdk(*args, **kwargs)

    client_class.request = hidden  # type: ignore[attr-defined]
    instrument(FAST)
    client = sdk.client(server)
    with caplog.at_level(logging.WARNING, logger="otel_openai_retry"):
        await chat(sdk, client)
        await chat(sdk, client)
    assert server.request_count == 2, "the calls themselves are unharmed"
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "otel_openai_retry" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert f"{__name__}.{hidden.__qualname__}" in warnings[0]
    assert f"on {client_class.__module__}.{client_class.__qualname__})" in warnings[0]
    assert calls(exporter.get_finished_spans()) == []


async def test_the_sdk_function_put_back_after_a_client_was_built_is_reached_from_then_on(
    sdk: Sdk,
    server: FakeOpenAIServer,
    instrument: Instrument,
    exporter: InMemorySpanExporter,
    client_class: type,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a peer's uninstrument does when it had captured the SDK's function before us."""
    instrument(FAST)
    client = sdk.client(server)
    client_class.request = vars(client_class.__mro__[1])["request"].__wrapped__  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="otel_openai_retry"):
        await chat(sdk, client)  # went around us: the SDK's own, once
    assert calls(exporter.get_finished_spans()) == []
    assert [r.levelno for r in caplog.records if r.name == "otel_openai_retry"] == [logging.INFO]
    server.script(*FAILING)
    await chat(sdk, client)
    assert server.request_count == 6
    assert len(calls(exporter.get_finished_spans())[0].attempts) == 5


async def test_a_wrapper_on_a_client_built_before_us_is_reached_after_its_first_call(
    sdk: Sdk,
    server: FakeOpenAIServer,
    instrument: Instrument,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Logfire's ``instrument_openai(client)`` on a client built before we were instrumented."""
    seen: list[int] = []
    client = sdk.client(server)
    client.request = counting(client.request, seen)  # type: ignore[method-assign]
    instrument(FAST)
    with caplog.at_level(logging.INFO, logger="otel_openai_retry"):
        await chat(sdk, client)  # went around us: the SDK's own, once
    assert calls(exporter.get_finished_spans()) == []
    assert [r.levelno for r in caplog.records if r.name == "otel_openai_retry"] == [logging.INFO]
    server.script(*FAILING)
    await chat(sdk, client)
    assert server.request_count == 6 and seen == [1, 1]
    assert len(calls(exporter.get_finished_spans())[0].attempts) == 5


async def test_the_sdks_own_retries_of_the_call_that_went_around_warn_of_nothing(
    sdk: Sdk,
    server: FakeOpenAIServer,
    instrument: Instrument,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The call that finds a wrapper from before us goes around our loop once, with the SDK's
    own retries; those later attempts meet ours already placed, which is no bypass to warn of.
    ``uninstrument()`` gives the wrapper back the SDK's own method."""
    seen: list[int] = []
    client = sdk.client(server, max_retries=2)
    client.request = counting(client.request, seen)  # type: ignore[method-assign]
    instrumentor = instrument(FAST)
    server.script(Fault.server_error(500), Fault.server_error(500))
    with caplog.at_level(logging.INFO, logger="otel_openai_retry"):
        await chat(sdk, client)  # the SDK's 3 attempts, around us
    assert [r.levelno for r in caplog.records if r.name == "otel_openai_retry"] == [logging.INFO]
    assert server.request_count == 3 and calls(exporter.get_finished_spans()) == []
    await chat(sdk, client)
    assert len(calls(exporter.get_finished_spans())) == 1, "ours from the next call on"

    instrumentor.uninstrument()
    exporter.clear()
    server.script(*[Fault.server_error(500)] * 3)
    with pytest.raises(openai.InternalServerError):
        await chat(sdk, client)  # its wrapper, around the SDK's own 3 attempts again
    assert server.request_count == 7 and seen == [1, 1, 1]
    assert exporter.get_finished_spans() == ()


async def test_a_wrapper_set_on_the_azure_client_class_before_us_runs_around_our_loop(
    sdk: Sdk, server: FakeOpenAIServer, instrument: Instrument, exporter: InMemorySpanExporter
) -> None:
    seen: list[int] = []
    azure: Any = openai.AsyncAzureOpenAI if sdk.is_async else openai.AzureOpenAI
    hooks: Any = openai.DefaultAsyncHttpxClient if sdk.is_async else openai.DefaultHttpxClient

    def to_v1(request: Any) -> None:  # Azure's URLs onto the fake server's /v1
        tail = request.url.path.partition("/deployments/")[2].split("/", 1)[1]
        request.url = request.url.copy_with(path=f"/v1/{tail}")

    async def to_v1_async(request: Any) -> None:
        to_v1(request)

    azure.request = counting(azure.request, seen)
    try:
        instrument(FAST)
        client = azure(
            azure_endpoint=server.base_url.removesuffix("/v1"),
            api_version="2024-10-21",
            api_key="sk-x",
            http_client=hooks(event_hooks={"request": [to_v1_async if sdk.is_async else to_v1]}),
        )
        server.script(*FAILING)
        await chat(sdk, client)
    finally:
        del azure.request
    assert server.request_count == 5 and seen == [1]
    assert len(calls(exporter.get_finished_spans())[0].attempts) == 5
