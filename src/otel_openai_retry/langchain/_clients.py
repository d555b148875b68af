"""The OpenAI SDK resource that a LangChain model's completion call goes to.

LangChain models built on openai>=1 carry SDK resources in ``client`` / ``async_client``, and
those are used as they are (their ``max_retries`` came from ``llm.max_retries``). The exception is
``langchain_community``'s ``OpenAIChat``: its validator still stores the removed v0
``openai.ChatCompletion`` in ``client`` and leaves ``async_client`` as ``None``. For it, an SDK
client is built from the model's own settings, once per model object, never stored on the model.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, NamedTuple

import openai
from openai._resource import AsyncAPIResource, SyncAPIResource

__all__ = ["Resource", "async_resource", "sync_resource"]


class Resource(NamedTuple):
    """Where ``create(**kwargs)`` goes, and whether the client was built here for a v0-era model."""

    target: Any
    built: bool


_built: dict[tuple[int, bool], openai.OpenAI | openai.AsyncOpenAI] = {}
"""Clients built for models that have none, by ``(id(model), is_async)``; dropped with the model."""


def async_resource(llm: Any, kwargs: dict[str, Any]) -> Resource:
    """``llm.async_client`` when it is an SDK resource, else one built for ``kwargs``."""
    resource = getattr(llm, "async_client", None)
    if isinstance(resource, AsyncAPIResource):
        return Resource(resource, built=False)
    return Resource(_resource_for(_client(llm, is_async=True), kwargs), built=True)


def sync_resource(llm: Any, kwargs: dict[str, Any]) -> Resource:
    """``llm.client`` when it is an SDK resource, else one built for ``kwargs``."""
    resource = getattr(llm, "client", None)
    if isinstance(resource, SyncAPIResource):
        return Resource(resource, built=False)
    return Resource(_resource_for(_client(llm, is_async=False), kwargs), built=True)


def _resource_for(client: openai.OpenAI | openai.AsyncOpenAI, kwargs: dict[str, Any]) -> Any:
    """Chat Completions when the call has ``messages`` (``OpenAIChat``), else Completions."""
    return client.chat.completions if "messages" in kwargs else client.completions


def _client(llm: Any, *, is_async: bool) -> openai.OpenAI | openai.AsyncOpenAI:
    key = (id(llm), is_async)
    client = _built.get(key)
    if client is None:
        client = _build(llm, is_async=is_async)
        try:
            weakref.finalize(llm, _built.pop, key, None)
        except TypeError:  # not weak-referenceable: build per call rather than leak
            return client
        _built[key] = client
    return client


def _build(llm: Any, *, is_async: bool) -> openai.OpenAI | openai.AsyncOpenAI:
    """An SDK client from the settings ``OpenAIChat`` has, falling back as its validator does.

    ``OpenAIChat`` resolves its key, base URL and organization from the environment into the
    ``openai`` module's globals rather than into its own fields, so those are read too.
    """
    settings: dict[str, Any] = {
        "api_key": _secret(getattr(llm, "openai_api_key", None)) or openai.api_key,
        "organization": getattr(llm, "openai_organization", None) or openai.organization or None,
        "base_url": getattr(llm, "openai_api_base", None) or os.environ.get("OPENAI_API_BASE"),
    }
    max_retries = getattr(llm, "max_retries", None)
    if isinstance(max_retries, int):
        settings["max_retries"] = max_retries
    timeout = getattr(llm, "request_timeout", None)
    if timeout is not None:
        settings["timeout"] = timeout
    proxy = getattr(llm, "openai_proxy", None)
    if is_async:
        if proxy:
            settings["http_client"] = openai.DefaultAsyncHttpxClient(proxy=proxy)
        return openai.AsyncOpenAI(**settings)
    if proxy:
        settings["http_client"] = openai.DefaultHttpxClient(proxy=proxy)
    return openai.OpenAI(**settings)


def _secret(value: object) -> str | None:
    """A key given as a string or as pydantic's ``SecretStr``."""
    if value is None:
        return None
    reveal = getattr(value, "get_secret_value", None)
    return str(reveal() if callable(reveal) else value)
