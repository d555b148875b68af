"""What each attempt of a call is sent with: how many attempts, the timeout left, and which
header values it carries (to keep them out of telemetry)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from copy import copy
from typing import Any

import pydantic
from openai._base_client import BaseClient
from openai._constants import DEFAULT_MAX_RETRIES
from openai._models import FinalRequestOptions

from ._explicit_retries import is_explicit
from ._strategies import Strategies

__all__ = ["cap_timeout", "max_attempts", "options_with", "sent_header_values"]

_PYDANTIC_SLOTS = (
    "__dict__",
    "__pydantic_fields_set__",
    "__pydantic_extra__",
    "__pydantic_private__",
)
_DIRECT_COPY = (
    getattr(pydantic.BaseModel, "__slots__", None) == _PYDANTIC_SLOTS
    and FinalRequestOptions.model_copy is pydantic.BaseModel.model_copy
    and FinalRequestOptions.__copy__ is pydantic.BaseModel.__copy__
    and FinalRequestOptions.model_config.get("extra") != "allow"
)
"""Whether the SDK's options are a pydantic 2 model whose shallow copy is exactly its four slots,
copied (``BaseModel.__copy__``), and an update exactly its ``__dict__`` and fields set updated."""
_set = object.__setattr__


def options_with(options: FinalRequestOptions, update: dict[str, Any]) -> FinalRequestOptions:
    """``options.model_copy(update=update)``, made directly where that is what it does (see
    ``_DIRECT_COPY``): once per attempt, pydantic's generic path costs half as much again."""
    if (
        not _DIRECT_COPY
        or type(options) is not FinalRequestOptions
        or getattr(options, "__pydantic_private__", None) is not None
    ):
        return options.model_copy(update=update)
    copied = FinalRequestOptions.__new__(FinalRequestOptions)
    _set(copied, "__dict__", {**options.__dict__, **update})
    _set(copied, "__pydantic_extra__", copy(options.__pydantic_extra__))
    fields_set = copy(options.__pydantic_fields_set__)
    fields_set.update(update)
    _set(copied, "__pydantic_fields_set__", fields_set)
    _set(copied, "__pydantic_private__", None)
    return copied


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
