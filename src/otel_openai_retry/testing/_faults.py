"""What the fake server does to one request: a frozen value that a script is made of.

A :class:`Fault` is data, not behaviour, so that it can be queued, recorded next to the request it
was applied to, compared in assertions and printed readably when an assertion fails. The server
(``_app.py``) is the only place that interprets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Fault"]


@dataclass(frozen=True, repr=False)
class Fault:
    """One scripted answer of :class:`~otel_openai_retry.testing.FakeOpenAIServer`.

    Build it with the class methods (:meth:`ok`, :meth:`rate_limit`, :meth:`status`,
    :meth:`quota_exhausted`, :meth:`server_error`, :meth:`delay`, :meth:`drop`,
    :meth:`stream_break`); the fields are public so that a test can combine them, e.g.
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
        error_type: The ``error.type`` of an error answer instead of the default one, e.g.
            ``tokens`` for a 429 on the token limit (the default 429 says ``requests``).
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
    ) -> Fault:
        """A 429 with the retry hint(s) given, or none at all.

        ``retry_after`` may be a string so that hostile values (``"abc"``, ``"-1"``, ``"inf"``)
        reach the client unchanged.
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
        )

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
    def quota_exhausted(cls) -> Fault:
        """OpenAI's 429 for an account out of credit (``insufficient_quota``), which no wait
        cures; the SDK raises ``RateLimitError`` for it as for any 429."""
        return cls(
            status_code=429,
            message=_QUOTA_MESSAGE,
            error_code="insufficient_quota",
            error_type="insufficient_quota",
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
        if self.delay_s:
            parts.append(f"delay {_number(self.delay_s)}s")
        return f"Fault({', '.join(parts)})"

    __str__ = __repr__


_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details."
    " (injected by FakeOpenAIServer)"
)


def _number(value: float) -> str:
    """``50`` rather than ``50.0``: header values and reprs read like a person would write them."""
    return str(int(value)) if float(value).is_integer() else str(value)
