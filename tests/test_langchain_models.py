"""LangChain models with the bridge on: existing code, unchanged, sees every retry in its callbacks.

The real ``ChatOpenAI``, ``AzureChatOpenAI`` and ``langchain_openai.OpenAI`` against the fake
server, called every way an application calls them; what the handlers receive is checked against
the spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseLanguageModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_openai import AzureChatOpenAI, ChatOpenAI, OpenAI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, SecretStr

from otel_openai_retry.langchain._listener import current_run_manager
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import API_KEY, Instrument, attrs, calls, one_call
from .test_langchain_support import AsyncRecorder, SyncRecorder, assert_retries_match, bridge_on

pytestmark = pytest.mark.usefixtures("bridge")

FAULTS = (Fault.rate_limit(retry_after_ms=20), Fault.server_error(500))
EXCEPTIONS = [openai.RateLimitError, openai.InternalServerError]


@pytest.fixture
def bridge(instrument: Instrument) -> Iterator[None]:
    yield from bridge_on(instrument)


def chat(server: FakeOpenAIServer, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini",
        api_key=SecretStr(API_KEY),
        base_url=server.base_url,
        http_async_client=own_async_client(),
        **kwargs,
    )


def completion(server: FakeOpenAIServer, **kwargs: Any) -> OpenAI:
    return OpenAI(
        model="gpt-3.5-turbo-instruct",
        api_key=SecretStr(API_KEY),
        base_url=server.base_url,
        http_async_client=own_async_client(),
        **kwargs,
    )


def own_async_client() -> openai.DefaultAsyncHttpxClient:
    """LangChain shares one cached async HTTP client per base URL; its pooled connections belong
    to the event loop that opened them, and every test has its own loop."""
    return openai.DefaultAsyncHttpxClient()


def azure(server: FakeOpenAIServer, **kwargs: Any) -> AzureChatOpenAI:
    """Azure's URLs (``/openai/deployments/{name}/...``) mapped onto the fake server's ``/v1``."""

    def to_v1(request: Any) -> None:
        tail = request.url.path.partition("/deployments/")[2].split("/", 1)[1]
        request.url = request.url.copy_with(path=f"/v1/{tail}")

    async def to_v1_async(request: Any) -> None:
        to_v1(request)

    return AzureChatOpenAI(
        azure_endpoint=server.base_url.removesuffix("/v1"),
        azure_deployment="gpt-4o-mini",
        model="gpt-4o-mini",
        api_version="2024-10-21",
        api_key=SecretStr(API_KEY),
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [to_v1]}),
        http_async_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [to_v1_async]}),
        **kwargs,
    )


MODELS: dict[str, Callable[[FakeOpenAIServer], BaseLanguageModel[Any]]] = {
    "ChatOpenAI": chat,
    "AzureChatOpenAI": azure,
    "OpenAI": completion,
}


def text(output: Any) -> str:
    content = output.content if isinstance(output, BaseMessage) else output
    assert isinstance(content, str)
    return content


async def call(
    model: BaseLanguageModel[Any], how: str, prompt: str, callbacks: list[BaseCallbackHandler]
) -> str:
    """``prompt`` through ``model`` the way ``how`` says; sync ways in a worker thread."""
    config: Any = {"callbacks": callbacks}
    if how == "ainvoke":
        return text(await model.ainvoke(prompt, config=config))
    if how == "astream":
        return "".join([text(chunk) async for chunk in model.astream(prompt, config=config)])
    if how == "invoke":
        return text(await asyncio.to_thread(model.invoke, prompt, config=config))
    if how == "stream":
        chunks = await asyncio.to_thread(lambda: list(model.stream(prompt, config=config)))
        return "".join(text(chunk) for chunk in chunks)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["ainvoke", "astream", "invoke", "stream"])
@pytest.mark.parametrize("kind", list(MODELS))
async def test_every_retry_reaches_async_and_sync_handlers_with_the_llm_run_id(
    kind: str, how: str, server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    server.script(*FAULTS)
    async_handler, sync_handler = AsyncRecorder(), SyncRecorder()

    reply = await call(MODELS[kind](server), how, "Say hello", [async_handler, sync_handler])

    assert reply == "Echo: Say hello"
    call_ = one_call(exporter.get_finished_spans())
    assert call_.attr("openai_retry.attempts") == 3
    assert call_.attr("gen_ai.request.stream") is (True if how.endswith("stream") else None)
    (run_id,) = async_handler.seen.llm_runs
    assert sync_handler.seen.llm_runs == [run_id]
    for seen in (async_handler.seen, sync_handler.seen):
        assert [r.attempt for r in seen.retries] == [1, 2]
        assert [type(r.exception) for r in seen.retries] == EXCEPTIONS
        assert_retries_match(call_, seen, run_id)
        assert [r.parent_run_id for r in seen.retries] == [None, None]
    assert call_.attr("langchain.parent_run_id") is None
    if kind == "AzureChatOpenAI":
        assert call_.attr("gen_ai.provider.name") == "azure.ai.openai"
    assert server.request_count == 3


async def test_handlers_set_on_the_model_see_retries_too(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    server.script(*FAULTS)
    handler = SyncRecorder()
    await chat(server, callbacks=[handler]).ainvoke("Say hello")
    (run_id,) = handler.seen.llm_runs
    assert_retries_match(one_call(exporter.get_finished_spans()), handler.seen, run_id)
    assert len(handler.seen.retries) == 2


async def test_streaming_model_invoked_reports_retries(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    """``streaming=True`` (or any streaming callback, as LangGraph uses) makes ``ainvoke`` call
    the provider's ``_astream`` without the run manager: the bridge finds it all the same."""
    server.script(*FAULTS)
    handler = AsyncRecorder()
    reply = await chat(server, streaming=True).ainvoke("Say hello", config={"callbacks": [handler]})
    assert text(reply) == "Echo: Say hello"
    call_ = one_call(exporter.get_finished_spans())
    assert call_.attr("gen_ai.request.stream") is True
    assert_retries_match(call_, handler.seen, handler.seen.llm_runs[0])
    assert len(handler.seen.retries) == 2


class Person(BaseModel):
    name: str


async def test_structured_output_reports_retries(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    server.script(*FAULTS)
    handler = AsyncRecorder()
    structured = chat(server).with_structured_output(Person, method="json_mode")
    # The fake server echoes the prompt; LangChain's JSON parser reads the fenced block in it.
    person = await structured.ainvoke(
        '```json {"name": "Ada"} ```', config={"callbacks": [handler]}
    )
    assert person == Person(name="Ada")
    call_ = one_call(exporter.get_finished_spans())
    (run_id,) = handler.seen.llm_runs
    assert [type(r.exception) for r in handler.seen.retries] == EXCEPTIONS
    assert_retries_match(call_, handler.seen, run_id)
    assert call_.attr("langchain.parent_run_id") == str(handler.seen.chain_runs[0])


async def test_max_retries_zero_means_one_attempt_and_no_on_retry(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    server.script(Fault.rate_limit(retry_after_ms=20))
    handler = AsyncRecorder()
    with pytest.raises(openai.RateLimitError):
        await chat(server, max_retries=0).ainvoke("Say hello", config={"callbacks": [handler]})
    assert server.request_count == 1
    assert handler.seen.retries == []
    call_ = one_call(exporter.get_finished_spans())
    assert call_.attr("openai_retry.attempts") == 1
    assert call_.attr("openai_retry.outcome") == "exhausted"


async def test_max_retries_counts_retries(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    server.script(*FAULTS, Fault.server_error(503))
    handler = AsyncRecorder()
    with pytest.raises(openai.InternalServerError):
        await chat(server, max_retries=1).ainvoke("Say hello", config={"callbacks": [handler]})
    assert server.request_count == 2
    assert [r.attempt for r in handler.seen.retries] == [1]
    assert one_call(exporter.get_finished_spans()).attr("openai_retry.attempts") == 2


async def test_default_max_retries_leaves_the_library_policy_in_charge(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    """``ChatOpenAI`` passes no ``max_retries`` unless set: the policy's 5 attempts apply."""
    server.script(*[Fault.server_error(500)] * 4)
    handler = AsyncRecorder()
    await chat(server).ainvoke("Say hello", config={"callbacks": [handler]})
    assert server.request_count == 5
    assert [r.attempt for r in handler.seen.retries] == [1, 2, 3, 4]


@pytest.mark.parametrize("how", ["abatch", "batch"])
async def test_concurrent_runs_each_see_only_their_own_retries(
    how: str, server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    server.script(Fault.rate_limit(retry_after_ms=20), Fault.server_error(502))
    handler = AsyncRecorder()
    model = chat(server)
    config: Any = {"callbacks": [handler]}
    prompts: list[LanguageModelInput] = ["one", "two", "three"]
    if how == "abatch":
        replies = await model.abatch(prompts, config=config)
    else:
        replies = await asyncio.to_thread(model.batch, prompts, config=config)
    assert sorted(text(r) for r in replies) == ["Echo: one", "Echo: three", "Echo: two"]

    found = calls(exporter.get_finished_spans())
    assert len(found) == 3
    assert {c.attr("langchain.run_id") for c in found} == {str(r) for r in handler.seen.llm_runs}
    assert len(handler.seen.retries) == sum(len(c.attempts) - 1 for c in found) == 2
    for call_ in found:
        mine = [r for r in handler.seen.retries if str(r.run_id) == call_.attr("langchain.run_id")]
        assert len(mine) == len(call_.attempts) - 1
        for retry, attempt in zip(mine, call_.attempts, strict=False):
            assert retry.sleep == attrs(attempt)["openai_retry.sleep"]


@pytest.mark.parametrize("how", ["ainvoke", "astream"])
async def test_chain_spans_nest_under_the_callers_span_with_the_chain_as_parent_run(
    how: str,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    tracer_provider: TracerProvider,
) -> None:
    server.script(*FAULTS)
    handler = AsyncRecorder()
    prompt = ChatPromptTemplate.from_messages([("user", "{question}")])
    chain = prompt | chat(server) | StrOutputParser()
    tracer = tracer_provider.get_tracer("app")

    config: Any = {"callbacks": [handler]}
    with tracer.start_as_current_span("handle request") as request_span:
        if how == "ainvoke":
            answer = await chain.ainvoke({"question": "Say hello"}, config=config)
        else:
            answer = "".join([c async for c in chain.astream({"question": "Say hello"}, config)])

    assert answer == "Echo: Say hello"
    spans = exporter.get_finished_spans()
    call_ = one_call([s for s in spans if s.name != "handle request"])
    assert call_.span.parent is not None
    assert call_.span.parent.span_id == request_span.get_span_context().span_id
    (chain_run,) = handler.seen.chain_runs[:1]
    assert call_.attr("langchain.parent_run_id") == str(chain_run)
    assert [r.parent_run_id for r in handler.seen.retries] == [chain_run, chain_run]
    assert_retries_match(call_, handler.seen, handler.seen.llm_runs[0])


@pytest.mark.parametrize("how", ["ainvoke", "astream", "invoke", "stream"])
async def test_langchain_tracer_records_one_retry_event_per_retry(
    how: str, server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    server.script(*FAULTS)
    tracer = RunCollectorCallbackHandler()

    await call(chat(server), how, "Say hello", [tracer])

    call_ = one_call(exporter.get_finished_spans())
    (run,) = tracer.traced_runs
    events = [e for e in run.events if e["name"] == "retry"]
    assert len(events) == len(call_.attempts) - 1 == 2
    sleeps = [attrs(a)["openai_retry.sleep"] for a in call_.attempts[:-1]]
    assert [e["kwargs"]["attempt"] for e in events] == [1, 2]
    assert [e["kwargs"]["outcome"] for e in events] == ["failed", "failed"]
    assert [e["kwargs"]["exception_type"] for e in events] == [
        "RateLimitError",
        "InternalServerError",
    ]
    # tenacity's idle_for: the sleeps so far, the one about to be taken included.
    assert events[0]["kwargs"]["slept"] == pytest.approx(sleeps[0])
    assert events[1]["kwargs"]["slept"] == pytest.approx(sleeps[0] + sleeps[1])  # type: ignore[operator]


async def test_retry_state_handed_over_stays_as_it_was(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    """A handler that keeps the state (or reads it later, as background handlers do) still sees
    the failed attempt, not tenacity's state reset for the next one."""
    server.script(*FAULTS)
    handler = AsyncRecorder()
    await chat(server).ainvoke("Say hello", config={"callbacks": [handler]})
    first, second = (r.state for r in handler.seen.retries)
    assert (first.attempt_number, second.attempt_number) == (1, 2)
    assert first.outcome is not None and first.outcome.failed
    assert isinstance(first.outcome.exception(), openai.RateLimitError)
    assert first.next_action is not None
    assert first.next_action.sleep == handler.seen.retries[0].sleep


async def test_the_run_is_current_only_inside_the_stream_not_between_chunks(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    server.script(*FAULTS)
    seen_between = []
    async for _chunk in chat(server).astream("Say hello there"):
        seen_between.append(current_run_manager())
    assert seen_between and all(manager is None for manager in seen_between)
    assert one_call(exporter.get_finished_spans()).attr("langchain.run_id")
