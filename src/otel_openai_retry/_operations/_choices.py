"""Chat Completions and legacy Completions: responses made of indexed ``choices``.

The two share everything but where a choice keeps its text (``message.content`` / ``delta.content``
for chat, ``text`` for completions) and where the request keeps its prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.util.types import AttributeValue

from ._fields import (
    NUMERIC_PARAMS,
    ResponseFields,
    choice_index,
    fields_of,
    read_common,
    read_usage,
    request_parameters,
)
from ._messages import JSON, assistant_messages, dumps, message

__all__ = [
    "ChoiceChunks",
    "chat_input_messages",
    "choice_output_messages",
    "choices_request",
    "choices_response",
    "completion_input_messages",
]


def choices_request(body: Mapping[str, Any]) -> dict[str, AttributeValue]:
    return request_parameters(body, NUMERIC_PARAMS)


def choices_response(result: object) -> ResponseFields:
    fields = fields_of(result)
    found = read_common(fields, ResponseFields())
    choices = fields.get("choices")
    if isinstance(choices, (list, Sequence)):
        reasons = []  # a loop, not a generator: one frame fewer per response
        for choice in choices:
            reason = fields_of(choice).get("finish_reason")
            if isinstance(reason, str):
                reasons.append(reason)
        found.finish_reasons = tuple(reasons)
    return found


def _choice_text(choice: object) -> object:
    """``message.content`` (chat), ``delta.content`` (a chat chunk), or ``text`` (completions)."""
    for holder in ("message", "delta"):
        inner = getattr(choice, holder, None)
        if inner is not None:
            return getattr(inner, "content", None)
    return getattr(choice, "text", None)


def choice_output_messages(result: object) -> str | None:
    choices = getattr(result, "choices", None)
    if not isinstance(choices, Sequence):
        return None
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for position, choice in enumerate(choices):
        index = choice_index(choice, position)
        text = _choice_text(choice)
        texts[index] = text if isinstance(text, str) else ""
        reason = getattr(choice, "finish_reason", None)
        if isinstance(reason, str):
            reasons[index] = reason
    return assistant_messages(texts, reasons)


def chat_input_messages(body: Mapping[str, Any]) -> str | None:
    raw = body.get("messages")
    if not isinstance(raw, Sequence):
        return None
    found: list[JSON] = [
        message(m.get("role", "user"), m.get("content")) for m in raw if isinstance(m, Mapping)
    ]
    return dumps(found)


def completion_input_messages(body: Mapping[str, Any]) -> str | None:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, Sequence):
        return None
    return dumps([message("user", p) for p in prompts if isinstance(p, str)])


_CHUNK_STRINGS = (
    ("id", "response_id"),
    ("model", "model"),
    ("service_tier", "service_tier"),
    ("system_fingerprint", "system_fingerprint"),
)
"""Chunk attribute → :class:`ResponseFields` field."""


class ChoiceChunks:
    """A stream of chat or completion chunks, summarised as they pass (text only when content
    is captured)."""

    __slots__ = ("_fields", "_reasons", "_seen", "_texts")

    def __init__(self, capture_content: bool) -> None:
        self._fields = ResponseFields()
        self._seen: set[int] = set()
        self._reasons: dict[int, str] = {}
        self._texts: dict[int, list[str]] | None = {} if capture_content else None

    def add(self, chunk: object) -> None:
        found = self._fields
        for name, field in _CHUNK_STRINGS:  # the first chunk that says it
            if getattr(found, field) is None:
                value = getattr(chunk, name, None)
                if isinstance(value, str):
                    setattr(found, field, value)
        texts = self._texts
        for position, choice in enumerate(getattr(chunk, "choices", None) or ()):
            index = choice_index(choice, position)
            self._seen.add(index)
            reason = getattr(choice, "finish_reason", None)
            if isinstance(reason, str):
                self._reasons[index] = reason
            if texts is not None:
                text = _choice_text(choice)
                if isinstance(text, str):
                    texts.setdefault(index, []).append(text)
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            read_usage(fields_of(usage), found)

    def fields(self, cut: bool = False) -> ResponseFields:
        reasons = self._reasons
        if cut:  # every choice that never finished: ``error``, as the conventions ask
            indexes = sorted(self._seen | set(reasons)) or [0]
            self._fields.finish_reasons = tuple(reasons.get(i, "error") for i in indexes)
        else:
            self._fields.finish_reasons = tuple(reasons[i] for i in sorted(reasons))
        return self._fields

    def output_messages(self) -> str | None:
        if self._texts is None:
            return None
        return assistant_messages(
            {i: "".join(parts) for i, parts in self._texts.items()}, self._reasons
        )
