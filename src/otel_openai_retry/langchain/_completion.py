"""Drop-in ``acompletion_with_retry`` / ``completion_with_retry`` for LangChain's OpenAI models.

LangChain's versions promise to "use tenacity to retry the completion call", but on openai>=1 they
only call ``llm.async_client.create(**kwargs)``: the SDK retries out of sight and ``on_retry``
never fires; for ``OpenAIChat`` the client is ``None`` and the call fails. These make the same
call through the library's retry loop (the instrumentor's policy, its spans), report every retry
to ``run_manager`` before the sleep, and find a working client for every model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from openai import AsyncStream, Stream

from .._internal import logger
from .._patch import Patch
from ._clients import async_resource, sync_resource
from ._listener import AnyRunManager, reporting_to

__all__ = ["acompletion_with_retry", "completion_with_retry"]


async def acompletion_with_retry(
    llm: Any, run_manager: AnyRunManager | None = None, **kwargs: Any
) -> Any:
    """Await ``create(**kwargs)`` on the model's async client, retrying in the library's loop.

    ``llm`` is a ``langchain_community`` ``OpenAI``/``BaseOpenAI``/``AzureOpenAI``/``OpenAIChat``
    or a ``langchain_openai`` model; ``llm.max_retries`` counts retries as the SDK does (the
    SDK's default of 2 means "the library's policy"). ``run_manager.on_retry(retry_state)`` is
    awaited before every sleep with the state of the attempt that failed.
    """
    _warn_if_not_instrumented()
    resource = async_resource(llm, kwargs)
    with reporting_to(run_manager):
        result = await resource.target.create(**kwargs)
    if resource.built and kwargs.get("stream"):
        return _v0_chunks_async(result)
    return result


def completion_with_retry(llm: Any, run_manager: AnyRunManager | None = None, **kwargs: Any) -> Any:
    """The synchronous twin of :func:`acompletion_with_retry`: ``on_retry`` is called."""
    _warn_if_not_instrumented()
    resource = sync_resource(llm, kwargs)
    with reporting_to(run_manager):
        result = resource.target.create(**kwargs)
    if resource.built and kwargs.get("stream"):
        return _v0_chunks(result)
    return result


def _v0_chunks(stream: Stream[Any]) -> Iterator[dict[str, Any]]:
    """Stream chunks as the v0 dicts ``OpenAIChat`` reads, without the ``None`` fields.

    ``OpenAIChat`` reads ``chunk.dict()["choices"][0]["delta"].get("content", "")``: a v1 chunk
    dumps ``content: None`` on its last delta, which the model then rejects as text.
    """
    with stream:
        for chunk in stream:
            yield chunk.model_dump(exclude_none=True)


async def _v0_chunks_async(stream: AsyncStream[Any]) -> AsyncIterator[dict[str, Any]]:
    """The async twin of :func:`_v0_chunks`."""
    async with stream:
        async for chunk in stream:
            yield chunk.model_dump(exclude_none=True)


_warned: list[bool] = []


def _warn_if_not_instrumented() -> None:
    """The retry loop is the instrumentor's; without it these still work, as the SDK retries."""
    if _warned or Patch.installed():
        return
    _warned.append(True)
    logger.warning(
        "otel-openai-retry: the OpenAI SDK is not instrumented, so LangChain completion calls "
        "are retried by the SDK itself and on_retry does not fire; import otel_openai_retry.auto "
        "or call OpenAIRetryInstrumentor().instrument() first (logged once)"
    )
