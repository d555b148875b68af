"""What the fake server does to one request: a frozen value that a script is made of.

A :class:`Fault` is data, not behaviour, so that it can be queued, recorded next to the request it
was applied to, compared in assertions and printed readably when an assertion fails. The server
(``_app.py``) is the only place that interprets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["BAD_BODIES", "Fault"]

BAD_BODIES = ("invalid", "truncated")


@dataclass(frozen=True, repr=False)
class Fault:
    """One scripted answer of :class:`~otel_openai_retry.testing.FakeOpenAIServer`.

    Build it with the class methods (:meth:`ok`, :meth:`rate_limit`, :meth:`insufficient_quota`,
    :meth:`status`, :meth:`server_error`, :meth:`delay`, :meth:`drop`, :meth:`stream_break`,
    :meth:`slow_stream`, :meth:`stream_stall`, :meth:`bad_sse_frame`, :meth:`invalid_json`,
    :meth:`truncated_json`, :meth:`replying`); the
    fields are public so that a test can combine them, e.g.
    ``dataclasses.replace(Fault.rate_limit(), delay_s=0.5)`` for a rate limit that is also slow.

    Attributes:
        status_code: HTTP status. Below 400 the endpoint's normal body is sent with it; from 400 on,
            an OpenAI-shaped error body.
        headers: Extra response headers as ``(name, value)`` pairs, a tuple so that the fault stays
            hashable. Names are lower-cased and sorted on construction, so that two faults with
            the same headers are equal whatever order they were written in.
        retry_after_date_in: When set, a ``retry-after`` HTTP date this many seconds after the
            moment the response is *sent* (not when the fault was scripted, which may be long
            before).
        delay_s: Seconds to wait before doing anything else; longer than the client's timeout
            makes the client time out.
        drop_connection: Close the TCP connection without any response.
        break_after: Abort the connection after this many events of a streamed (SSE) response;
            a non-streamed response is cut off in the middle of its body instead.
        message: The ``error.message`` of an error answer instead of the default one, e.g. one
            that echoes the prompt as the real API's validation errors do.
        error_code: The ``error.code`` of an error answer instead of the default one, e.g. one
            that echoes a request header, as a hostile or broken proxy might.
        error_type: The ``error.type`` of an error answer instead of the default one: a 429's
            ``"tokens"`` or ``"requests"`` says which limit was hit, which a client may pace by.
        chunk_delay_s: Seconds between two events of a streamed answer: a model's per-token pace.
        stall_after: Hang after this many events of a streamed answer (half the body of another
            answer), for ``stall_s`` seconds, then go on; the client's read timeout is what ends it
            first, as a model stuck mid-answer makes it.
        stall_s: How long ``stall_after`` hangs; ``None``: until the client hangs up.
        bad_frame_after: After this many events, send one event whose data is not JSON, then the
            rest of the stream, as a broken proxy might.
        bad_body: ``"invalid"``: a 200 answer whose body is not JSON; ``"truncated"``: the first
            half of the JSON body, complete as HTTP (its ``content-length`` says so). Sent as
            ``application/json`` even to a request that asked for a stream.
        reply: The assistant's text in a successful chat or Responses answer, instead of what it
            would say (structured output, a tool call, the echo): e.g. content that fails the
            caller's schema, as a model outside strict mode may send.
    """

    status_code: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    retry_after_date_in: float | None = None
    delay_s: float = 0.0
    drop_connection: bool = False
    break_after: int | None = None
    message: str | None = None
    error_code: str | None = None
    error_type: str | None = None
    chunk_delay_s: float = 0.0
    stall_after: int | None = None
    stall_s: float | None = None
    bad_frame_after: int | None = None
    bad_body: str | None = None
    reply: str | None = None

    def __post_init__(self) -> None:
        canonical = tuple(sorted((str(name).lower(), str(value)) for name, value in self.headers))
        object.__setattr__(self, "headers", canonical)
        # Fail when the script is written, not later inside the server thread where the error
        # would only surface as a confusing client-side symptom.
        if not 100 <= self.status_code <= 599:
            raise ValueError(
                f"status_code must be an HTTP status (100-599), got {self.status_code}"
            )
        if self.delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {self.delay_s}")
        if self.break_after is not None and self.break_after < 0:
            raise ValueError(f"break_after must be >= 0, got {self.break_after}")
        if self.drop_connection and self.break_after is not None:
            raise ValueError("a fault cannot both drop the connection and break a stream")
        for name in ("chunk_delay_s", "stall_s"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name in ("stall_after", "bad_frame_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.bad_body not in (None, *BAD_BODIES):
            raise ValueError(f"bad_body must be one of {BAD_BODIES}, got {self.bad_body!r}")

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def ok(cls) -> Fault:
        """A normal, successful answer: what every request gets once the script is used up."""
        return cls()

    @classmethod
    def rate_limit(
        cls,
        retry_after_ms: float | None = None,
        retry_after: float | str | None = None,
        retry_after_date_in: float | None = None,
        *,
        error_type: str | None = None,
    ) -> Fault:
        """A 429 with the retry hint(s) given, or none at all.

        ``retry_after`` may be a string so that hostile values (``"abc"``, ``"-1"``, ``"inf"``)
        reach the client unchanged. ``error_type="tokens"`` says the tokens-per-minute limit was
        hit (the body's type is ``"requests"`` otherwise).
        """
        headers: dict[str, str] = {}
        if retry_after_ms is not None:
            headers["retry-after-ms"] = _number(retry_after_ms)
        if retry_after is not None:
            if retry_after_date_in is not None:
                raise ValueError("retry_after and retry_after_date_in both set `retry-after`")
            headers["retry-after"] = (
                retry_after if isinstance(retry_after, str) else _number(retry_after)
            )
        return cls(
            status_code=429,
            headers=tuple(headers.items()),
            retry_after_date_in=retry_after_date_in,
            error_type=error_type,
        )

    @classmethod
    def insufficient_quota(cls) -> Fault:
        """OpenAI's 429 for an account out of credit: ``insufficient_quota``, which waiting does
        not cure, so a client must not retry it."""
        return cls(status_code=429, error_code="insufficient_quota")

    @classmethod
    def status(
        cls,
        code: int,
        *,
        headers: Mapping[str, str] | None = None,
        should_retry: bool | None = None,
        message: str | None = None,
        error_code: str | None = None,
        error_type: str | None = None,
    ) -> Fault:
        """Any status with any extra headers (hostile values included, sent as written);
        ``should_retry`` adds the ``x-should-retry`` header the SDK obeys."""
        merged = {name.lower(): value for name, value in (headers or {}).items()}
        if should_retry is not None:
            merged["x-should-retry"] = "true" if should_retry else "false"
        return cls(
            status_code=code,
            headers=tuple(merged.items()),
            message=message,
            error_code=error_code,
            error_type=error_type,
        )

    @classmethod
    def server_error(cls, code: int = 500) -> Fault:
        """A 5xx with OpenAI's ``server_error`` body."""
        if not 500 <= code <= 599:
            raise ValueError(f"server_error needs a 5xx status, got {code}")
        return cls(status_code=code)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally, but only after ``seconds``."""
        return cls(delay_s=float(seconds))

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering; the client sees a connection error."""
        return cls(drop_connection=True)

    @classmethod
    def stream_break(cls, after_chunks: int) -> Fault:
        """Send ``after_chunks`` stream events, then abort: the caller gets them, then an error."""
        return cls(break_after=after_chunks)

    @classmethod
    def slow_stream(cls, per_chunk_s: float) -> Fault:
        """A normal answer whose stream events come ``per_chunk_s`` apart (per token)."""
        return cls(chunk_delay_s=float(per_chunk_s))

    @classmethod
    def stream_stall(cls, after_chunks: int, seconds: float | None = None) -> Fault:
        """Send ``after_chunks`` events, then hang for ``seconds`` (``None``: until the client
        hangs up) before the rest: what a client's read timeout is for."""
        return cls(stall_after=after_chunks, stall_s=None if seconds is None else float(seconds))

    @classmethod
    def bad_sse_frame(cls, after_chunks: int = 1) -> Fault:
        """After ``after_chunks`` events, one whose data is not JSON; then the rest."""
        return cls(bad_frame_after=after_chunks)

    @classmethod
    def replying(cls, text: str) -> Fault:
        """A normal answer whose assistant text is ``text``, whatever the request asked for."""
        return cls(reply=text)

    @classmethod
    def invalid_json(cls) -> Fault:
        """A 200 whose ``application/json`` body is not JSON."""
        return cls(bad_body="invalid")

    @classmethod
    def truncated_json(cls) -> Fault:
        """A 200 whose JSON body stops halfway, its ``content-length`` the length sent."""
        return cls(bad_body="truncated")

    # -- reading --------------------------------------------------------------------------------

    @property
    def is_error(self) -> bool:
        """Whether the answer is an HTTP error response (the connection faults are not)."""
        return self.status_code >= 400 and not self.drop_connection

    def __repr__(self) -> str:
        # Short and human: this is what shows up in a failed assertion over `server.requests`.
        if self.drop_connection:
            parts = ["drop"]
        else:
            parts = [str(self.status_code)]
            parts.extend(f"{name}: {value}" for name, value in self.headers)
            if self.retry_after_date_in is not None:
                parts.append(f"retry-after: <date in {_number(self.retry_after_date_in)}s>")
            if self.break_after is not None:
                parts.append(f"break after {self.break_after}")
            if self.message is not None:
                parts.append(f"message {self.message!r}")
            if self.error_code is not None:
                parts.append(f"code {self.error_code!r}")
            if self.error_type is not None:
                parts.append(f"type {self.error_type!r}")
            parts.extend(self._shaping())
        if self.delay_s:
            parts.append(f"delay {_number(self.delay_s)}s")
        return f"Fault({', '.join(parts)})"

    __str__ = __repr__

    def _shaping(self) -> list[str]:
        """How the answer's body is paced or spoiled, for the repr."""
        parts = []
        if self.chunk_delay_s:
            parts.append(f"{_number(self.chunk_delay_s)}s per chunk")
        if self.stall_after is not None:
            how_long = "until hung up" if self.stall_s is None else f"{_number(self.stall_s)}s"
            parts.append(f"stall after {self.stall_after} for {how_long}")
        if self.bad_frame_after is not None:
            parts.append(f"bad frame after {self.bad_frame_after}")
        if self.bad_body is not None:
            parts.append(f"{self.bad_body} json")
        if self.reply is not None:
            parts.append(f"reply {self.reply!r}")
        return parts


def _number(value: float) -> str:
    """``50`` rather than ``50.0``: header values and reprs read like a person would write them."""
    return str(int(value)) if float(value).is_integer() else str(value)
