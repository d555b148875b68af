"""Pacing by tokens end to end: the real SDK, real HTTP, a 429 that says ``type: tokens``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import openai
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import FAST, Instrument, Sdk, async_client, attrs, calls, crowd

PERSISTENT = replace(FAST, max_attempts=8)
"""Enough attempts for every call of a crowd to get through a rate limit."""

EMPTY_BUCKET = {
    "x-ratelimit-limit-tokens": "1000",
    "x-ratelimit-remaining-tokens": "0",
    "x-ratelimit-reset-tokens": "1s",
    "retry-after-ms": "1",
}
"""1,000 tokens, none left, full again in a second: 1,000 tokens a second."""

DEEP_EMPTY_BUCKET = EMPTY_BUCKET | {
    "x-ratelimit-limit-tokens": "3000",
    "x-ratelimit-reset-tokens": "3s",
}
"""The same 1,000 tokens a second in a bucket of 3,000: a request of 2,500 waits 2.5 s."""


async def test_a_token_429_holds_back_what_does_not_fit_yet(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """The retry of a 500-token request waits until the bucket the headers describe holds 500
    tokens; a request of a few tokens right after it waits only its turn behind it."""
    instrument(policy=FAST)
    server.script(Fault.status(429, headers=EMPTY_BUCKET, error_type="tokens"))
    client = sdk.client(server)
    big: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * 400}]

    def chat(max_tokens: int) -> object:  # 100 tokens of prompt, plus those asked for
        return client.chat.completions.create(
            model="gpt-4o-mini", messages=big, max_tokens=max_tokens
        )

    await sdk(lambda: chat(400))
    await sdk(lambda: chat(1))
    first, second = calls(exporter.get_finished_spans())
    assert [r.fault.status_code for r in server.requests] == [429, 200, 200]
    waited = attrs(first.attempts[1]).get("openai_retry.throttle")
    assert isinstance(waited, float) and waited > 0, "the retry waited for its tokens"
    slept = first.attr("openai_retry.total_sleep")
    assert isinstance(slept, float)
    assert waited + slept <= 500 / 1000 / 0.98 + 0.01
    assert first.attr("openai_retry.outcome") == "success"
    assert second.attr("openai_retry.attempts") == 1


async def test_a_request_429_does_not_pace_tokens(
    sdk: Sdk, server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """The same headers on a 429 that says ``type: requests``: no token schedule, and a request
    of many tokens is not held back for them."""
    instrument(policy=FAST)
    server.script(Fault.status(429, headers=EMPTY_BUCKET, error_type="requests"))
    client = sdk.client(server)
    await sdk(
        lambda: client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=900
        )
    )
    (call,) = calls(exporter.get_finished_spans())
    waited = attrs(call.attempts[1]).get("openai_retry.throttle", 0.0)
    assert isinstance(waited, float) and waited < 900 / 1000 / 2, "not paced by tokens"


async def run_many(base_url: str, count: int, concurrency: int) -> list[bool]:
    """``count`` calls of 100 tokens each (a prompt of 1, 99 asked for)."""
    async with async_client(base_url) as client:
        return await crowd(
            client,
            count,
            concurrency,
            lambda i: {"messages": [{"role": "user", "content": f"{i % 10}"}], "max_tokens": 99},
        )


async def test_token_pacing_gets_a_crowd_through_a_token_limit(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """The same crowd into the same token limit (10,000 tokens a second, a bucket of 1,000:
    100 calls a second, 10 at once), without pacing and then with it, in one run. Where the
    crowd overruns the limit, pacing by tokens cuts the 429s to a fraction; where a starved CPU
    keeps it near the limit anyway, pacing still keeps them to the first wave plus a few."""
    unpaced = instrument(policy=replace(PERSISTENT, adaptive=False))
    server.set_token_limit(600_000, bucket_seconds=0.1)
    await run_many(server.base_url, 200, concurrency=50)
    throttled_unpaced = server.status_counts().get("429", 0)
    unpaced.uninstrument()
    server.reset()
    exporter.clear()

    instrument(policy=PERSISTENT)
    server.set_token_limit(600_000, bucket_seconds=0.1)
    results = await run_many(server.base_url, 200, concurrency=50)
    assert all(results)
    counts = server.status_counts()
    first_wave = 50 - 10
    allowed = max(0.5 * throttled_unpaced, first_wave + 0.3 * 200)
    assert counts.get("429", 0) <= allowed, (counts, throttled_unpaced)
    assert all(
        r.fault.error_type == "tokens" for r in server.requests if r.fault.status_code == 429
    )
    found = calls(exporter.get_finished_spans())
    assert sum(len(c.attempts) for c in found) == server.request_count
    throttles = [attrs(a).get("openai_retry.throttle") for c in found for a in c.attempts]
    assert any(isinstance(t, float) and t > 0 for t in throttles), "pacing engaged"


async def test_a_streams_usage_beyond_its_booking_holds_back_what_comes_after(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """A stream without ``max_tokens`` books its prompt alone; what it cost comes with its last
    chunk. Once the caller has read it, the difference is charged: a request after it waits for
    those tokens as well, as the server's bucket will. Unread, nothing is charged yet.

    The request after it waits seconds in both rounds, longer than a busy machine takes to read
    a stream, and the wait is measured from the 429 (the attempt spans' times), so the two
    rounds differ by the tokens, not by how fast a first request or a stream's read was."""
    instrument(policy=FAST)
    client = async_client(server)
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]

    async def stream_and_then_a_call(reply_words: int) -> float:
        server.reset()
        exporter.clear()
        server.script(
            Fault.status(429, headers=DEEP_EMPTY_BUCKET, error_type="tokens"),
            Fault.replying(" ".join(["word"] * reply_words)),
        )
        stream = await client.chat.completions.create(
            model="m", messages=hi, stream=True, stream_options={"include_usage": True}
        )
        usage = [chunk.usage async for chunk in stream if chunk.usage is not None]
        assert usage and usage[-1].completion_tokens >= reply_words
        await client.chat.completions.create(model="m", messages=hi, max_tokens=2500)
        streamed, after = calls(exporter.get_finished_spans())
        refused = streamed.attempts[0].end_time  # the 429 came: the bucket empty from then
        sent = after.attempts[0].start_time  # the request after it went
        assert refused is not None and sent is not None
        return (sent - refused) / 1e9  # from the 429, not from a first request's latency

    short = await stream_and_then_a_call(1)
    await asyncio.sleep(3.2)  # the bucket is full again
    long = await stream_and_then_a_call(800)
    assert long - short >= 0.7, (short, long)  # 800 tokens more at 1,000 a second


async def test_a_token_limit_whose_answers_state_nothing_is_found_and_paced(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """A token limit whose answers carry no header at all, only the 429's ``type: tokens`` (as
    behind proxies that strip them): pacing finds the token rate from the successes and cuts
    the 429s to a fraction."""
    await found_and_paced(server, exporter, instrument, run_many)


async def found_and_paced(
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
    crowd_of: Callable[[str, int, int], Awaitable[list[bool]]],
) -> None:
    """300 calls made by ``crowd_of`` at concurrency 50 into a token limit no header states,
    without pacing and then with it, in one run: every call succeeds, the 429s fall to 0.4 of
    unpaced at most, attempt spans equal the requests received, and sends were held back."""
    unpaced = instrument(policy=replace(PERSISTENT, adaptive=False))
    server.set_token_limit(600_000, bucket_seconds=0.1, hints=False)
    await crowd_of(server.base_url, 300, 50)
    throttled_unpaced = server.status_counts().get("429", 0)
    unpaced.uninstrument()
    server.reset()
    exporter.clear()

    # Backoffs as the defaults space them (tenths of a second, not FAST's milliseconds): the
    # rate is measured from the successes for half a second, and a call retrying every few
    # milliseconds would spend its attempts before it is known.
    instrument(policy=replace(PERSISTENT, initial_wait=0.2, max_wait=1.0))
    server.set_token_limit(600_000, bucket_seconds=0.1, hints=False)
    results = await crowd_of(server.base_url, 300, 50)
    throttled = server.status_counts().get("429", 0)
    assert all(results), (results.count(False), throttled, throttled_unpaced)
    assert throttled <= 0.4 * throttled_unpaced, (throttled, throttled_unpaced)
    stated = {name for r in server.requests for name, _ in r.fault.headers}
    assert not any(name.startswith("x-ratelimit") for name in stated), stated
    found = calls(exporter.get_finished_spans())
    assert sum(len(c.attempts) for c in found) == server.request_count
    throttles = [attrs(a).get("openai_retry.throttle") for c in found for a in c.attempts]
    assert any(isinstance(t, float) and t > 0 for t in throttles), "paced by tokens"


async def stream_many(base_url: str, count: int, concurrency: int) -> list[bool]:
    """``count`` streamed calls of 100 tokens each, read to their end, none asking for usage:
    no answer says what it cost."""
    semaphore = asyncio.Semaphore(concurrency)
    async with async_client(base_url) as client:

        async def one(i: int) -> bool:
            async with semaphore:
                try:
                    stream = await client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": f"{i % 10}"}],
                        max_tokens=99,
                        stream=True,
                    )
                    usage = [chunk.usage async for chunk in stream if chunk.usage is not None]
                except openai.APIError:
                    return False
                assert not usage
                return True

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_answers_that_state_no_usage_are_counted_at_their_estimate(
    server: FakeOpenAIServer, exporter: InMemorySpanExporter, instrument: Instrument
) -> None:
    """Streams read without ``include_usage`` never say what they cost. Behind a token limit no
    header states, each success counts at the tokens its send booked, so the rate is found from
    them and paced as for answers that state their usage; uncounted, the rate would never be
    measured and nothing would pace these 429s."""
    await found_and_paced(server, exporter, instrument, stream_many)
