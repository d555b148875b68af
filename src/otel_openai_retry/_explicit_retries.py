"""Whether a client's ``max_retries`` was chosen by its caller or is the SDK's default.

A retry count the user (or a framework: pydantic-ai, litellm, llama-index) set on the client is
theirs and wins, 2 included; only a client built without one gets our policy. The SDK keeps no
record of the difference (its default is the number 2), so the public constructors and
``copy``/``with_options`` are wrapped to note it on the client. The outermost constructor decides:
``AzureOpenAI.__init__`` always passes ``max_retries`` on to ``OpenAI.__init__``, and ``copy``
always passes it on to the new client's constructor, so inner calls must not overrule them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
from openai._types import NotGiven

__all__ = ["EXPLICIT_ATTRIBUTE", "PUBLIC_CLIENTS", "copy_wrapper", "init_wrapper", "is_explicit"]

EXPLICIT_ATTRIBUTE = "_otel_openai_retry_explicit_max_retries"

PUBLIC_CLIENTS: tuple[type, ...] = (
    openai.OpenAI,
    openai.AsyncOpenAI,
    openai.AzureOpenAI,
    openai.AsyncAzureOpenAI,
)


def is_explicit(client: object) -> bool | None:
    """``True``/``False`` for a client built while instrumented; ``None`` for one built before."""
    value = getattr(client, "__dict__", {}).get(EXPLICIT_ATTRIBUTE)
    return value if isinstance(value, bool) else None


def init_wrapper(
    wrapped: Callable[..., None], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    fields = getattr(instance, "__dict__", None)
    if isinstance(fields, dict) and EXPLICIT_ATTRIBUTE not in fields:
        fields[EXPLICIT_ATTRIBUTE] = _given(kwargs.get("max_retries"))
    wrapped(*args, **kwargs)


def copy_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    copied = wrapped(*args, **kwargs)
    fields = getattr(copied, "__dict__", None)
    if isinstance(fields, dict):
        inherited = is_explicit(instance)
        if _given(kwargs.get("max_retries")):
            fields[EXPLICIT_ATTRIBUTE] = True
        elif inherited is None:  # the original predates us: judge the copy as we judge it
            fields.pop(EXPLICIT_ATTRIBUTE, None)
        else:
            fields[EXPLICIT_ATTRIBUTE] = inherited
    return copied


def _given(value: object) -> bool:
    return value is not None and not isinstance(value, NotGiven)
