"""What of an exception the span status description may say: ``_error_recording`` alone.

The end-to-end checks (every exported span, metric and log record of real failing calls) are in
``tests/reliability/test_secrets.py``; here, the rule for each field of an error body, on the
SDK's own exception built from a real ``httpx2`` response.
"""

from __future__ import annotations

import openai
import pytest

from otel_openai_retry._error_recording import error_description

from .helpers import sdk_httpx as httpx2

KEY = "0123456789abcdef0123456789abcdef"
"""An Azure-style key: a plain identifier, so only the header check keeps it out."""


def status_error(status: int, error: object) -> openai.APIStatusError:
    request = httpx2.Request(
        "POST", "https://example.test/v1/chat/completions", headers={"api-key": KEY}
    )
    response = httpx2.Response(status, json={"error": error}, request=request)
    client = openai.OpenAI(api_key="unused", base_url="https://example.test/v1")
    return client._make_status_error_from_response(response)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            {
                "message": "Context too long: 'my prompt'",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            },
            "openai.BadRequestError: HTTP 400, type invalid_request_error, "
            "code context_length_exceeded",
        ),
        (
            {"message": "x", "type": "invalid request: my prompt", "code": None},
            "openai.BadRequestError: HTTP 400",
        ),
        (
            {"message": "x", "type": "invalid_request_error", "code": KEY},
            "openai.BadRequestError: HTTP 400, type invalid_request_error",
        ),
        (
            {"message": "x", "type": "sk-proj-abc", "code": "x" * 65},
            "openai.BadRequestError: HTTP 400",
        ),
        ({"message": "x", "type": 7, "code": 400}, "openai.BadRequestError: HTTP 400, code 400"),
        ("a plain string body quoting my prompt", "openai.BadRequestError: HTTP 400"),
    ],
    ids=["identifiers", "a-sentence", "a-header-value", "key-like-and-long", "numbers", "string"],
)
def test_only_identifiers_from_the_body_and_never_its_message(error: object, expected: str) -> None:
    exc = status_error(400, error)
    if not isinstance(exc.code, str):  # as the SDK parsed it: older ones keep a number a number
        expected = expected.removesuffix(", code 400")
    # What the call sent: newer SDKs strip ``api-key`` from the request an error carries.
    assert error_description(exc, "openai.BadRequestError", lambda: [KEY]) == expected


def code_echoed(request: httpx2.Request, code: str) -> openai.APIStatusError:
    """The SDK's error for a 400 to ``request`` whose body's ``code`` is ``code``."""
    response = httpx2.Response(
        400, json={"error": {"type": "invalid_request_error", "code": code}}, request=request
    )
    client = openai.OpenAI(api_key="unused", base_url="https://example.test/v1")
    return client._make_status_error_from_response(response)


def test_a_header_value_the_error_still_carries_is_checked_too() -> None:
    request = httpx2.Request(
        "POST", "https://example.test/v1/chat/completions", headers={"x-gateway-key": KEY}
    )
    exc = code_echoed(request, KEY)
    assert error_description(exc, "openai.BadRequestError") == (
        "openai.BadRequestError: HTTP 400, type invalid_request_error"
    )


def test_sent_headers_that_cannot_be_read_say_nothing_of_the_body() -> None:
    def unreadable() -> list[str]:
        raise RuntimeError("no headers")

    exc = status_error(400, {"type": "invalid_request_error", "code": "not_found"})
    assert error_description(exc, "openai.BadRequestError", unreadable) == (
        "openai.BadRequestError: HTTP 400"
    )


def test_other_exceptions_say_their_type_only() -> None:
    request = httpx2.Request("POST", "https://example.test/v1/chat/completions")
    cause = ValueError(f"Illegal header value b'{KEY}\\n'")
    exc = openai.APIConnectionError(request=request)
    exc.__cause__ = cause
    assert error_description(exc, "openai.APIConnectionError") == "openai.APIConnectionError"
    assert error_description(cause, "ValueError") == "ValueError"
    assert error_description(None, "_OTHER") == "_OTHER"


@pytest.mark.parametrize(
    ("url", "body", "echoed"),
    [
        (
            "https://example.test/v1/chat/completions?key=AIzaQueryKey0123",
            b"{}",
            "AIzaQueryKey0123",
        ),
        ("https://user:proxyPassw0rdXYZ@example.test/v1/chat", b"{}", "proxyPassw0rdXYZ"),
        (
            "https://example.test/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "for PatientJohnDoe_SSN_0780"}]}',
            "PatientJohnDoe_SSN_0780",
        ),
    ],
    ids=["a-query-key", "a-url-password", "a-word-of-the-prompt"],
)
def test_a_code_that_echoes_the_url_or_the_body_is_not_said(
    url: str, body: bytes, echoed: str
) -> None:
    """Not only header values: a key in the query string, a password in the base URL and a word
    of the prompt (content capture off, or on: an error is not content) are what the request
    carried too."""
    exc = code_echoed(httpx2.Request("POST", url, content=body), echoed)
    assert error_description(exc, "openai.BadRequestError") == (
        "openai.BadRequestError: HTTP 400, type invalid_request_error"
    )
