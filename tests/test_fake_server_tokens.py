"""The fake server's tokens-per-minute limit, quota, OpenAI's 429 bodies and size-following usage,
as the real SDK sees them over HTTP (``max_retries=0``: every answer reaches the test).

Token counts follow OpenAI's admission estimate: prompt characters / 4 (rounded up) plus the
output the request allows times ``n``. Every test sizes its requests so that the counts it asserts
are exact, and leaves refill so slow (10 tokens a second) that a loaded machine cannot change them.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Literal

import openai
import pytest
from openai import OpenAI

from otel_openai_retry._rate_headers import parse_duration
from otel_openai_retry.testing import FakeOpenAIServer, FakeServerProcess, Fault
from otel_openai_retry.testing._limits import duration
from otel_openai_retry.testing._script import parse_script

MODEL = "gpt-4o-mini"
REACHED = re.compile(
    r"Rate limit reached for gpt-4o-mini in organization org-fake on tokens per min \(TPM\): "
    r"Limit (\d+), Used (\d+), Requested (\d+)\. Please try again in (\S+)\. "
    r"Visit https://platform\.openai\.com/account/rate-limits to learn more\."
)


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[OpenAI]:
    with OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as sync_client:
        yield sync_client


def _chat(client: OpenAI, prompt_chars: int, max_tokens: int | None = None, n: int = 1) -> Any:
    """A raw chat call charged ``ceil(prompt_chars / 4) + max_tokens * n`` tokens."""
    extra: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "x" * prompt_chars}], n=n, **extra
    )


def _refused(client: OpenAI, prompt_chars: int, max_tokens: int) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as caught:
        _chat(client, prompt_chars, max_tokens)
    return caught.value


# -- the tokens limit ------------------------------------------------------------------------


def test_every_answer_carries_the_token_headers(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.set_token_limit(60_000)
    server.set_rate_limit(1000, burst=50)

    raw = _chat(client, prompt_chars=40, max_tokens=10, n=2)  # 10 + 10 x 2 = 30 tokens

    assert raw.headers["x-ratelimit-limit-tokens"] == "60000"
    assert raw.headers["x-ratelimit-remaining-tokens"] == "59970"
    # The 30 tokens used drain at 1000 tokens/s: (limit - remaining) / reset is the rate.
    assert raw.headers["x-ratelimit-reset-tokens"] == "30ms"
    assert raw.headers["x-ratelimit-limit-requests"] == "50"
    assert raw.headers["x-ratelimit-remaining-requests"] == "49"


def test_a_burst_is_admitted_up_to_the_bucket_then_refused(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    # 600 tokens/min is 10 a second; the bucket holds 100 s of them: 1000 tokens.
    server.set_token_limit(600, bucket_seconds=100)

    remaining = [int(_chat(client, 4, 249).headers["x-ratelimit-remaining-tokens"]) for _ in "abcd"]
    refused = _refused(client, 4, 249)

    # 250 tokens each from a full bucket; between two requests it refills a little (10 tokens
    # would take a second), never the 250 that would admit a fifth.
    assert remaining[0] == 750
    assert all(240 <= before - after <= 250 for before, after in itertools.pairwise(remaining))
    assert server.status_counts() == {"200": 4, "429": 1}
    assert refused.code == "rate_limit_exceeded"
    assert refused.type == "tokens"
    assert isinstance(refused.body, dict)
    assert refused.body["param"] is None
    found = REACHED.fullmatch(refused.body["message"])
    assert found is not None, refused.body["message"]
    limit, used, requested = (int(found[i]) for i in (1, 2, 3))
    headers = refused.response.headers
    assert (limit, requested) == (600, 250)
    assert used == limit - int(headers["x-ratelimit-remaining-tokens"])
    # What must drain before it fits (used + requested - limit, at 10 tokens/s) is the wait the
    # message and the header both give.
    wait_ms = int(headers["retry-after-ms"])
    assert (used + requested - limit - 1) * 100 <= wait_ms <= (used + requested - limit) * 100
    assert parse_duration(found[4]) == pytest.approx(wait_ms / 1000)


def test_the_bucket_refills_at_the_limits_rate(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.set_token_limit(600, bucket_seconds=2)  # 20 tokens, refilled at 10 a second
    _chat(client, 4, 19)
    refused = _refused(client, 4, 9)  # 10 tokens: a second away

    wait_ms = int(refused.response.headers["retry-after-ms"])
    assert 0 < wait_ms <= 1000
    time.sleep(wait_ms / 1000)
    raw = _chat(client, 4, 9)

    assert raw.http_response.status_code == 200
    assert server.status_counts() == {"200": 2, "429": 1}


def test_a_request_must_fit_both_limits_and_a_refused_one_takes_neither(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    server.set_rate_limit(0.001, burst=5)
    server.set_token_limit(600, bucket_seconds=100)  # 1000 tokens
    for _ in range(4):
        _chat(client, 4, 248)  # 249 tokens: 4 are left

    by_tokens = _refused(client, 4, 248)
    cheap = _chat(client, 4)  # 1 token, and the last request the requests bucket holds
    by_requests = _refused(client, 4, 0)

    assert by_tokens.type == "tokens"
    assert by_tokens.response.headers["x-ratelimit-remaining-requests"] == "1"
    assert cheap.headers["x-ratelimit-remaining-requests"] == "0"
    assert by_requests.type == "requests"
    assert isinstance(by_requests.body, dict)
    assert by_requests.body["message"].startswith(
        "Rate limit reached for gpt-4o-mini in organization org-fake on requests per min (RPM): "
        "Limit 1, Used 1, Requested 1."
    )


def test_a_request_larger_than_the_bucket_fits_a_full_one(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    server.set_token_limit(600, bucket_seconds=10)  # a bucket of 100 tokens

    raw = _chat(client, 4, 299)  # 300 tokens: within the minute's 600, not within the bucket
    refused = _refused(client, 4, 1)

    assert raw.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.type == "tokens"


def test_a_request_larger_than_the_limit_is_too_large(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    server.set_token_limit(600)

    refused = _refused(client, 4, 700)

    assert refused.type == "tokens"
    assert isinstance(refused.body, dict)
    assert refused.body["message"].startswith(
        "Request too large for gpt-4o-mini in organization org-fake on tokens per min (TPM): "
        "Limit 600, Requested 701. The input or output tokens must be reduced"
    )
    assert "retry-after-ms" not in refused.response.headers  # waiting never makes it fit


def test_without_hints_the_token_limit_says_nothing_of_when(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    server.set_token_limit(600, bucket_seconds=2, hints=False)

    raw = _chat(client, 4, 19)
    refused = _refused(client, 4, 19)

    assert not [name for name in raw.headers if name.startswith("x-ratelimit-")]
    assert not [name for name in refused.response.headers if "ratelimit" in name]
    assert "retry-after-ms" not in refused.response.headers
    assert isinstance(refused.body, dict)
    assert refused.type == "tokens"
    assert "try again" not in refused.body["message"]


@pytest.mark.parametrize(
    ("hints", "hint_headers"),
    [
        ("ms", {"retry-after-ms"}),
        ("seconds", {"retry-after"}),
        ("headers", set()),
        ("none", set()),
    ],
)
def test_each_hint_mode_answers_as_such_a_server_does(
    hints: Literal["ms", "seconds", "headers", "none"],
    hint_headers: set[str],
    client: OpenAI,
    server: FakeOpenAIServer,
) -> None:
    server.set_token_limit(600, bucket_seconds=2, hints=hints)  # 20 tokens, 10 a second
    server.set_rate_limit(1000, burst=50, hints=hints)

    raw = _chat(client, 4, 19)
    refused = _refused(client, 4, 9)  # 10 tokens: a second away

    headers = refused.response.headers
    assert {name for name in ("retry-after-ms", "retry-after") if name in headers} == hint_headers
    if "retry-after" in hint_headers:  # whole seconds, never shorter than the wait
        assert headers["retry-after"] == "1"
    limits = {name for name in raw.headers if name.startswith("x-ratelimit-")}
    assert bool(limits) == (hints != "none")
    assert ("x-ratelimit-reset-tokens" in headers) == (hints != "none")


def test_an_unknown_hint_mode_is_refused(server: FakeOpenAIServer) -> None:
    with pytest.raises(ValueError, match="hints must be a bool or one of ms, seconds"):
        server.set_rate_limit(10, hints="minutes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "charge"),
    [
        (  # every message counts; max_completion_tokens x n
            lambda c: c.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=[
                    {"role": "system", "content": "s" * 8},
                    {"role": "user", "content": [{"type": "text", "text": "u" * 9}]},
                ],
                max_completion_tokens=5,
                n=3,
            ),
            5 + 15,  # 17 characters
        ),
        (
            lambda c: c.completions.with_raw_response.create(
                model="gpt-3.5-turbo-instruct", prompt=["p" * 8, "q" * 8], max_tokens=7
            ),
            4 + 7,
        ),
        (  # token ids count one each
            lambda c: c.embeddings.with_raw_response.create(
                model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]]
            ),
            5,
        ),
        (
            lambda c: c.responses.with_raw_response.create(
                model=MODEL, instructions="i" * 4, input="n" * 12, max_output_tokens=20
            ),
            1 + 3 + 20,
        ),
    ],
    ids=["chat", "completions", "embeddings", "responses"],
)
def test_each_request_is_charged_as_openai_estimates_it(
    client: OpenAI, server: FakeOpenAIServer, call: Any, charge: int
) -> None:
    server.set_token_limit(1_000_000)

    raw = call(client)

    assert 1_000_000 - int(raw.headers["x-ratelimit-remaining-tokens"]) == charge


# -- quota -----------------------------------------------------------------------------------


def _assert_quota(error: openai.RateLimitError) -> None:
    assert error.status_code == 429
    assert error.code == "insufficient_quota"
    assert error.type == "insufficient_quota"
    assert isinstance(error.body, dict)
    assert error.body["param"] is None
    assert error.body["message"].startswith(
        "You exceeded your current quota, please check your plan and billing details."
    )


def test_a_scripted_insufficient_quota(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.script(Fault.insufficient_quota())

    with pytest.raises(openai.RateLimitError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="x")

    _assert_quota(caught.value)
    assert client.embeddings.create(model="text-embedding-3-small", input="x").data


def test_an_exhausted_quota_refuses_everything_until_cleared(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    server.set_quota_exhausted()

    for _ in range(3):
        with pytest.raises(openai.RateLimitError) as caught:
            client.models.list()
        _assert_quota(caught.value)
    server.set_quota_exhausted(False)

    assert client.models.list().data
    assert server.status_counts() == {"429": 3, "200": 1}


# -- usage that follows the request's size ---------------------------------------------------


def test_sized_usage_is_the_estimate_of_the_prompt(
    client: OpenAI, server: FakeOpenAIServer
) -> None:
    server.set_sized_usage()

    short = _chat(client, 400, max_tokens=7, n=2).parse().usage
    long = _chat(client, 800, max_tokens=7, n=2).parse().usage
    unbounded = _chat(client, 4).parse().usage

    assert (short.prompt_tokens, short.completion_tokens, short.total_tokens) == (100, 14, 114)
    assert (long.prompt_tokens, long.completion_tokens) == (200, 14)
    assert unbounded.completion_tokens == 16  # no maximum: a small default per choice


def test_sized_usage_in_every_shape(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.set_sized_usage()
    prompt = "w" * 40  # 10 tokens

    completion = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=3
    )
    embedding = client.embeddings.create(model="text-embedding-3-small", input=[prompt, prompt])
    response = client.responses.create(model=MODEL, input=prompt, max_output_tokens=30)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with client.responses.stream(model=MODEL, input=prompt, max_output_tokens=30) as stream:
        streamed = stream.get_final_response()

    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, 3)
    assert (embedding.usage.prompt_tokens, embedding.usage.total_tokens) == (20, 20)
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 30)
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (10, 5)
    assert streamed.usage is not None
    assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == (10, 30)


def test_usage_counts_words_unless_asked(client: OpenAI, server: FakeOpenAIServer) -> None:
    server.set_sized_usage()
    server.reset()

    usage = _chat(client, 400, max_tokens=7).parse().usage

    assert (usage.prompt_tokens, usage.completion_tokens) == (1, 2)  # "x...x"; "Echo: x...x"


# -- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.0171, "18ms"),
        (0.15, "150ms"),
        (1.2, "1.2s"),
        (59.5, "59.5s"),
        (360, "6m0s"),
        (432.5, "7m12.5s"),
        (3723, "1h2m3s"),
    ],
)
def test_durations_read_as_openais(seconds: float, text: str) -> None:
    assert duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds, abs=0.001)


def test_the_script_language_has_quota_and_types() -> None:
    assert parse_script("quota, 429:type=tokens:retry-after-ms=5") == [
        Fault.insufficient_quota(),
        Fault.rate_limit(retry_after_ms=5, error_type="tokens"),
    ]
    assert repr(Fault.rate_limit(error_type="tokens")) == "Fault(429, type 'tokens')"


# -- a server in a process of its own, and its command line ----------------------------------


def _control(process: FakeServerProcess, conditions: dict[str, Any]) -> tuple[int, Any]:
    """``POST /_fake/conditions`` as a benchmark in another language would send it."""
    url = process.base_url.removesuffix("/v1") + "/_fake/conditions"
    request = urllib.request.Request(url, data=json.dumps(conditions).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_a_process_takes_the_token_conditions() -> None:
    with (
        FakeServerProcess() as process,
        OpenAI(api_key="sk-test", base_url=process.base_url, max_retries=0) as pclient,
    ):
        process.set_rate_limit(1000, burst=50, hints="seconds")
        process.set_token_limit(600, bucket_seconds=2, hints=True)
        process.set_sized_usage()
        raw = _chat(pclient, 40, max_tokens=5)
        assert raw.headers["x-ratelimit-remaining-tokens"] == "5"
        assert raw.parse().usage.prompt_tokens == 10
        assert _refused(pclient, 40, 5).type == "tokens"
        refused = process.requests[-1].fault
        assert (refused.status_code, refused.error_type) == (429, "tokens")
        assert "retry-after-ms" in dict(refused.headers)  # the tokens limit's own mode
        process.set_rate_limit(None)

        process.set_token_limit(None)
        process.set_quota_exhausted()
        with pytest.raises(openai.RateLimitError) as caught:
            pclient.models.list()
        _assert_quota(caught.value)

        process.set_quota_exhausted(False)
        process.set_sized_usage(False)
        assert _chat(pclient, 40, max_tokens=5).parse().usage.prompt_tokens == 1
        with pytest.raises(ValueError, match="tokens per minute must be an integer"):
            process.set_token_limit(0)
        status, answer = _control(process, {"quota_exhausted": "yes"})
        assert (status, answer) == (400, {"error": "ValueError: expected true or false, got 'yes'"})
        shared = {"fraction": 1.0, "seed": 3, "limit": "tokens"}  # a token quota others spend
        assert _control(process, {"random_rejections": shared})[0] == 200
        assert _refused(pclient, 40, 5).type == "tokens"
        status, answer = _control(process, {"random_rejections": {**shared, "limit": "minutes"}})
        assert status == 400 and "limit must be 'requests' or 'tokens'" in answer["error"]


def test_the_command_line_sets_the_token_conditions() -> None:
    options = ["--tpm", "600", "--tpm-bucket", "2", "--sized-usage", "--hints", "seconds"]
    with (
        FakeServerProcess(options=options) as process,
        OpenAI(api_key="sk-test", base_url=process.base_url, max_retries=0) as pclient,
    ):
        raw = _chat(pclient, 40, max_tokens=5)
        assert raw.headers["x-ratelimit-limit-tokens"] == "600"
        assert raw.headers["x-ratelimit-remaining-tokens"] == "5"
        assert raw.parse().usage.completion_tokens == 5
        refused = _refused(pclient, 40, 5)
        assert refused.type == "tokens"
        assert refused.response.headers["retry-after"] == "1"
        assert "retry-after-ms" not in refused.response.headers

    with (
        FakeServerProcess(options=["--reject", "1", "--reject-limit", "tokens"]) as process,
        OpenAI(api_key="sk-test", base_url=process.base_url, max_retries=0) as pclient,
    ):
        assert _refused(pclient, 40, 5).type == "tokens"

    with (
        FakeServerProcess(options=["--quota-exhausted"]) as process,
        OpenAI(api_key="sk-test", base_url=process.base_url, max_retries=0) as pclient,
    ):
        with pytest.raises(openai.RateLimitError) as caught:
            pclient.models.list()
        _assert_quota(caught.value)


def test_the_help_lists_the_token_options(capsys: pytest.CaptureFixture[str]) -> None:
    from otel_openai_retry.testing.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out

    options = ("--tpm ", "--tpm-bucket", "--quota-exhausted", "--sized-usage", "--hints")
    for option in (*options, "--reject-limit"):
        assert option in out
