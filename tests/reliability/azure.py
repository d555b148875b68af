"""Azure OpenAI clients that talk to the fake server.

Azure routes ``/openai/deployments/{name}/chat/completions?api-version=...`` and authenticates
with an ``api-key`` header (or an Azure AD token as ``Authorization: Bearer``); the fake server
answers ``/v1/chat/completions``. A transport maps the one path onto the other, leaving query and
headers untouched, so the real ``AzureOpenAI`` / ``AsyncAzureOpenAI`` clients run unchanged.
"""

from __future__ import annotations

import re

import openai

from otel_openai_retry.testing import FakeOpenAIServer

from ..helpers import API_KEY
from ..helpers import sdk_httpx as httpx2

__all__ = ["AsyncAzureRouting", "AzureRouting", "azure_clients"]

_DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/[^/]+")


def _to_fake_path(request: httpx2.Request) -> None:
    """Azure's ``/openai/deployments/{name}/chat/completions`` is the fake server's
    ``/v1/chat/completions``: route it there, query (``api-version``) and headers untouched."""
    path = _DEPLOYMENT_PATH.sub("/v1", request.url.path)
    request.url = request.url.copy_with(path=path)


class AzureRouting(httpx2.HTTPTransport):
    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        _to_fake_path(request)
        return super().handle_request(request)


class AsyncAzureRouting(httpx2.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        _to_fake_path(request)
        return await super().handle_async_request(request)


def azure_clients(
    server: FakeOpenAIServer, api_key: str = API_KEY
) -> tuple[openai.AzureOpenAI, openai.AsyncAzureOpenAI]:
    endpoint = f"http://127.0.0.1:{server.port}"
    return (
        openai.AzureOpenAI(
            api_key=api_key,
            api_version="2024-10-21",
            azure_endpoint=endpoint,
            azure_deployment="prod-gpt",
            http_client=openai.DefaultHttpxClient(transport=AzureRouting()),
        ),
        openai.AsyncAzureOpenAI(
            api_key=api_key,
            api_version="2024-10-21",
            azure_endpoint=endpoint,
            azure_deployment="prod-gpt",
            http_client=openai.DefaultAsyncHttpxClient(transport=AsyncAzureRouting()),
        ),
    )
