"""What every operation's readers share: reading SDK models cheaply and safely, and the one
value every reader produces (:class:`ResponseFields`), so plain calls and streams end the same way.

Nothing here ever reads a header value. Counts from the server are recorded only when they are
real ``int`` counts that OTLP can carry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from opentelemetry.util.types import AttributeValue

__all__ = [
    "NUMERIC_PARAMS",
    "ResponseFields",
    "choice_index",
    "fields_of",
    "read_common",
    "read_usage",
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


_NO_DETAILS: Mapping[str, Any] = MappingProxyType({})
"""Usage details not reported."""


@dataclass(slots=True)
class ResponseFields:
    """What a response says about itself, from a parsed body or from a stream's chunks."""

    response_id: str | None = None
    model: str | None = None
    finish_reasons: tuple[str, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    service_tier: str | None = None
    system_fingerprint: str | None = None
    input_details: Mapping[str, Any] | None = None
    """``prompt_tokens_details`` / ``input_tokens_details``: the modality split, if any."""
    output_details: Mapping[str, Any] | None = None

    def attributes(self) -> dict[str, AttributeValue]:
        """``gen_ai.response.*``, ``gen_ai.usage.*`` and ``openai.response.*``, for the fields
        present (a cache or reasoning count of zero says nothing and is left out)."""
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
        if self.cache_read_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = self.cache_read_tokens
        if self.cache_write_tokens:
            attributes["gen_ai.usage.cache_write.input_tokens"] = self.cache_write_tokens
        if self.reasoning_tokens:
            attributes["gen_ai.usage.reasoning.output_tokens"] = self.reasoning_tokens
        if self.service_tier is not None:
            attributes["openai.response.service_tier"] = self.service_tier
        if self.system_fingerprint is not None:
            attributes["openai.response.system_fingerprint"] = self.system_fingerprint
        return attributes

    def usage_by_modality(self) -> tuple[tuple[str, str, int], ...]:
        """``(direction, modality, tokens)`` for the input and output counts reported: split by
        modality where the usage details add up to the total, else all of it ``unknown``, as the
        conventions ask when the provider does not break usage down."""
        found: list[tuple[str, str, int]] = []
        for direction, total, details in (
            ("input", self.input_tokens, self.input_details or _NO_DETAILS),
            ("output", self.output_tokens, self.output_details or _NO_DETAILS),
        ):
            if total is None:
                continue
            split = [
                (modality, count)
                for modality in _MODALITIES
                if (count := token_count(details.get(f"{modality}_tokens")))
            ]
            if split and sum(count for _, count in split) == total:
                found.extend((direction, modality, count) for modality, count in split)
            else:
                found.append((direction, "unknown", total))
        return tuple(found)


_MODALITIES = ("text", "audio", "image")


def request_parameters(
    body: Mapping[str, Any], keys: tuple[tuple[str, str], ...]
) -> dict[str, AttributeValue]:
    """The numeric ``gen_ai.request.*`` attributes among ``keys``, the stop sequences and the
    service tier asked for."""
    # ``in`` before reading: a body holds few of these keys, and a test costs less than a call.
    attributes: dict[str, AttributeValue] = {}
    for key, attribute in keys:
        if key in body:
            value = body[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attributes[attribute] = value
    if "service_tier" in body:
        tier = body["service_tier"]
        if isinstance(tier, str) and tier != "auto":  # ``auto`` says nothing: conventions skip it
            attributes["openai.request.service_tier"] = tier
    if "stop" in body:
        stop = body["stop"]
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
    """``id``, ``model``, ``usage``, ``service_tier`` and ``system_fingerprint``: the same keys
    in every OpenAI response body that has them."""
    response_id = fields.get("id")
    if isinstance(response_id, str):
        into.response_id = response_id
    model = fields.get("model")
    if isinstance(model, str):
        into.model = model
    tier = fields.get("service_tier")
    if isinstance(tier, str):
        into.service_tier = tier
    fingerprint = fields.get("system_fingerprint")
    if isinstance(fingerprint, str):
        into.system_fingerprint = fingerprint
    usage = fields.get("usage")
    if usage is not None:
        read_usage(fields_of(usage), into)
    return into


def read_usage(usage: Mapping[str, Any], into: ResponseFields) -> None:
    """Chat and Completions (``prompt_tokens``, ``prompt_tokens_details``...) or Responses
    (``input_tokens``, ``input_tokens_details``...) usage; counts only where they are counts."""
    input_tokens, output_tokens = _usage_counts(usage)
    if input_tokens is not None:
        into.input_tokens = input_tokens
    if output_tokens is not None:
        into.output_tokens = output_tokens
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    if details is not None:
        found = fields_of(details)
        into.input_details = found
        cached = token_count(found.get("cached_tokens"))
        if cached is not None:
            into.cache_read_tokens = cached
        written = token_count(found.get("cache_write_tokens"))
        if written is not None:
            into.cache_write_tokens = written
    details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    if details is not None:
        found = fields_of(details)
        into.output_details = found
        reasoning = token_count(found.get("reasoning_tokens"))
        if reasoning is not None:
            into.reasoning_tokens = reasoning


def usage_tokens(usage: object) -> tuple[int | None, int | None]:
    """(input, output) tokens from Chat/Completions (``prompt_tokens``) or Responses usage."""
    if usage is None:
        return None, None
    return _usage_counts(fields_of(usage))


def _usage_counts(fields: Mapping[str, Any]) -> tuple[int | None, int | None]:
    input_tokens = fields.get("input_tokens")
    if input_tokens is None:
        input_tokens = fields.get("prompt_tokens")
    output_tokens = fields.get("output_tokens")
    if output_tokens is None:
        output_tokens = fields.get("completion_tokens")
    # ``token_count``, inline: every response has both
    if not (type(input_tokens) is int and 0 <= input_tokens < _MAX_COUNT):
        input_tokens = None
    if not (type(output_tokens) is int and 0 <= output_tokens < _MAX_COUNT):
        output_tokens = None
    return input_tokens, output_tokens


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
