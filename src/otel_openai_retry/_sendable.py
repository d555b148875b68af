"""Whether the transport would put a request on the wire at all.

A request the transport refuses before sending (a header value it cannot encode, a closed
client) is no attempt: no span, no budget, not retried. The rules are the transports' own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from openai import AsyncAzureOpenAI, AzureOpenAI
from openai._base_client import BaseClient
from openai._models import FinalRequestOptions
from openai._types import NotGiven

__all__ = ["headers_sendable"]


_REFUSED_EVERYWHERE = re.compile(r"[\r\n\x00]|[^\x00-\x7f]")
"""Header values no transport sends: CR, LF and NUL (RFC 9110), and text that is not ASCII
(httpx encodes headers before any transport sees them)."""
_REFUSED_BY_H11 = re.compile(r"[\r\n\x00]|\A[ \t]|[ \t]\Z|[^\x00-\x7f]")
"""h11, under httpx's own transports, also refuses whitespace at either end."""
_REFUSED_IN_BEARER_BY_H11 = re.compile(r"[\r\n\x00]|[ \t]\Z|[^\x00-\x7f]")
"""The same for a key sent as ``Bearer {key}``, where leading whitespace is inside the value."""
_H11_TRANSPORTS = frozenset({"HTTPTransport", "AsyncHTTPTransport"})


_CLIENT_VERDICT = "_otel_openai_retry_headers_sendable"
"""Where a client keeps the verdict on its own headers, with the key and headers it judged."""


def headers_sendable(client: BaseClient[Any, Any], options: FinalRequestOptions) -> bool:
    """The API key (one read from a file often ends in a newline), the client's default headers
    and the request's own, judged by the rules of the client's own transport (another transport
    may accept what h11 refuses: then it is sent and traced). The client's part is judged once
    per key and headers object; keys the SDK resolves later (a callable, an Azure AD token) are
    judged by the transport, and ``classify`` does not retry its refusal."""
    fields = client.__dict__
    key = fields.get("api_key")
    custom = fields.get("_custom_headers")
    cached = fields.get(_CLIENT_VERDICT)
    if cached is not None and cached[0] is key and cached[1] is custom:
        refused = cached[2]
    else:
        refused = _client_refuses(client, key, custom)
        fields[_CLIENT_VERDICT] = (key, custom, refused)
    if refused is None:
        return False
    headers = options.headers
    if not headers or isinstance(headers, NotGiven):
        return True
    return not any(
        isinstance(value, str) and refused.search(value) is not None for value in headers.values()
    )


def _client_refuses(
    client: BaseClient[Any, Any], key: object, custom: object
) -> re.Pattern[str] | None:
    """The rule the client's transport applies to header values, or ``None`` when the client's
    own key or default headers already break it."""
    transport = getattr(getattr(client, "_client", None), "_transport", None)
    h11 = type(transport).__name__ in _H11_TRANSPORTS
    refused = _REFUSED_BY_H11 if h11 else _REFUSED_EVERYWHERE
    if isinstance(key, str):
        bearer = not isinstance(client, (AzureOpenAI, AsyncAzureOpenAI))
        key_refused = _REFUSED_IN_BEARER_BY_H11 if h11 and bearer else refused
        if key_refused.search(key) is not None:
            return None
    if isinstance(custom, Mapping):
        for value in custom.values():
            if isinstance(value, str) and refused.search(value) is not None:
                return None
    return refused
