"""Switching the bridge on and off: ``import otel_openai_retry.auto`` with and without LangChain,
and ``uninstrument()`` leaving LangChain exactly as it was."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks.manager import AsyncCallbackManager, CallbackManager
from langchain_core.language_models import BaseChatModel, BaseLLM

from otel_openai_retry.langchain import LangChainRetryInstrumentor

from .helpers import last_json_line, run_python

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def patched_places() -> list[tuple[Any, str]]:
    from langchain_community.chat_models import openai as community_chat
    from langchain_community.llms import openai as community_llms

    return [
        (BaseChatModel, "_generate_with_cache"),
        (BaseChatModel, "_agenerate_with_cache"),
        (BaseChatModel, "stream"),
        (BaseChatModel, "astream"),
        (BaseLLM, "_generate_helper"),
        (BaseLLM, "_agenerate_helper"),
        (BaseLLM, "stream"),
        (BaseLLM, "astream"),
        (CallbackManager, "on_chat_model_start"),
        (CallbackManager, "on_llm_start"),
        (AsyncCallbackManager, "on_chat_model_start"),
        (AsyncCallbackManager, "on_llm_start"),
        (community_llms, "acompletion_with_retry"),
        (community_llms, "completion_with_retry"),
        (community_chat, "acompletion_with_retry"),
        (community_chat.ChatOpenAI, "completion_with_retry"),
    ]


def test_uninstrument_restores_langchain_exactly() -> None:
    originals = {place: vars(place[0])[place[1]] for place in patched_places()}
    bridge = LangChainRetryInstrumentor()

    bridge.instrument()
    try:
        for (owner, name), original in originals.items():
            wrapper = vars(owner)[name]
            assert wrapper is not original, name
            assert wrapper.__wrapped__ is original, name
        bridge.instrument()  # a second instrument() is ignored, nothing wrapped twice
        assert all(
            vars(owner)[name].__wrapped__ is original
            for (owner, name), original in originals.items()
        )
    finally:
        bridge.uninstrument()

    for (owner, name), original in originals.items():
        assert vars(owner)[name] is original, name
    bridge.uninstrument()  # harmless


def test_instrument_again_after_uninstrument_wraps_again() -> None:
    original = vars(BaseChatModel)["astream"]
    bridge = LangChainRetryInstrumentor()
    for _ in range(2):
        bridge.instrument()
        try:
            assert vars(BaseChatModel)["astream"].__wrapped__ is original
        finally:
            bridge.uninstrument()
        assert vars(BaseChatModel)["astream"] is original


WITHOUT_LANGCHAIN = textwrap.dedent(
    """
    import json, sys
    for name in ("langchain", "langchain_core", "langchain_openai", "langchain_community"):
        sys.modules[name] = None  # unimportable, and find_spec() says absent: as if not installed
    import otel_openai_retry.auto
    import openai
    print(json.dumps(sorted(
        name for name, module in sys.modules.items() if module is not None and "langchain" in name
    )))
    """
)

LANGCHAIN_IMPORTED_AFTER = textwrap.dedent(
    """
    import asyncio, json, sys
    import otel_openai_retry.auto
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))
    already = sorted(name for name in sys.modules if name.startswith("langchain_openai"))

    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_openai import ChatOpenAI
    from otel_openai_retry.testing import FakeOpenAIServer, Fault

    class Handler(AsyncCallbackHandler):
        def __init__(self):
            self.runs, self.retries = [], []
        async def on_chat_model_start(self, serialized, messages, *, run_id, **kwargs):
            self.runs.append(str(run_id))
        async def on_retry(self, state, *, run_id, **kwargs):
            exc = state.outcome.exception()
            self.retries.append([state.attempt_number, type(exc).__name__, str(run_id)])

    async def main():
        handler = Handler()
        with FakeOpenAIServer() as server:
            server.script(Fault.rate_limit(retry_after_ms=10), Fault.server_error(500))
            llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-auto", base_url=server.base_url)
            reply = await llm.ainvoke("hi", config={"callbacks": [handler]})
            requests = server.request_count
        logical = [s for s in memory.get_finished_spans() if s.name == "chat gpt-4o-mini"]
        return {
            "already": already,
            "reply": reply.content,
            "requests": requests,
            "runs": handler.runs,
            "retries": handler.retries,
            "span_run_ids": [dict(s.attributes).get("langchain.run_id") for s in logical],
        }

    print(json.dumps(asyncio.run(main())))
    """
)


def run_script(script: str) -> Any:
    done = run_python(
        "-W",
        "ignore",
        "-c",
        script,
        env={
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_OPENAI_RETRY_INITIAL_WAIT": "0.01",
            "OTEL_OPENAI_RETRY_ADAPTIVE": "false",
        },
    )
    return last_json_line(done)


def test_auto_import_without_langchain_imports_nothing_of_it() -> None:
    assert run_script(WITHOUT_LANGCHAIN) == []


def test_auto_import_reaches_langchain_code_imported_afterwards() -> None:
    result = run_script(LANGCHAIN_IMPORTED_AFTER)
    assert result["already"] == [], "activation must not import langchain_openai"
    assert result["reply"] == "Echo: hi"
    assert result["requests"] == 3
    (run_id,) = result["runs"]
    assert result["retries"] == [
        [1, "RateLimitError", run_id],
        [2, "InternalServerError", run_id],
    ]
    assert result["span_run_ids"] == [run_id]


def test_the_langchain_example_runs_without_an_api_key() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "langchain_chain.py"
    done = run_python("-W", "ignore", str(example), env={"OTEL_OPENAI_RETRY_ADAPTIVE": "false"})
    lines = done.stdout.splitlines()
    retries = [line for line in lines if "on_retry" in line]
    assert len(retries) == 2
    assert "attempt 1 failed with RateLimitError" in retries[0]
    assert "attempt 2 failed with InternalServerError" in retries[1]
    assert any(line.strip().startswith("attempt 3") for line in lines)
    assert "'langchain.run_id'" in done.stdout
