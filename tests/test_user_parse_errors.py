"""A strict response validation that fails is the caller's error, not an internal one of ours.

``with_raw_response.parse(response_format=Model)`` returns the raw response; its ``parse()``
validates the answer against the caller's model and may raise (pydantic's ``ValidationError``,
``LengthFinishReasonError``). We read that response too, for usage and ids: its failure must not be
logged or raised by us (the test suite re-raises our internal errors), and the caller still gets it
from their own ``parse()``. The fake server is scripted to reply text that is no JSON, so it fails
any model; a small stdlib server in this file answers with ``finish_reason: length``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import openai
import pydantic
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_openai_retry import _internal
from otel_openai_retry._internal import set_raise_internal_errors
from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import CannedServer, Instrument, Sdk, json_answer, one_call, sync_client

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Answer as JSON"}
]


class Answer(pydantic.BaseModel):
    verdict: str


@pytest.fixture(params=["raised", "logged"])
def internal_errors(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Both ways we treat our own errors: raised (tests) and logged once (production)."""
    monkeypatch.setattr(_internal, "_already_logged", set())
    set_raise_internal_errors(request.param == "raised")
    yield str(request.param)
    set_raise_internal_errors(True)


def ours(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("otel_openai_retry")]


async def test_a_raw_parse_that_fails_validation_is_not_our_error(
    sdk: Sdk,
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    internal_errors: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    instrument()
    caplog.set_level(logging.DEBUG, logger="otel_openai_retry")
    client = sdk.client(server)
    server.script(Fault.replying("Echo: Answer as JSON"))
    raw = await sdk(
        lambda: client.chat.completions.with_raw_response.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=Answer
        )
    )
    with pytest.raises(pydantic.ValidationError):
        raw.parse()
    with pytest.raises(pydantic.ValidationError):  # nothing was cached: again, the same
        raw.parse()
    assert ours(caplog) == []

    body = raw.http_response.json()
    call = one_call(exporter.get_finished_spans())
    assert call.span.status.status_code is StatusCode.UNSET
    assert call.attr("openai_retry.outcome") == "success"
    assert call.attr("gen_ai.response.id") == body["id"]
    assert call.attr("gen_ai.usage.input_tokens") == body["usage"]["prompt_tokens"]
    assert call.attr("gen_ai.usage.output_tokens") == body["usage"]["completion_tokens"]


# -- finish_reason "length": LengthFinishReasonError --------------------------------------------


CUT_BY_LENGTH = {
    "id": "chatcmpl-cut",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": '{"verdict": "ye'},
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
}


@pytest.fixture
def length_url(canned: CannedServer) -> str:
    canned.answer = lambda request: json_answer(CUT_BY_LENGTH)
    return canned.base_url


def test_a_raw_parse_cut_by_the_length_limit_is_not_our_error(
    length_url: str,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    internal_errors: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    instrument()
    caplog.set_level(logging.DEBUG, logger="otel_openai_retry")
    client = sync_client(length_url)
    raw = client.chat.completions.with_raw_response.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Answer
    )
    with pytest.raises(openai.LengthFinishReasonError):
        raw.parse()
    assert ours(caplog) == []
    call = one_call(exporter.get_finished_spans())
    assert call.span.status.status_code is StatusCode.UNSET
    assert call.attr("gen_ai.response.finish_reasons") == ("length",)
    assert call.attr("gen_ai.usage.input_tokens") == 5


def test_parse_cut_by_the_length_limit_fails_as_the_sdk_does_and_says_only_its_type(
    length_url: str,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the raw response the SDK raises inside the call: the caller gets the SDK's own
    exception, the span its type only, not the exception's message."""
    client = sync_client(length_url, max_retries=0)
    with pytest.raises(openai.LengthFinishReasonError) as bare:
        client.chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=Answer
        )
    assert "length limit" in str(bare.value)
    instrument()
    caplog.set_level(logging.DEBUG, logger="otel_openai_retry")
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=Answer
        )
    assert ours(caplog) == []
    call = one_call(exporter.get_finished_spans())
    assert call.span.status.status_code is StatusCode.ERROR
    assert call.attr("error.type") == "openai.LengthFinishReasonError"
    for span in [call.span, *call.attempts]:
        assert span.status.description in (None, "openai.LengthFinishReasonError")
        assert not span.events
        assert "length limit" not in span.to_json()
