"""What the differential suite needs from the fake server: exact bodies, uploads, any error text.

Driven by the bare SDK (``max_retries=0``: one call, one request), as in ``test_fake_server.py``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import openai
import pytest

from otel_openai_retry.testing import FakeOpenAIServer, Fault
from otel_openai_retry.testing._form import parse_form

from .calls import ReadOnce

FILE = b"line one\r\nline two\n\x00\xff--not-a-boundary\r\n"


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as c:
        yield c


@pytest.mark.parametrize(
    "content", [FILE, io.BufferedReader(ReadOnce(FILE))], ids=["bytes", "stream"]
)
def test_an_upload_is_recorded_byte_for_byte(
    client: openai.OpenAI, server: FakeOpenAIServer, content: bytes | io.BufferedReader
) -> None:
    uploaded = client.files.create(file=("data.jsonl", content), purpose="batch")

    assert (uploaded.filename, uploaded.bytes, uploaded.purpose) == (
        "data.jsonl",
        len(FILE),
        "batch",
    )
    (record,) = server.requests
    assert (record.method, record.path, record.body) == ("POST", "/v1/files", None)
    assert set(record.form) == {"file", "purpose"}
    assert record.form["file"].data == FILE
    assert record.form["file"].filename == "data.jsonl"
    assert record.form["purpose"].text == "batch"
    assert FILE in record.raw_body


def test_an_upload_without_a_purpose_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="'purpose'"):
        client.files.create(file=("x.jsonl", b"x"), purpose="")  # type: ignore[arg-type]


def test_a_json_body_is_recorded_raw_too(client: openai.OpenAI, server: FakeOpenAIServer) -> None:
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hé"}])

    (record,) = server.requests
    assert record.body == {"model": "m", "messages": [{"role": "user", "content": "hé"}]}
    assert record.form == {}
    assert b'"model"' in record.raw_body


def test_an_error_can_say_anything(client: openai.OpenAI, server: FakeOpenAIServer) -> None:
    server.script(Fault.status(400, message="'secret prompt' is not valid"))

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])

    assert caught.value.message == "Error code: 400 - 'secret prompt' is not valid"
    assert "message" in repr(server.requests[0].fault)


def test_hostile_header_values_reach_the_client_as_written(
    client: openai.OpenAI, server: FakeOpenAIServer
) -> None:
    huge = "9" * 400
    server.script(Fault.status(429, headers={"retry-after": huge, "retry-after-ms": "nan"}))

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])

    assert caught.value.response.headers["retry-after"] == huge
    assert caught.value.response.headers["retry-after-ms"] == "nan"


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "multipart/form-data", 'multipart/form-data; boundary=""'],
)
def test_a_body_that_is_not_a_form_has_no_parts(content_type: str | None) -> None:
    assert parse_form(content_type, b"--x\r\n\r\n") == {}


def test_a_damaged_form_yields_the_parts_before_the_damage() -> None:
    raw = (
        b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
        b'--B\r\nContent-Disposition: form-data; name="b"\r\nno blank line'
    )
    parts = parse_form("multipart/form-data; boundary=B", raw)
    assert list(parts) == ["a"]
    assert parts["a"].data == b"1"
