"""The drop-in ``acompletion_with_retry`` / ``completion_with_retry`` and ``reporting_to``.

``langchain_community``'s versions no longer retry with tenacity on openai>=1 and fail for
``OpenAIChat``; the drop-ins retry in the library's loop, hand every retry to the run manager and
work for every LangChain OpenAI model. Real models, real SDK, the fake server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from langchain_community.chat_models.openai import ChatOpenAI as CommunityChatOpenAI
from langchain_community.llms import AzureOpenAI as CommunityAzureOpenAI
from langchain_community.llms import OpenAI as CommunityOpenAI
from langchain_community.llms import OpenAIChat
from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_openai import ChatOpenAI
from langchain_openai import OpenAI as LangChainOpenAI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from otel_openai_retry.langchain import _completion as completion_module
from otel_openai_retry.langchain import (
    acompletion_with_retry,
    completion_with_retry,
    reporting_to,
)
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import API_KEY, Instrument, async_client, one_call
from .test_langchain_support import (
    ISOLATED,
    AsyncRecorder,
    SyncRecorder,
    assert_retries_match,
    bridge_on,
)

# The community classes are deprecated and call pydantic's deprecated ``dict()``: tested on purpose.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:You are trying to use a chat model:UserWarning"),
]

FAULTS = (Fault.rate_limit(retry_after_ms=20), Fault.server_error(500))
EXCEPTIONS = [openai.RateLimitError, openai.InternalServerError]
PROMPT = "Say hello"
CHAT_CALL: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": PROMPT}],
}
COMPLETION_CALL: dict[str, Any] = {"model": "gpt-3.5-turbo-instruct", "prompt": [PROMPT]}


@pytest.fixture
def core(instrument: Instrument) -> None:
    instrument(policy=ISOLATED)


@pytest.fixture
def bridge(instrument: Instrument) -> Iterator[None]:
    yield from bridge_on(instrument)


@pytest.fixture(autouse=True)
def _openai_globals(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OpenAIChat`` reads its key from the environment only, and writes it into ``openai``."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setattr(openai, "api_key", None)


def community_openai(server: FakeOpenAIServer, **kwargs: Any) -> CommunityOpenAI:
    return CommunityOpenAI(
        model_name="gpt-3.5-turbo-instruct",
        openai_api_key=API_KEY,
        openai_api_base=server.base_url,
        **kwargs,
    )


def open_ai_chat(server: FakeOpenAIServer) -> OpenAIChat:
    # ``OpenAIChat`` takes only its aliases (anything else lands in model_kwargs).
    return OpenAIChat(base_url=server.base_url)


def community_azure(server: FakeOpenAIServer) -> CommunityAzureOpenAI:
    """Its own Azure clients, with Azure's URLs mapped onto the fake server's ``/v1``."""

    def to_v1(request: Any) -> None:
        tail = request.url.path.partition("/deployments/")[2].split("/", 1)[1]
        request.url = request.url.copy_with(path=f"/v1/{tail}")

    async def to_v1_async(request: Any) -> None:
        to_v1(request)

    settings: dict[str, Any] = {
        "azure_endpoint": server.base_url.removesuffix("/v1"),
        "azure_deployment": "gpt-35-instruct",
        "api_version": "2024-10-21",
        "api_key": API_KEY,
    }
    llm = CommunityAzureOpenAI(
        deployment_name="gpt-35-instruct",
        openai_api_version="2024-10-21",
        azure_endpoint=server.base_url.removesuffix("/v1"),
        openai_api_key=API_KEY,
    )
    llm.client = openai.AzureOpenAI(
        **settings, http_client=openai.DefaultHttpxClient(event_hooks={"request": [to_v1]})
    ).completions
    llm.async_client = openai.AsyncAzureOpenAI(
        **settings,
        http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [to_v1_async]}),
    ).completions
    return llm


def community_chat_openai(server: FakeOpenAIServer) -> CommunityChatOpenAI:
    return CommunityChatOpenAI(model="gpt-4o-mini", api_key=API_KEY, base_url=server.base_url)


def chat_openai(server: FakeOpenAIServer) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini",
        api_key=SecretStr(API_KEY),
        base_url=server.base_url,
        http_async_client=openai.DefaultAsyncHttpxClient(),
    )


def langchain_openai_llm(server: FakeOpenAIServer) -> LangChainOpenAI:
    return LangChainOpenAI(
        model="gpt-3.5-turbo-instruct",
        api_key=SecretStr(API_KEY),
        base_url=server.base_url,
        http_async_client=openai.DefaultAsyncHttpxClient(),
    )


LLMS: dict[str, tuple[Callable[[FakeOpenAIServer], Any], dict[str, Any]]] = {
    "community OpenAI": (community_openai, COMPLETION_CALL),
    "community AzureOpenAI": (community_azure, COMPLETION_CALL),
    "OpenAIChat": (open_ai_chat, CHAT_CALL),
    "community ChatOpenAI": (community_chat_openai, CHAT_CALL),
    "langchain_openai OpenAI": (langchain_openai_llm, COMPLETION_CALL),
    "ChatOpenAI": (chat_openai, CHAT_CALL),
}


async def async_run(handler: Any) -> AsyncCallbackManagerForLLMRun:
    (run_manager,) = await AsyncCallbackManager.configure([handler]).on_llm_start(
        {"name": "test"}, [PROMPT]
    )
    return run_manager


def sync_run(handler: Any) -> CallbackManagerForLLMRun:
    (run_manager,) = CallbackManager.configure([handler]).on_llm_start({"name": "test"}, [PROMPT])
    return run_manager


def text(output: Any) -> str:
    """A completion model's string, or a chat model's message content."""
    content = output if isinstance(output, str) else output.content
    assert isinstance(content, str)
    return content


def reply_text(response: Any) -> str:
    choice = response.choices[0]
    text = choice.message.content if hasattr(choice, "message") else choice.text
    assert isinstance(text, str)
    return text


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("kind", list(LLMS))
async def test_async_drop_in_retries_and_awaits_on_retry(
    kind: str, server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    make, call_kwargs = LLMS[kind]
    server.script(*FAULTS)
    handler = AsyncRecorder()
    run_manager = await async_run(handler)

    response = await acompletion_with_retry(make(server), run_manager=run_manager, **call_kwargs)

    assert reply_text(response) == f"Echo: {PROMPT}"
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.attempts") == 3
    assert [type(r.exception) for r in handler.seen.retries] == EXCEPTIONS
    assert [r.attempt for r in handler.seen.retries] == [1, 2]
    assert_retries_match(call, handler.seen, run_manager.run_id)
    if kind == "community AzureOpenAI":
        assert call.attr("gen_ai.provider.name") == "azure.ai.openai"


@pytest.mark.usefixtures("core")
@pytest.mark.parametrize("kind", list(LLMS))
async def test_sync_drop_in_retries_and_calls_on_retry(
    kind: str, server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    make, call_kwargs = LLMS[kind]
    server.script(*FAULTS)
    handler = SyncRecorder()
    run_manager = sync_run(handler)
    llm = make(server)

    response = await asyncio.to_thread(
        lambda: completion_with_retry(llm, run_manager=run_manager, **call_kwargs)
    )

    assert reply_text(response) == f"Echo: {PROMPT}"
    call = one_call(exporter.get_finished_spans())
    assert [type(r.exception) for r in handler.seen.retries] == EXCEPTIONS
    assert_retries_match(call, handler.seen, run_manager.run_id)


@pytest.mark.usefixtures("core")
async def test_drop_in_streams_for_open_ai_chat_as_v0_chunks(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    """``OpenAIChat`` reads stream chunks as v0 dicts; it gets them, retried first."""
    server.script(*FAULTS)
    handler = AsyncRecorder()
    stream = await acompletion_with_retry(
        open_ai_chat(server), run_manager=await async_run(handler), stream=True, **CHAT_CALL
    )
    chunks = [chunk async for chunk in stream]
    assert all(isinstance(chunk, dict) for chunk in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Echo: Say hello"
    assert len(handler.seen.retries) == 2
    assert one_call(exporter.get_finished_spans()).attr("openai_retry.outcome") == "success"


@pytest.mark.usefixtures("core")
async def test_without_run_manager_it_still_retries(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    server.script(*FAULTS)
    response = await acompletion_with_retry(community_openai(server), **COMPLETION_CALL)
    assert reply_text(response) == f"Echo: {PROMPT}"
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.attempts") == 3
    assert call.attr("langchain.run_id") is None


@pytest.mark.usefixtures("core")
async def test_llm_max_retries_counts_retries(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    server.script(*FAULTS, Fault.server_error(503))
    handler = AsyncRecorder()
    with pytest.raises(openai.InternalServerError):
        await acompletion_with_retry(
            community_openai(server, max_retries=1),
            run_manager=await async_run(handler),
            **COMPLETION_CALL,
        )
    assert server.request_count == 2
    assert [r.attempt for r in handler.seen.retries] == [1]


@pytest.mark.usefixtures("core")
async def test_open_ai_chat_max_retries_zero_is_one_attempt(server: FakeOpenAIServer) -> None:
    server.script(Fault.rate_limit(retry_after_ms=20))
    llm = open_ai_chat(server)
    llm.max_retries = 0  # its constructor puts the field in model_kwargs, so assign it
    handler = AsyncRecorder()
    with pytest.raises(openai.RateLimitError):
        await acompletion_with_retry(llm, run_manager=await async_run(handler), **CHAT_CALL)
    assert server.request_count == 1
    assert handler.seen.retries == []


async def test_without_instrumentation_it_warns_once_and_the_sdk_retries(
    server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completion_module, "_warned", [])
    server.script(Fault.rate_limit(retry_after_ms=20))
    llm = community_openai(server)
    with caplog.at_level(logging.WARNING, logger="otel_openai_retry"):
        await acompletion_with_retry(llm, **COMPLETION_CALL)
        await acompletion_with_retry(llm, **COMPLETION_CALL)
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "not instrumented" in caplog.records[0].message
    assert server.request_count == 3  # the SDK's own hidden retry, then one plain call


@pytest.mark.usefixtures("bridge")
@pytest.mark.parametrize("how", ["ainvoke", "astream", "invoke", "stream"])
@pytest.mark.parametrize("kind", ["community OpenAI", "OpenAIChat", "community ChatOpenAI"])
async def test_community_models_report_retries_with_the_bridge(
    kind: str, how: str, server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    """Unchanged community code: its module-level ``acompletion_with_retry`` is ours now."""
    server.script(*FAULTS)
    handler = AsyncRecorder()
    llm = LLMS[kind][0](server)
    config: Any = {"callbacks": [handler]}
    if how == "ainvoke":
        reply = text(await llm.ainvoke(PROMPT, config=config))
    elif how == "astream":
        reply = "".join([text(chunk) async for chunk in llm.astream(PROMPT, config=config)])
    elif how == "invoke":
        reply = text(await asyncio.to_thread(llm.invoke, PROMPT, config=config))
    else:
        chunks = await asyncio.to_thread(lambda: list(llm.stream(PROMPT, config=config)))
        reply = "".join(text(chunk) for chunk in chunks)
    assert reply == f"Echo: {PROMPT}"
    call = one_call(exporter.get_finished_spans())
    (run_id,) = handler.seen.llm_runs
    assert [type(r.exception) for r in handler.seen.retries] == EXCEPTIONS
    assert_retries_match(call, handler.seen, run_id)


@pytest.mark.usefixtures("bridge")
async def test_community_module_function_called_directly_is_the_drop_in(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    from langchain_community.llms import openai as community

    server.script(*FAULTS)
    handler = AsyncRecorder()
    run_manager = await async_run(handler)
    await community.acompletion_with_retry(
        open_ai_chat(server), run_manager=run_manager, **CHAT_CALL
    )
    assert_retries_match(one_call(exporter.get_finished_spans()), handler.seen, run_manager.run_id)
    assert len(handler.seen.retries) == 2


@pytest.mark.usefixtures("core")
async def test_reporting_to_reports_any_openai_call_to_a_run_of_your_own(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter
) -> None:
    """A custom chain or tool calling the SDK itself: its own run sees the retries."""
    server.script(*FAULTS)
    handler = AsyncRecorder()
    run_manager = await AsyncCallbackManager.configure([handler]).on_chain_start(
        {"name": "my tool"}, {"question": PROMPT}
    )
    client = async_client(server)
    with reporting_to(run_manager):
        await client.chat.completions.create(**CHAT_CALL)
    call = one_call(exporter.get_finished_spans())
    assert_retries_match(call, handler.seen, run_manager.run_id)
    assert len(handler.seen.retries) == 2
