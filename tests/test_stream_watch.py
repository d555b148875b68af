"""The stream state machine's rules, one by one, without any I/O (see ``_streams``)."""

from __future__ import annotations

from types import SimpleNamespace

import openai
import pytest

from otel_openai_retry._operations import OPERATIONS
from otel_openai_retry._streams import ABANDONED, Phase, StreamEnd, StreamWatch

from .helpers import sdk_httpx as httpx2

CHAT = OPERATIONS["/chat/completions"]


def chunk(text: str, reason: str | None = None) -> object:
    choice = SimpleNamespace(index=0, finish_reason=reason, delta=SimpleNamespace(content=text))
    return SimpleNamespace(id="c-1", model="m", choices=[choice], usage=None)


def watch(sse: bool = True) -> tuple[StreamWatch, list[StreamEnd]]:
    ends: list[StreamEnd] = []
    return StreamWatch(ends.append, CHAT, True, 0.0, sse=sse), ends


def test_nothing_ends_the_span_before_the_call_returns_the_stream() -> None:
    w, ends = watch()
    w.chunk(chunk("a", "stop"))
    w.closed()
    assert (w.phase, ends) == (Phase.PENDING, [])
    w.arm()  # the remembered close ends it now
    assert w.phase is Phase.ENDED
    [end] = ends
    assert (end.error, end.error_type) == (None, None)
    assert end.fields is not None and end.fields.finish_reasons == ("stop",)
    assert end.output_messages is not None and '"a"' in end.output_messages


def test_once_armed_the_first_ending_ends_it_and_later_events_are_ignored() -> None:
    w, ends = watch()
    w.arm()
    w.chunk(chunk("a"))
    w.closed()
    w.failed(RuntimeError("late"))
    w.abandoned()
    w.arm()
    [end] = ends
    assert end.error is None
    assert end.fields is not None and end.fields.response_id == "c-1"


def test_a_failure_replaces_a_close_not_yet_told() -> None:
    w, ends = watch()
    w.closed()
    error = RuntimeError("cut")
    w.failed(error)
    w.arm()
    [end] = ends
    assert (end.error, end.error_type) == (error, "RuntimeError")


def test_while_the_sdk_reads_its_own_error_wins_over_the_transports() -> None:
    w, ends = watch()
    w.arm()
    w.begin_read()
    w.bytes_failed(ConnectionResetError("httpx's view"))
    w.closed()
    assert ends == []  # the SDK is still inside its read: it reports what the caller sees
    sdk_error = openai.APIConnectionError(request=httpx2.Request("POST", "http://localhost/"))
    w.end_read(sdk_error)
    [end] = ends
    assert end.error is sdk_error
    assert end.error_type == "openai.APIConnectionError"


def test_a_read_error_the_sdk_swallowed_still_ends_the_stream_as_failed() -> None:
    w, ends = watch()
    w.arm()
    w.begin_read()
    error = ConnectionResetError("cut")
    w.bytes_failed(error)
    w.end_read(None)
    [end] = ends
    assert end.error is error


def test_a_close_during_a_read_waits_for_the_read() -> None:
    w, ends = watch()
    w.arm()
    w.begin_read()
    w.closed()
    assert w.phase is Phase.READING and ends == []
    w.end_read(None)
    [end] = ends
    assert end.error is None


def test_arming_during_a_read_takes_effect_when_the_read_returns() -> None:
    w, ends = watch()
    w.begin_read()
    w.arm()
    w.closed()
    assert ends == []
    w.end_read(None)
    assert len(ends) == 1


@pytest.mark.parametrize("reading", [False, True])
def test_a_stream_collected_unread_ends_as_abandoned(reading: bool) -> None:
    w, ends = watch()
    w.arm()
    if reading:
        w.begin_read()
    w.abandoned()
    [end] = ends
    assert (end.error, end.error_type) == (None, ABANDONED)


def test_abandoned_never_replaces_an_ending_already_remembered() -> None:
    w, ends = watch()
    w.arm()
    w.begin_read()
    w.closed()
    w.abandoned()  # the GC reached it mid-read: the remembered close stands
    [end] = ends
    assert end.error_type is None


def test_a_body_read_later_ends_with_the_callers_parsed_model() -> None:
    w, ends = watch(sse=False)
    w.arm()
    w.begin_read()
    w.closed()
    w.body_parsed(
        SimpleNamespace(
            id="r-1",
            model="m",
            choices=[],
            usage={"prompt_tokens": 2, "completion_tokens": 3},
        )
    )
    w.end_read(None)
    [end] = ends
    assert end.fields is not None
    assert (end.fields.response_id, end.fields.input_tokens, end.fields.output_tokens) == (
        "r-1",
        2,
        3,
    )
    assert end.time_to_first_chunk is None


def test_an_unreadable_result_still_ends_the_stream_once() -> None:
    class Broken:
        def add(self, chunk: object) -> None:
            pass

        def fields(self, cut: bool = False) -> object:
            raise RuntimeError("unreadable")

        def output_messages(self) -> str | None:
            return None

    w, ends = watch()
    w.reader = Broken()  # type: ignore[assignment]
    w.arm()
    with pytest.raises(RuntimeError, match="unreadable"):  # raised under tests, after the end
        w.closed()
    [end] = ends
    assert end.fields is None and end.error is None


def test_cleanups_run_when_the_stream_ends() -> None:
    w, _ = watch()
    ran: list[str] = []
    w.on_ended(lambda: ran.append("done"))
    w.arm()
    assert ran == []
    w.closed()
    assert ran == ["done"]
