"""What every operation's readers share: reading SDK models cheaply and safely, and the one
value every reader produces (:class:`ResponseFields`), so plain calls and streams end the same way.

Nothing here ever reads a header value. Counts from the server are recorded only when they are
real ``int`` counts that OTLP can carry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.util.types import AttributeValue

__all__ = [
    "NUMERIC_PARAMS",
    "ResponseFields",
    "choice_index",
    "fields_of",
    "read_common",
    "request_parameters",
    "token_count",
    "usage_tokens",
]

NUMERIC_PARAMS: tuple[tuple[str, str], ...] = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("max_output_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
)
"""Request body key → ``gen_ai.request.*``; an operation's reader looks only for its own keys."""


@dataclass(slots=True)
class ResponseFields:
    """What a response says about itself, from a parsed body or from a stream's chunks."""

    response_id: str | None = None
    model: str | None = None
    finish_reasons: tuple[str, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None

    def attributes(self) -> dict[str, AttributeValue]:
        """``gen_ai.response.*`` and ``gen_ai.usage.*``, for the fields present."""
        attributes: dict[str, AttributeValue] = {}
        if self.response_id is not None:
            attributes["gen_ai.response.id"] = self.response_id
        if self.model is not None:
            attributes["gen_ai.response.model"] = self.model
        if self.finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = self.finish_reasons
        if self.input_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = self.input_tokens
        if self.output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = self.output_tokens
        return attributes


def request_parameters(
    body: Mapping[str, Any], keys: tuple[tuple[str, str], ...]
) -> dict[str, AttributeValue]:
    """The numeric ``gen_ai.request.*`` attributes among ``keys``, and the stop sequences."""
    attributes: dict[str, AttributeValue] = {}
    for key, attribute in keys:
        value = body.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[attribute] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = (stop,)
    elif isinstance(stop, Sequence) and stop and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = tuple(stop)
    return attributes


def fields_of(model: object) -> Mapping[str, Any]:
    """A pydantic model's field values without ``getattr``: a missing attribute on an SDK model
    goes through pydantic's ``__getattr__``, which raises and catches (a few µs each)."""
    if isinstance(model, dict):  # an undeclared nested object stays a dict
        return model
    fields = getattr(model, "__dict__", None)
    if not isinstance(fields, dict):  # (dict, not the Mapping ABC: its check costs µs)
        return {}
    extra = getattr(model, "__pydantic_extra__", None)  # fields the model does not declare
    return {**extra, **fields} if extra else fields


def read_common(fields: Mapping[str, Any], into: ResponseFields) -> ResponseFields:
    """``id``, ``model`` and ``usage``: the same keys in every OpenAI response body."""
    response_id = fields.get("id")
    if isinstance(response_id, str):
        into.response_id = response_id
    model = fields.get("model")
    if isinstance(model, str):
        into.model = model
    input_tokens, output_tokens = usage_tokens(fields.get("usage"))
    if input_tokens is not None:
        into.input_tokens = input_tokens
    if output_tokens is not None:
        into.output_tokens = output_tokens
    return into


def usage_tokens(usage: object) -> tuple[int | None, int | None]:
    """(input, output) tokens from Chat/Completions (``prompt_tokens``) or Responses usage."""
    if usage is None:
        return None, None
    fields = fields_of(usage)
    input_tokens = fields.get("input_tokens")
    if input_tokens is None:
        input_tokens = fields.get("prompt_tokens")
    output_tokens = fields.get("output_tokens")
    if output_tokens is None:
        output_tokens = fields.get("completion_tokens")
    return token_count(input_tokens), token_count(output_tokens)


_MAX_COUNT = 2**63
"""OTLP's ``int64``: one count at or above it (``2**64`` from a hostile server) makes the OTLP
encoder refuse the whole metrics batch (every library's metrics, through the exemplar's
``as_int``) and drops the span attribute."""


def token_count(value: object) -> int | None:
    """A token count as the server reported it, if it is one: an ``int`` (not a ``bool``) in
    ``[0, 2**63)``; anything else is not recorded at all."""
    if type(value) is int and 0 <= value < _MAX_COUNT:  # ``type``: bools and int subclasses out
        return value
    return None


def choice_index(choice: object, position: int) -> int:
    """A choice's ``index`` when it is a real int, else its position in ``choices``.

    The SDK builds stream chunks without validation, so a server can send ``"1"``, ``null`` or
    ``true``; keys of mixed types would make every later ``sorted()`` raise.
    """
    index = getattr(choice, "index", None)
    return index if type(index) is int else position
