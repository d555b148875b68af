"""Where a client sends its requests, as the spans and the pacing key need it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openai import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI, OpenAI
from openai._base_client import BaseClient

__all__ = ["Server", "server_of"]


@dataclass(frozen=True, slots=True)
class Server:
    """What the spans need from a client's base URL, parsed once per URL object."""

    url: object
    """The ``httpx.URL`` this was read from, kept so that its ``id`` stays unique."""
    base_url: str
    host: str | None
    port: int | None
    scheme: str | None
    provider: str


_servers: dict[tuple[int, type], Server] = {}
_MAX_SERVERS = 256

_plain_base_url: dict[type, bool] = {}
"""Per client class: whether its ``base_url`` is the SDK's own, a plain read of
``_configured_base_url`` (newer SDKs), so that the instance's attribute can be read directly."""


def _reads_configured_base_url(client: BaseClient[Any, Any]) -> bool:
    cls = type(client)
    known = _plain_base_url.get(cls)
    if known is None:
        own = {
            vars(owner).get("base_url")
            for owner in (OpenAI, AsyncOpenAI, AzureOpenAI, AsyncAzureOpenAI, BaseClient)
        }
        own.discard(None)
        base_url = getattr(cls, "base_url", None)
        private = getattr(cls, "_base_url", None)
        known = _plain_base_url[cls] = (
            isinstance(base_url, property)
            and base_url in own
            and isinstance(private, property)
            and private is vars(BaseClient).get("_base_url")
            and client.__dict__.get("_configured_base_url", _plain_base_url) is client.base_url
        )
    return known


def server_of(client: BaseClient[Any, Any]) -> Server:
    """Reading an ``httpx.URL``'s parts costs microseconds per property; clients rarely change
    their base URL, so cache by the URL object's identity (checked, as ids are reused)."""
    # The attribute behind the ``base_url`` property, which the SDK's clients override with a
    # function that imports a module at every access.
    plain = _plain_base_url.get(type(client))  # (``_reads_configured_base_url``'s cache)
    if plain is None:
        plain = _reads_configured_base_url(client)
    url = (
        client.__dict__.get("_configured_base_url") if plain else getattr(client, "_base_url", None)
    )
    if url is None:
        url = client.base_url
    key = (id(url), type(client))
    server = _servers.get(key)
    if server is not None and server.url is url:
        return server
    if len(_servers) >= _MAX_SERVERS:
        _servers.clear()
    server = _servers[key] = Server(
        url,
        str(url),
        url.host,
        url.port,
        url.scheme,
        "azure.ai.openai" if isinstance(client, (AzureOpenAI, AsyncAzureOpenAI)) else "openai",
    )
    return server
