"""What a request costs in tokens, read from its body as OpenAI reads it before answering.

OpenAI charges a request against its tokens-per-minute limit at admission, before the model has
run: the prompt's characters / 4, plus the output the request allows (``max_tokens``,
``max_completion_tokens`` or ``max_output_tokens``) for each of its ``n`` choices. The server's
token limit charges this, and its size-following usage reports the same numbers, so that a client
that estimates the same way and corrects itself from usage sees a server it can model exactly.

Lenient on purpose: admission happens before the body is validated, so a body this cannot read
costs what could be read of it (an unreadable one, nothing) and the endpoint answers 400 later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .shared import text_of

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_COMPLETION_TOKENS",
    "completion_tokens",
    "output_allowance",
    "prompt_tokens",
    "request_tokens",
]

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_TOKENS = 16
"""Completion tokens per choice that size-following usage reports when a request sets no maximum:
small, so that a request's real cost stays close to its charge (which counts no output then)."""

_OUTPUT_LIMITS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _prompt_size(value: Any) -> tuple[int, int]:
    """(characters of text, tokens given as ids) in a prompt, an input or a list of messages."""
    if isinstance(value, str):
        return len(value), 0
    if not isinstance(value, list):
        return 0, 0
    if value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return 0, len(value)  # token ids: one token each, nothing to estimate
    chars = ids = 0
    for item in value:
        if isinstance(item, Mapping):  # a chat message or a Responses input item
            item_chars, item_ids = len(text_of(item.get("content"))), 0
        else:
            item_chars, item_ids = _prompt_size(item)
        chars += item_chars
        ids += item_ids
    return chars, ids


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """The prompt's estimate: chat ``messages``, completions ``prompt``, embeddings or Responses
    ``input`` (with Responses ``instructions``), characters / 4 rounded up, token ids counted."""
    chars = ids = 0
    for field in ("messages", "prompt", "input", "instructions"):
        field_chars, field_ids = _prompt_size(body.get(field))
        chars += field_chars
        ids += field_ids
    return math.ceil(chars / CHARS_PER_TOKEN) + ids


def _choices(body: Mapping[str, Any]) -> int:
    return _count(body.get("n")) or 1


def output_allowance(body: Mapping[str, Any]) -> int:
    """The output a request allows, over all its choices; 0 when it sets no maximum."""
    for field in _OUTPUT_LIMITS:
        limit = _count(body.get(field))
        if limit:
            return limit * _choices(body)
    return 0


def request_tokens(body: Any) -> int:
    """What the request is charged at admission: its prompt plus the output it allows."""
    if not isinstance(body, Mapping):
        return 0
    return prompt_tokens(body) + output_allowance(body)


def completion_tokens(body: Mapping[str, Any]) -> int:
    """Size-following usage's completion tokens: the output allowed, or a small default."""
    return output_allowance(body) or DEFAULT_COMPLETION_TOKENS * _choices(body)
