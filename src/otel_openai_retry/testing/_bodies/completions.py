"""``POST /v1/completions`` (legacy): the text completion, or its chunks when streamed."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .estimate import completion_tokens, prompt_tokens
from .shared import (
    DONE,
    FINGERPRINT,
    JSON,
    InvalidRequestError,
    SSEEvent,
    choices_count,
    completion_usage,
    new_id,
    pieces,
    reply_to,
    require_model,
    wants_usage,
    words,
)

__all__ = ["completion", "completion_events"]


def _prompts(body: Mapping[str, Any]) -> list[str]:
    prompt = body.get("prompt", "<|endoftext|>")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) for t in prompt):
            return [" ".join(map(str, prompt))]
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, list) for p in prompt):
            return [" ".join(map(str, p)) for p in prompt]
    raise InvalidRequestError("'prompt' must be a string or an array", param="prompt")


@dataclass(frozen=True)
class _Completion:
    id: str
    created: int
    model: str
    replies: list[str]
    prompt_tokens: int
    completion_tokens: int

    @property
    def usage(self) -> JSON:
        return completion_usage(self.prompt_tokens, self.completion_tokens)

    def envelope(self, choices: list[JSON], usage: JSON | None) -> JSON:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            "usage": usage,
        }


def _completion(body: Mapping[str, Any], sized: bool) -> _Completion:
    model = require_model(body)
    prompts = _prompts(body)
    n = choices_count(body)
    # One choice per prompt and per `n`, in that order, as the real endpoint numbers them.
    replies = [reply_to(p) for p in prompts for _ in range(n)]
    return _Completion(
        id=new_id("cmpl-"),
        created=int(time.time()),
        model=model,
        replies=replies,
        prompt_tokens=prompt_tokens(body) if sized else max(1, sum(words(p) for p in prompts)),
        completion_tokens=completion_tokens(body) if sized else sum(words(r) for r in replies),
    )


def completion(body: Mapping[str, Any], *, sized: bool = False) -> JSON:
    """With ``sized``, usage follows the request's size (see ``estimate``), else word counts."""
    comp = _completion(body, sized)
    choices = [
        {"index": index, "text": reply, "logprobs": None, "finish_reason": "stop"}
        for index, reply in enumerate(comp.replies)
    ]
    return comp.envelope(choices, comp.usage)


def completion_events(body: Mapping[str, Any], *, sized: bool = False) -> list[SSEEvent]:
    comp = _completion(body, sized)
    include_usage = wants_usage(body)

    def chunk(choices: list[JSON], usage: JSON | None = None) -> SSEEvent:
        return SSEEvent(json.dumps(comp.envelope(choices, usage)))

    def choice(index: int, text: str, finish_reason: str | None = None) -> JSON:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}

    events: list[SSEEvent] = []
    for index, reply in enumerate(comp.replies):
        events.extend(chunk([choice(index, piece)]) for piece in pieces(reply))
        events.append(chunk([choice(index, "", "stop")]))
    if include_usage:
        events.append(chunk([], usage=comp.usage))
    events.append(DONE)
    return events
