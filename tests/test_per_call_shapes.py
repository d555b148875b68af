"""What a call reuses from the calls before it must never carry anything of theirs: a request's
shape (its span name and fixed attributes) is worked out once, an attempt's options are copied
without pydantic's generic path, and both must give exactly what the uncached way gives."""

from __future__ import annotations

from typing import Any

import pytest
from openai._models import FinalRequestOptions
from openai._types import NOT_GIVEN

from otel_openai_retry._attempt_options import options_with
from otel_openai_retry._attributes import describe_request


def _options(**fields: Any) -> FinalRequestOptions:
    """Options as the SDK's ``post`` makes them."""
    return FinalRequestOptions.construct(method="post", url="/chat/completions", **fields)


@pytest.mark.parametrize(
    ("options", "update"),
    [
        (_options(json_data={"model": "m"}), {"max_retries": 0}),
        (
            _options(json_data={"model": "m"}, headers={"X-Custom": "1"}, timeout=3.0),
            {"max_retries": 0, "headers": {"X-Custom": "1", "x-stainless-retry-count": "1"}},
        ),
        (
            _options(json_data={"model": "m"}, headers=NOT_GIVEN, idempotency_key="key-1"),
            {"max_retries": 0, "timeout": 0.5},
        ),
        (_options(files=[("file", b"data")], extra_json={"a": 1}), {"max_retries": 0}),
    ],
)
def test_an_attempts_options_are_what_pydantic_copies(
    options: FinalRequestOptions, update: dict[str, Any]
) -> None:
    before = dict(options.__dict__)
    expected = options.model_copy(update=update)
    copied = options_with(options, update)
    assert type(copied) is type(expected)
    assert list(copied.__dict__.items()) == list(expected.__dict__.items())
    assert copied.model_fields_set == expected.model_fields_set
    assert copied.__pydantic_extra__ == expected.__pydantic_extra__
    assert copied.__pydantic_private__ == expected.__pydantic_private__
    assert copied.__dict__ is not options.__dict__
    assert copied.model_fields_set is not options.model_fields_set
    assert options.__dict__ == before  # the caller's options are left as they were


def _describe(body: object, stream: bool = False) -> Any:
    return describe_request(
        method="post",
        url="/chat/completions",
        json_data=body,
        provider="openai",
        host="api.example.com",
        port=None,
        scheme="https",
        stream=stream,
    )


def test_calls_of_one_shape_get_only_their_own_parameters() -> None:
    first = _describe({"model": "gpt-x", "max_tokens": 16, "temperature": 0.5})
    first.attributes["an.observer.attribute"] = "first call only"  # as observers add theirs
    second = _describe({"model": "gpt-x", "top_p": 0.9, "stop": "END"})
    assert second.span_name == first.span_name == "chat gpt-x"
    assert list(second.attributes.items()) == [
        ("server.address", "api.example.com"),
        ("server.port", 443),
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-x"),
        ("gen_ai.request.top_p", 0.9),
        ("gen_ai.request.stop_sequences", ("END",)),
        ("openai.api.type", "chat_completions"),
    ]
    assert second.metric_attributes == {
        "server.address": "api.example.com",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-x",
    }


def test_the_model_and_stream_flag_are_part_of_a_shape() -> None:
    plain = _describe({"model": "gpt-a"})
    other_model = _describe({"model": "gpt-b"})
    streamed = _describe({"model": "gpt-a"}, stream=True)
    assert (plain.span_name, other_model.span_name) == ("chat gpt-a", "chat gpt-b")
    assert "gen_ai.request.stream" not in plain.attributes
    assert list(streamed.attributes)[-1] == "gen_ai.request.stream"
    assert other_model.metric_attributes["gen_ai.request.model"] == "gpt-b"


@pytest.mark.parametrize("body", [{"model": ["not", "a", "string"]}, None, {"model": 3}])
def test_a_body_without_a_string_model_is_described_as_before(body: object) -> None:
    info = _describe(body)
    assert info.span_name == "chat"
    assert "gen_ai.request.model" not in info.attributes
