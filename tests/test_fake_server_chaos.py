"""Seeded chaos as a server mode, and faults a client chooses with a request header: in code, on
the command line and over the control API, with the real SDK over real HTTP."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial

import openai
import pytest

from otel_openai_retry.testing import Chaos, FakeOpenAIServer, FakeServerProcess, Fault
from otel_openai_retry.testing._chaos import parse_chaos
from otel_openai_retry.testing._script import parse_script

from .helpers import API_KEY, Sdk

MODEL = "gpt-4o-mini"
USER = [{"role": "user", "content": "hi"}]
CHAOS = Chaos(seed=7, rate_429=0.2, rate_500=0.1, rate_503=0.1, drop=0.1, cut=0.1)
HEADER = "x-fake-openai-fault"


def _outcomes(client: openai.OpenAI, requests: int) -> list[str]:
    """What each of ``requests`` calls got, as the caller saw it: the class name of what it
    raised, or ``ok``."""
    seen = []
    for _ in range(requests):
        try:
            client.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
            seen.append("ok")
        except openai.OpenAIError as exc:
            seen.append(type(exc).__name__)
    return seen


@pytest.fixture
def process() -> Iterator[FakeServerProcess]:
    with FakeServerProcess(
        options=("--chaos", "seed=7,429=0.2,500=0.1,503=0.1,drop=0.1,cut=0.1")
    ) as running:
        yield running


# -- chaos ------------------------------------------------------------------------------------


def test_the_same_seed_replays_the_same_faults_and_another_seed_does_not() -> None:
    runs = []
    for chaos in (CHAOS, CHAOS, dataclasses.replace(CHAOS, seed=8)):
        with (
            FakeOpenAIServer(chaos=chaos) as server,
            openai.OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0) as client,
        ):
            outcomes = _outcomes(client, 40)
            runs.append(([r.fault for r in server.requests], outcomes))
            assert [r.fault for r in server.requests] == chaos.sequence(40)
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]
    statuses = {fault.status_code for fault in runs[0][0]}
    assert {200, 429, 500, 503} <= statuses  # a mix, not one fault
    assert "APIConnectionError" in runs[0][1]  # drops and cuts, as the caller sees them


async def test_set_chaos_starts_over_from_the_seed_and_none_ends_it(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    client = sdk.client(server, max_retries=0)

    async def twelve() -> list[Fault]:
        server.reset()
        server.set_chaos(CHAOS)
        for _ in range(12):
            with contextlib.suppress(openai.OpenAIError):
                await sdk(lambda: client.embeddings.create(model="e", input="x"))
        return [r.fault for r in server.requests]

    assert await twelve() == await twelve() == CHAOS.sequence(12)
    server.set_chaos(None)
    await sdk(lambda: client.embeddings.create(model="e", input="x"))
    assert server.requests[-1].fault == Fault.ok()


def test_scripted_faults_come_before_chaos_draws() -> None:
    with FakeOpenAIServer(chaos=CHAOS) as server:
        server.script(Fault.status(418))
        client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0)
        _outcomes(client, 11)
    faults = [r.fault for r in server.requests]
    assert faults[0].status_code == 418
    assert faults[1:] == CHAOS.sequence(10)


def test_chaos_on_the_command_line_and_over_the_control_api(process: FakeServerProcess) -> None:
    client = openai.OpenAI(api_key=API_KEY, base_url=process.base_url, max_retries=0)
    _outcomes(client, 15)
    assert [r.fault for r in process.requests] == CHAOS.sequence(15)
    other = Chaos(seed=1, rate_500=0.5)
    process.reset()
    process.set_chaos(other)
    _outcomes(client, 10)
    assert [r.fault for r in process.requests] == other.sequence(10)
    process.reset()
    _control(process, {"chaos": "seed=1,500=0.5"})  # the command line's form works too
    _outcomes(client, 10)
    assert [r.fault for r in process.requests] == other.sequence(10)
    with pytest.raises(ValueError, match="unexpected keyword argument 'bogus'"):
        _control(process, {"chaos": {"bogus": 1}})


def _control(process: FakeServerProcess, conditions: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"{process.url}/_fake/conditions", data=json.dumps(conditions).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except urllib.error.HTTPError as exc:
        with exc:
            raise ValueError(json.loads(exc.read())["error"]) from None


def test_a_process_paces_streams_on_request(process: FakeServerProcess) -> None:
    """``reset`` forgets the command line's chaos with the other conditions."""
    process.reset()
    process.set_chunk_latency(0.01)
    client = openai.OpenAI(api_key=API_KEY, base_url=process.base_url, max_retries=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))  # type: ignore[arg-type]
    assert chunks
    assert [r.fault for r in process.requests] == [Fault(chunk_delay_s=0.01)]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("seed=1,429=0.7,500=0.5", "more than 1"),
        ("seed=1,teapot=0.1", "bad chaos item 'teapot=0.1'"),
        ("429=lots", "'lots' is not a number"),
        ("drop=1.5", "probability"),
    ],
)
def test_bad_chaos_is_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_chaos(text)


def test_chaos_spec_reads_every_field() -> None:
    assert parse_chaos(
        "seed=3, 429=0.1, 500=0.05, 503=0.05, drop=0.02, stall=0.01, cut=0.03, stall-s=5, "
        "retry-after-ms=250"
    ) == Chaos(3, 0.1, 0.05, 0.05, 0.02, 0.01, 0.03, 5.0, 250)


# -- faults by request header -----------------------------------------------------------------


async def test_a_header_list_answers_each_retry_in_turn(server: FakeOpenAIServer, sdk: Sdk) -> None:
    client = sdk.client(server, max_retries=2)
    await sdk(
        lambda: client.chat.completions.create(
            model=MODEL,
            messages=USER,  # type: ignore[arg-type]
            extra_headers={HEADER: "429:retry-after-ms=1,503"},
        )
    )
    assert [(r.retry_count, r.fault.status_code) for r in server.requests] == [
        (0, 429),
        (1, 503),
        (2, 200),
    ]
    assert server.requests[0].fault.headers == (("retry-after-ms", "1"),)


async def test_a_key_starts_the_sequence_over(server: FakeOpenAIServer, sdk: Sdk) -> None:
    """Used up, a sequence answers successes; another key (another test) gets it anew."""
    client = sdk.client(server, max_retries=0)
    for key in ("first-test", "first-test", "second-test"):
        headers = {HEADER: "429", f"{HEADER}-key": key}
        with contextlib.suppress(openai.RateLimitError):
            await sdk(
                partial(client.embeddings.create, model="e", input="x", extra_headers=headers)
            )
    assert [r.fault.status_code for r in server.requests] == [429, 200, 429]


async def test_a_header_fault_comes_before_the_script(server: FakeOpenAIServer, sdk: Sdk) -> None:
    server.script(Fault.server_error())
    client = sdk.client(server, max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        await sdk(
            lambda: client.embeddings.create(model="e", input="x", extra_headers={HEADER: "drop"})
        )
    assert server.pending_faults == 1
    assert server.requests[0].fault == Fault.drop()


async def test_a_bad_header_value_is_a_400_that_says_why(
    server: FakeOpenAIServer, sdk: Sdk
) -> None:
    client = sdk.client(server, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk(
            lambda: client.chat.completions.create(
                model=MODEL,
                messages=USER,  # type: ignore[arg-type]
                extra_headers={HEADER: "429:retry-after-soon=2"},
            )
        )
    assert refused.value.code == "invalid_fault_header"
    assert "x-fake-openai-fault: bad fault '429:retry-after-soon=2'" in refused.value.message
    assert "unknown option 'retry-after-soon'" in refused.value.message


def test_any_http_client_can_ask_for_a_fault(server: FakeOpenAIServer) -> None:
    """What a black-box test in another language does: one header, no SDK, no control API."""
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=json.dumps({"model": MODEL, "messages": USER}).encode(),
        headers={"content-type": "application/json", HEADER: "429:retry-after=2"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=5)
    with answer.value as error:
        assert (error.code, error.headers["retry-after"]) == (429, "2")
        assert json.loads(error.read())["error"]["code"] == "rate_limit_exceeded"


def test_the_script_language_reads_the_body_faults() -> None:
    assert parse_script("slow=0.1, stall=2:0.5, stall=3, bad-sse=1, bad-json, truncated-json") == [
        Fault.slow_stream(0.1),
        Fault.stream_stall(2, 0.5),
        Fault.stream_stall(3),
        Fault.bad_sse_frame(1),
        Fault.invalid_json(),
        Fault.truncated_json(),
    ]
