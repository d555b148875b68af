"""What of a failure may leave the process: the one place that decides, as a pure function.

An exception's text is not metadata. The transport's rejection of a header quotes the header
(``Illegal header value b'Bearer sk-...\\n'``, chained under the SDK's ``APIConnectionError``); a
400 quotes the prompt back; a 401 quotes the key's last characters; pydantic's
``ValidationError`` from ``parse()`` quotes the completion. So nothing free-form is exported,
whatever the content-capture setting (capture is an opt-in to prompts and completions, not to
key fragments, and an error message cannot be told apart into the two):

- ``error.type`` always (the caller passes it: the exception's qualified class name);
- the span status description: that type, and for an ``openai.APIStatusError`` the HTTP status
  and the body's ``type`` and ``code`` (enumerated identifiers such as ``invalid_request_error``
  and ``context_length_exceeded``), each only when it looks like one and is not part of any header
  value, of the URL (its query, a password in it) or of the body the request carried (a server
  echoing a key or a word of the prompt in its ``code``);
- never the message, the chained causes, a stack trace or a span event. The current conventions
  (semantic-conventions ``general/recording-errors.md``) recommend exactly this: status ERROR,
  ``error.type``, a status description, and no ``Span.RecordException`` (exception span events
  are deprecated; the ``OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN`` switch to logs is for
  instrumentations that keep recording exceptions, and an error inside a span is not repeated
  as a log record).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from openai import APIStatusError

__all__ = ["error_description", "sent_values"]

_IDENTIFIER = re.compile(r"[A-Za-z0-9_]{1,64}")
"""What an API's enumerated error ``type``/``code`` looks like. No space, so no sentence of a
prompt; no ``-``, so no ``sk-...`` key; bounded, so no blob."""


SentHeaders = Callable[[], Iterable[object]]
"""The header values the call sent, asked for only when an error body is described."""


def error_description(
    exc: BaseException | None, kind: str, sent_headers: SentHeaders | None = None
) -> str:
    """The span status description for a failed call or attempt; ``kind`` is its ``error.type``.

    ``sent_headers`` gives the values the call itself sent: newer SDKs strip the credentials
    (``Authorization``, ``api-key``) from the request they attach to an error, which is exactly
    what an echo must be checked against.
    """
    if not isinstance(exc, APIStatusError):
        return kind
    status = exc.status_code
    parts = [f"{kind}: HTTP {status}" if isinstance(status, int) else kind]
    sent = sent_values(exc, sent_headers)
    if sent is not None:
        for name, value in (("type", exc.type), ("code", exc.code)):
            if _safe_identifier(value, sent):
                parts.append(f"{name} {value}")
    return ", ".join(parts)


def _safe_identifier(value: object, sent: tuple[str, ...]) -> bool:
    return (
        isinstance(value, str)
        and _IDENTIFIER.fullmatch(value) is not None
        and not any(value in text for text in sent)
    )


def sent_values(exc: BaseException, sent_headers: SentHeaders | None) -> tuple[str, ...] | None:
    """Every header value, the URL and the body of the request the error answers (a server
    that echoes one, a key or a word of the prompt say, in its ``code`` must not get it
    exported); ``None`` when they cannot be read (a body sent as a stream, say)."""
    try:
        request = exc.request  # type: ignore[attr-defined]
        values = [str(value) for value in request.headers.values()]
        values.append(str(request.url))
        values.append(request.content.decode("utf-8", "replace"))
        if sent_headers is not None:
            values.extend(str(value) for value in sent_headers())
    except Exception:  # no request or an odd one: say nothing of the body rather than guess
        return None
    return tuple(values)
