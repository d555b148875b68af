"""Azure OpenAI clients that talk to the fake server.

The fake server serves Azure's ``/openai/deployments/{name}/chat/completions?api-version=...``
itself, so the real ``AzureOpenAI`` / ``AsyncAzureOpenAI`` clients run unchanged, pointed at
:attr:`FakeOpenAIServer.url`.
"""

from __future__ import annotations

import openai

from otel_openai_retry.testing import FakeOpenAIServer

from ..helpers import API_KEY

__all__ = ["DEPLOYMENT", "azure_clients"]

DEPLOYMENT = "prod-gpt"


def azure_clients(
    server: FakeOpenAIServer, api_key: str = API_KEY
) -> tuple[openai.AzureOpenAI, openai.AsyncAzureOpenAI]:
    return (
        openai.AzureOpenAI(
            api_key=api_key,
            api_version="2024-10-21",
            azure_endpoint=server.url,
            azure_deployment=DEPLOYMENT,
        ),
        openai.AsyncAzureOpenAI(
            api_key=api_key,
            api_version="2024-10-21",
            azure_endpoint=server.url,
            azure_deployment=DEPLOYMENT,
        ),
    )
