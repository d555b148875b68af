"""``AzureOpenAI`` against the fake server: deployment paths, ``api-version``, Azure's refusals,
and a journal that records both, sync and async over real HTTP."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import Sdk

VERSION = "2024-10-21"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello azure"}]


def _azure(sdk: Sdk, server: FakeOpenAIServer, deployment: str | None = None) -> Any:
    """``AzureOpenAI`` or ``AsyncAzureOpenAI``, as the test's flavour asks."""
    kind = openai.AsyncAzureOpenAI if sdk.is_async else openai.AzureOpenAI
    return kind(
        azure_endpoint=server.url,
        azure_deployment=deployment,
        api_version=VERSION,
        api_key="azure-key",
        max_retries=0,
    )


async def test_a_deployment_client_reaches_chat_and_is_journaled(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    client = _azure(sdk, server, "my-gpt")
    completion = await sdk(lambda: client.chat.completions.create(model="gpt-4o", messages=USER))
    assert completion.choices[0].message.content == "Echo: hello azure"
    (record,) = server.requests
    assert record.path == "/openai/deployments/my-gpt/chat/completions"
    assert (record.deployment, record.api_version) == ("my-gpt", VERSION)
    assert dict(record.query) == {"api-version": VERSION}
    assert record.headers["api-key"] == "azure-key"


async def test_without_a_deployment_the_model_names_it(server: FakeOpenAIServer, sdk: Sdk) -> None:
    client = _azure(sdk, server)
    embedded = await sdk(lambda: client.embeddings.create(model="emb-deploy", input="x"))
    completed = await sdk(lambda: client.completions.create(model="instruct", prompt="say hi"))
    streamed = await sdk.drain(
        lambda: client.chat.completions.create(model="chat", messages=USER, stream=True)
    )
    assert embedded.data and completed.choices and streamed
    assert [(r.path, r.deployment) for r in server.requests] == [
        ("/openai/deployments/emb-deploy/embeddings", "emb-deploy"),
        ("/openai/deployments/instruct/completions", "instruct"),
        ("/openai/deployments/chat/chat/completions", "chat"),
    ]


async def test_endpoints_outside_deployments_take_the_api_version_too(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    client = _azure(sdk, server, "my-gpt")
    response = await sdk(lambda: client.responses.create(model="gpt-4o", input="hi there"))
    assert response.output_text == "Echo: hi there"
    (record,) = server.requests
    assert (record.path, record.deployment, record.api_version) == (
        "/openai/responses",
        None,
        VERSION,
    )


async def test_a_per_path_script_and_retries_hit_azure_paths(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    server.script(Fault.rate_limit(retry_after_ms=1), path="/chat/completions")
    client = _azure(sdk, server, "d")
    retrying = client.with_options(max_retries=1)
    await sdk(lambda: retrying.chat.completions.create(model="m", messages=USER))
    assert [r.fault.status_code for r in server.requests] == [429, 200]
    assert {r.deployment for r in server.requests} == {"d"}


def test_a_missing_api_version_is_azures_404_and_a_bad_one_its_400(
    server: FakeOpenAIServer,
) -> None:
    no_version = openai.OpenAI(
        api_key="k", base_url=f"{server.url}/openai/deployments/d", max_retries=0
    )
    with pytest.raises(openai.NotFoundError) as missing:
        no_version.chat.completions.create(model="m", messages=USER)
    assert missing.value.body == {"code": "404", "message": "Resource not found"}
    bad = openai.AzureOpenAI(
        azure_endpoint=server.url, api_version="v1", api_key="k", max_retries=0
    )
    with pytest.raises(openai.BadRequestError, match="API version not supported"):
        bad.embeddings.create(model="e", input="x")
    assert [(r.api_version, r.fault.status_code) for r in server.requests] == [
        (None, 200),
        ("v1", 200),
    ]


def test_the_v1_paths_need_no_api_version(server: FakeOpenAIServer) -> None:
    client = openai.OpenAI(api_key="k", base_url=f"{server.url}/openai/v1", max_retries=0)
    completion = client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "Echo: hello azure"
    assert server.requests[0].path == "/openai/v1/chat/completions"
