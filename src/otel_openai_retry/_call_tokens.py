"""What an answer says a request cost in tokens, for token pacing: read only when the send
reserved tokens (its endpoint was pacing tokens)."""

from __future__ import annotations

from ._operations import usage_tokens
from ._operations._fields import fields_of
from ._results import parsed_body

__all__ = ["total_tokens", "used_tokens"]


def used_tokens(result: object) -> int | None:
    """Input plus output tokens of a parsed answer (Chat, Completions, Responses and Embeddings
    usage alike); ``None`` for a stream, whose usage comes later if at all."""
    parsed = parsed_body(result)
    if parsed is None:
        return None
    return total_tokens(*usage_tokens(fields_of(parsed).get("usage")))


def total_tokens(input_tokens: int | None, output_tokens: int | None) -> int | None:
    """What a request cost: its input and output tokens (``None`` when the usage says neither)."""
    if input_tokens is None and output_tokens is None:
        return None
    return (input_tokens or 0) + (output_tokens or 0)
