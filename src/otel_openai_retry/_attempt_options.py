"""What each attempt of a call is sent with: how many attempts, the timeout left, and which
header values it carries (to keep them out of telemetry)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openai._base_client import BaseClient
from openai._constants import DEFAULT_MAX_RETRIES
from openai._models import FinalRequestOptions

from ._explicit_retries import is_explicit
from ._strategies import Strategies

__all__ = ["cap_timeout", "max_attempts", "sent_header_values"]


def max_attempts(
    client: BaseClient[Any, Any], options: FinalRequestOptions, strategies: Strategies
) -> int:
    """A ``max_retries`` the user set, on the request or the client, wins: N retries, N + 1
    attempts, 2 included. A client built before we were installed left no record: there, only a
    count other than the SDK's default can be told apart from it."""
    if isinstance(options.max_retries, int) and options.max_retries >= 0:
        return options.max_retries + 1
    max_retries = client.max_retries
    if not isinstance(max_retries, int) or max_retries < 0:
        return strategies.policy.max_attempts
    explicit = is_explicit(client)
    if explicit or (explicit is None and max_retries != DEFAULT_MAX_RETRIES):
        return max_retries + 1
    return strategies.policy.max_attempts


def cap_timeout(configured: Any, remaining: float) -> Any:
    """The attempt's timeout, never beyond the call's deadline."""
    remaining = max(remaining, 0.001)
    if configured is None:
        return remaining
    if isinstance(configured, (int, float)):
        return min(float(configured), remaining)
    parts = {}
    for name in ("connect", "read", "write", "pool"):
        value = getattr(configured, name, None)
        parts[name] = remaining if value is None else min(value, remaining)
    return type(configured)(**parts)


def sent_header_values(
    client: BaseClient[Any, Any], options: FinalRequestOptions, built: Sequence[object]
) -> list[object]:
    """The values of the headers a call sends: those of the request last built for it (``built``:
    credentials resolved per request included), the client's credentials (``auth_headers``, kept
    out of ``default_headers`` by newer SDKs, and the key itself), its default headers and the
    request's own. Read only when an error is recorded."""
    values: list[object] = [getattr(client, "api_key", None)]
    sources = (
        *built,
        getattr(client, "auth_headers", None),
        client.default_headers,
        options.headers,
    )
    for source in sources:
        if isinstance(source, Mapping):
            values.extend(source.values())
    return [value for value in values if isinstance(value, str) and value]
