"""``POST /v1/chat/completions``: the completion object, or its chunks when streamed."""

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
    text_of,
    wants_usage,
    words,
)

__all__ = ["chat_completion", "chat_completion_events"]


@dataclass(frozen=True)
class _Chat:
    id: str
    created: int
    model: str
    n: int
    reply: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def usage(self) -> JSON:
        return completion_usage(self.prompt_tokens, self.completion_tokens)

    def chunk(self, choices: list[JSON], *, with_usage_key: bool, usage: JSON | None) -> JSON:
        chunk: JSON = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if with_usage_key:
            chunk["usage"] = usage
        return chunk


def _chat(body: Mapping[str, Any], sized: bool) -> _Chat:
    model = require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array", param="messages")
    texts = [text_of(m.get("content")) for m in messages if isinstance(m, Mapping)]
    user_texts = [
        text_of(m.get("content"))
        for m in messages
        if isinstance(m, Mapping) and m.get("role") == "user"
    ]
    n = choices_count(body)
    reply = reply_to(user_texts[-1] if user_texts else "")
    return _Chat(
        id=new_id("chatcmpl-"),
        created=int(time.time()),
        model=model,
        n=n,
        reply=reply,
        prompt_tokens=prompt_tokens(body) if sized else max(1, sum(words(t) for t in texts)),
        completion_tokens=completion_tokens(body) if sized else n * words(reply),
    )


def chat_completion(body: Mapping[str, Any], *, sized: bool = False) -> JSON:
    """With ``sized``, usage follows the request's size (see ``estimate``), else word counts."""
    chat = _chat(body, sized)
    return {
        "id": chat.id,
        "object": "chat.completion",
        "created": chat.created,
        "model": chat.model,
        "choices": [
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    "content": chat.reply,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
            for index in range(chat.n)
        ],
        "usage": chat.usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def chat_completion_events(body: Mapping[str, Any], *, sized: bool = False) -> list[SSEEvent]:
    """Role chunk, one chunk per word, the finish chunk, then (if asked) the usage chunk."""
    chat = _chat(body, sized)
    include_usage = wants_usage(body)

    def chunk(choices: list[JSON], usage: JSON | None = None) -> SSEEvent:
        return SSEEvent(json.dumps(chat.chunk(choices, with_usage_key=include_usage, usage=usage)))

    def choice(index: int, delta: JSON, finish_reason: str | None = None) -> JSON:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    indexes = range(chat.n)
    events = [
        chunk([choice(i, {"role": "assistant", "content": "", "refusal": None})]) for i in indexes
    ]
    events.extend(
        chunk([choice(i, {"content": piece})]) for piece in pieces(chat.reply) for i in indexes
    )
    events.extend(chunk([choice(i, {}, "stop")]) for i in indexes)
    if include_usage:
        events.append(chunk([], usage=chat.usage))
    events.append(DONE)
    return events
