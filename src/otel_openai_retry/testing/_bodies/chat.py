"""``POST /v1/chat/completions``: the completion object, or its chunks when streamed."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .estimate import completion_tokens, prompt_tokens
from .reply import Reply, chat_schema, chat_tools, decide_reply
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
    reply: Reply
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


def _chat(body: Mapping[str, Any], sized: bool, forced: str | None) -> _Chat:
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
    reply = _reply(body, messages, user_texts[-1] if user_texts else "", forced)
    said = reply.text if reply.text is not None else reply.tool_calls[0].arguments
    return _Chat(
        id=new_id("chatcmpl-"),
        created=int(time.time()),
        model=model,
        n=n,
        reply=reply,
        prompt_tokens=prompt_tokens(body) if sized else max(1, sum(words(t) for t in texts)),
        completion_tokens=completion_tokens(body) if sized else n * max(1, words(said)),
    )


def _reply(
    body: Mapping[str, Any], messages: list[Any], user_text: str, forced: str | None
) -> Reply:
    last = messages[-1]
    answered = (
        text_of(last.get("content"))
        if isinstance(last, Mapping) and last.get("role") == "tool"
        else None
    )
    schema = chat_schema(body)
    return decide_reply(
        user_text=user_text,
        tools=chat_tools(body),
        tool_choice=body.get("tool_choice"),
        answered=answered,
        schema=schema,
        forced=forced,
    )


def _message(reply: Reply) -> JSON:
    message: JSON = {
        "role": "assistant",
        "content": reply.text,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in reply.tool_calls
        ]
    return message


def chat_completion(
    body: Mapping[str, Any], *, sized: bool = False, reply: str | None = None
) -> JSON:
    """With ``sized``, usage follows the request's size (see ``estimate``), else word counts;
    ``reply`` is the assistant's text, whatever the request asked for."""
    chat = _chat(body, sized, reply)
    return {
        "id": chat.id,
        "object": "chat.completion",
        "created": chat.created,
        "model": chat.model,
        "choices": [
            {
                "index": index,
                "message": _message(chat.reply),
                "logprobs": None,
                "finish_reason": chat.reply.finish_reason,
            }
            for index in range(chat.n)
        ],
        "usage": chat.usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def chat_completion_events(
    body: Mapping[str, Any], *, sized: bool = False, reply: str | None = None
) -> list[SSEEvent]:
    """Role chunk, one chunk per word (of the text, or of a tool call's arguments, streamed as
    OpenAI streams them: the call's id and name first, then its arguments in pieces), the finish
    chunk, then (if asked) the usage chunk."""
    chat = _chat(body, sized, reply)
    include_usage = wants_usage(body)

    def chunk(choices: list[JSON], usage: JSON | None = None) -> SSEEvent:
        return SSEEvent(json.dumps(chat.chunk(choices, with_usage_key=include_usage, usage=usage)))

    def choice(index: int, delta: JSON, finish_reason: str | None = None) -> JSON:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    indexes = range(chat.n)
    answer = chat.reply
    if answer.text is not None:
        events = [
            chunk([choice(i, {"role": "assistant", "content": "", "refusal": None})])
            for i in indexes
        ]
        events.extend(
            chunk([choice(i, {"content": piece})]) for piece in pieces(answer.text) for i in indexes
        )
    else:
        events = [chunk([choice(i, _first_call_delta(answer))]) for i in indexes]
        events.extend(
            chunk([choice(i, {"tool_calls": [{"index": number, "function": {"arguments": part}}]})])
            for number, call in enumerate(answer.tool_calls)
            for part in pieces(call.arguments)
            for i in indexes
        )
    events.extend(chunk([choice(i, {}, answer.finish_reason)]) for i in indexes)
    if include_usage:
        events.append(chunk([], usage=chat.usage))
    events.append(DONE)
    return events


def _first_call_delta(reply: Reply) -> JSON:
    """The assistant's role and each call's id and name, its arguments still empty."""
    return {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "index": number,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            for number, call in enumerate(reply.tool_calls)
        ],
    }
