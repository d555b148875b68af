"""A LangChain chain whose callbacks see every retry: ``python examples/langchain_chain.py``.

A prompt, ``ChatOpenAI`` and an output parser, unchanged LangChain code, against the embedded fake
OpenAI server (no API key, no network). The server answers 429 then 500 before it answers; the
chain's callback handler prints each retry as it happens (the attempt that failed, its error, the
sleep chosen) and the spans of the call are printed at the end, with the LangChain run ids on
them. ``import otel_openai_retry.auto`` is the only line added for this.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr
from tenacity import RetryCallState

from otel_openai_retry.testing import FakeOpenAIServer, Fault

# A short policy, so the example finishes in a second; your environment wins if it sets one.
os.environ.setdefault("OTEL_OPENAI_RETRY_INITIAL_WAIT", "0.2")
os.environ.setdefault("OTEL_OPENAI_RETRY_MAX_WAIT", "1")


class PrintRetries(AsyncCallbackHandler):
    """What an application writes to count retries or alert on them."""

    async def on_retry(
        self,
        retry_state: RetryCallState,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        sleep = retry_state.next_action.sleep if retry_state.next_action is not None else 0.0
        print(
            f"  on_retry  run={str(run_id)[:8]}  attempt {retry_state.attempt_number} failed "
            f"with {type(error).__name__}; next attempt in {sleep * 1000:.0f} ms"
        )


def print_spans(memory: InMemorySpanExporter) -> None:
    for span in sorted(memory.get_finished_spans(), key=lambda s: s.start_time or 0):
        attributes = dict(span.attributes or {})
        shown = {
            key: value
            for key, value in attributes.items()
            if key.startswith(("openai_retry.", "langchain.", "error.type", "http.response"))
        }
        print(f"  {span.name:<18} {shown}")


async def main() -> None:
    # The application's own provider; the auto import uses it as it is.
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)

    import otel_openai_retry.auto  # noqa: F401  (the one line an application adds)

    with FakeOpenAIServer() as server:
        server.script(Fault.rate_limit(retry_after_ms=300), Fault.server_error(500))
        prompt = ChatPromptTemplate.from_messages([("user", "Say hello to {name}")])
        model = ChatOpenAI(
            model="gpt-4o-mini", api_key=SecretStr("sk-fake"), base_url=server.base_url
        )
        chain = prompt | model | StrOutputParser()

        print("▶ chain.ainvoke(...) while the server answers 429, then 500, then 200")
        answer = await chain.ainvoke({"name": "Ada"}, config={"callbacks": [PrintRetries()]})
        print(f"  answer: {answer!r}; the server received {server.request_count} requests\n")
    print("Spans (the logical call, then one per attempt):")
    print_spans(memory)


if __name__ == "__main__":
    asyncio.run(main())
