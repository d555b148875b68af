"""What a 429's body says was hit: no credit left (never retried), tokens or requests (each paced
as what it is), read from whatever body the SDK hands over; end to end with the real SDK."""

from __future__ import annotations

import dataclasses

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry import Outcome, RetryPolicy
from otel_openai_retry._decisions import classify, rate_limit_kind
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import FAST, MESSAGES, Instrument, Sdk, attrs, calls, one_call, sync_client
from .helpers import sdk_httpx as httpx2

QUOTA_BODY = {
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "type": "insufficient_quota",
    "param": None,
    "code": "insufficient_quota",
}


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (QUOTA_BODY, "insufficient_quota"),
        ({"error": QUOTA_BODY}, "insufficient_quota"),
        ({"type": "requests", "code": "insufficient_quota"}, "insufficient_quota"),
        ({"type": "insufficient_quota", "code": None}, "insufficient_quota"),
        ({"message": "...", "type": "tokens", "code": "rate_limit_exceeded"}, "tokens"),
        ({"error": {"type": "tokens_usage_based", "code": "rate_limit_exceeded"}}, "tokens"),
        ({"type": "requests", "code": "rate_limit_exceeded"}, "requests"),
        ({"type": None, "code": "rate_limit_exceeded"}, None),
        ({"error": "a string"}, None),
        ({"type": 5, "code": ["insufficient_quota"]}, None),
        ({}, None),
        (None, None),
        ("insufficient_quota", None),
        (["insufficient_quota"], None),
    ],
)
def test_the_body_says_what_was_hit(body: object, kind: str | None) -> None:
    assert rate_limit_kind(body) == kind


def rate_limit_error(body: object, headers: dict[str, str] | None = None) -> openai.RateLimitError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(429, headers=headers or {}, request=request)
    return openai.RateLimitError("failed", response=response, body=body)


def test_no_credit_left_is_never_retried_whatever_the_headers_say() -> None:
    headers = {"x-should-retry": "true", "retry-after-ms": "10"}
    verdict = classify(rate_limit_error(QUOTA_BODY, headers), RetryPolicy())
    assert not verdict.retryable
    assert verdict.give_up_as is Outcome.QUOTA_EXHAUSTED
    tokens = classify(rate_limit_error({"type": "tokens"}), RetryPolicy())
    assert tokens.retryable and tokens.limit == "tokens"


QUOTA = dataclasses.replace(Fault.insufficient_quota(), headers=(("retry-after-ms", "5000"),))
"""Out of credit, with a hint that would close the pacing gate for 5 s if it were heeded."""


async def test_quota_exhausted_fails_at_once_with_the_sdks_error(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    instrument(policy=FAST)
    server.script(QUOTA)
    client = sdk.client(server)
    with pytest.raises(openai.RateLimitError) as raised:
        await sdk(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert raised.value.code == "insufficient_quota"
    assert server.request_count == 1
    call = one_call(exporter.get_finished_spans())
    assert call.attr("openai_retry.outcome") == "quota_exhausted"
    assert call.attr("openai_retry.attempts") == 1
    assert call.attr("error.type") == "openai.RateLimitError"
    assert "openai_retry.sleep" not in attrs(call.attempts[0])


async def test_quota_exhausted_teaches_the_pacer_nothing(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """Its hint closes no gate: the next call to the same endpoint goes at once."""
    instrument(policy=FAST)
    server.script(QUOTA)
    client = sdk.client(server)

    def chat() -> object:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    with pytest.raises(openai.RateLimitError):
        await sdk(chat)
    await sdk(chat)
    _, second = calls(exporter.get_finished_spans())
    assert second.attr("openai_retry.outcome") == "success"
    assert not any("openai_retry.throttle" in attrs(a) for a in second.attempts)
    assert not second.attr("openai_retry.total_throttle")


def test_the_bare_sdk_retries_it_in_vain(server: FakeOpenAIServer) -> None:
    """What the library spares the caller: the SDK's own loop retries a quota error."""
    server.script(*[Fault.insufficient_quota()] * 3)
    client = sync_client(server, max_retries=2)
    with pytest.raises(openai.RateLimitError):
        client.with_options(timeout=5).chat.completions.create(model="m", messages=MESSAGES)
    assert server.request_count == 3


def test_the_fake_server_sends_openais_quota_body(server: FakeOpenAIServer) -> None:
    server.script(Fault.insufficient_quota(), Fault.status(429, error_type="tokens"))
    client = sync_client(server, max_retries=0)
    for expected in ("insufficient_quota", "tokens"):
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="m", messages=MESSAGES)
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["type"] == expected
    assert raised.value.code == "rate_limit_exceeded"
