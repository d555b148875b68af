"""Every event loop the SDK supports: asyncio, uvloop, and trio through anyio.

Retries and pacing waits sleep with the running loop's own primitives; an asyncio-only call
under trio raises ``RuntimeError: no running event loop`` into the caller's code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_openai_retry.testing import FakeOpenAIServer, Fault

from .helpers import FAST, MESSAGES, Instrument, async_client, calls

Main = Callable[[], Awaitable[list[str]]]


def run_asyncio(main: Main) -> list[str]:
    return asyncio.run(main())  # type: ignore[arg-type]


def run_uvloop(main: Main) -> list[str]:
    uvloop = pytest.importorskip("uvloop")
    result: list[str] = uvloop.run(main())
    return result


def run_trio(main: Main) -> list[str]:
    import trio

    return trio.run(main)


@pytest.mark.parametrize(
    "run", [run_asyncio, run_uvloop, run_trio], ids=["asyncio", "uvloop", "trio"]
)
def test_retries_and_pacing_waits_run_on_the_callers_loop(
    run: Callable[[Main], list[str]],
    server: FakeOpenAIServer,
    exporter: InMemorySpanExporter,
    instrument: Instrument,
) -> None:
    """A call retried after a 429 and a 500, then concurrent calls paced behind that 429."""
    instrument(policy=FAST)  # pacing on, as by default

    async def main() -> list[str]:
        client = async_client(server)
        limited = Fault.status(  # the server's own rate: the pacer trusts it at once
            429,
            headers={
                "retry-after-ms": "20",
                "x-ratelimit-limit-requests": "20",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1s",
            },
        )
        server.script(limited, Fault.server_error(500))
        first = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        contents = [first.choices[0].message.content or ""]

        async def one() -> None:
            done = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            contents.append(done.choices[0].message.content or "")

        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(one)
        await client.close()
        return contents

    contents = run(main)

    assert len(contents) == 6 and all(contents)
    found = calls(exporter.get_finished_spans())
    assert [c.attr("openai_retry.attempts") for c in found] == [3, 1, 1, 1, 1, 1]
    assert all(c.attr("openai_retry.outcome") == "success" for c in found)
    throttled = [
        a for c in found for a in c.attempts if "openai_retry.throttle" in (a.attributes or {})
    ]
    assert throttled, "the calls after the 429 were paced, on this loop"
    assert server.request_count == 8
