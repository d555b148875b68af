"""``POST /v1/responses``: the response object, or its numbered event sequence when streamed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .estimate import completion_tokens, prompt_tokens
from .reply import Reply, decide_reply, responses_schema, responses_tools
from .shared import (
    JSON,
    InvalidRequestError,
    SSEEvent,
    new_id,
    pieces,
    require_model,
    text_of,
    words,
)

__all__ = ["response", "response_events"]


def _response_texts(body: Mapping[str, Any]) -> tuple[str, int, str | None]:
    """(last user text, input token count, the tool result it ends with if it does) of a
    Responses ``input``."""
    raw = body.get("input")
    instructions = body.get("instructions")
    prompt_words = words(instructions) if isinstance(instructions, str) else 0
    if isinstance(raw, str):
        return raw, max(1, prompt_words + words(raw)), None
    if isinstance(raw, list):
        user_text = ""
        answered: str | None = None
        for item in raw:
            if not isinstance(item, Mapping):
                continue
            output = item.get("output") if item.get("type") == "function_call_output" else None
            text = text_of(item.get("content")) if output is None else text_of(output)
            prompt_words += words(text)
            answered = text if output is not None else None
            if item.get("role") == "user":
                user_text = text
        return user_text, max(1, prompt_words), answered
    if raw is None and instructions is not None:
        return "", max(1, prompt_words), None
    raise InvalidRequestError("'input' must be a string or an array", param="input")


@dataclass(frozen=True)
class _Response:
    id: str
    message_id: str
    created_at: int
    model: str
    reply: Reply
    input_tokens: int
    output_tokens: int
    request: Mapping[str, Any]

    @property
    def text(self) -> str:
        return self.reply.text or ""

    def item(self, *, done: bool) -> JSON:
        """The output item: the assistant's message, or its call to a function."""
        if self.reply.text is not None:
            return self.message(done=done)
        call = self.reply.tool_calls[0]
        return {
            "id": self.message_id,
            "type": "function_call",
            "status": "completed" if done else "in_progress",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments if done else "",
        }

    def message(self, *, done: bool) -> JSON:
        return {
            "id": self.message_id,
            "type": "message",
            "status": "completed" if done else "in_progress",
            "role": "assistant",
            "content": [self.text_part(done=True)] if done else [],
        }

    def text_part(self, *, done: bool) -> JSON:
        return {
            "type": "output_text",
            "text": self.text if done else "",
            "annotations": [],
            "logprobs": [],
        }

    @property
    def usage(self) -> JSON:
        output_tokens = self.output_tokens
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + output_tokens,
        }

    def snapshot(self, *, done: bool) -> JSON:
        """The response object: empty and in progress while streaming, full when completed."""
        req = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "completed" if done else "in_progress",
            "background": False,
            "completed_at": int(time.time()) if done else None,
            "error": None,
            "incomplete_details": None,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.model,
            "output": [self.item(done=True)] if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": req.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": req.get("store", True),
            "temperature": req.get("temperature", 1.0),
            "text": {"format": _text_format(req), "verbosity": "medium"},
            "tool_choice": req.get("tool_choice", "auto"),
            "tools": req.get("tools") or [],
            "top_logprobs": 0,
            "top_p": req.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": self.usage if done else None,
            "user": None,
            "metadata": req.get("metadata") or {},
        }


def _response(body: Mapping[str, Any], sized: bool, forced: str | None) -> _Response:
    model = require_model(body)
    user_text, input_tokens, answered = _response_texts(body)
    schema = responses_schema(body)
    reply = decide_reply(
        user_text=user_text,
        tools=responses_tools(body),
        tool_choice=body.get("tool_choice"),
        answered=answered,
        schema=schema,
        forced=forced,
    )
    said = reply.text if reply.text is not None else reply.tool_calls[0].arguments
    return _Response(
        id=new_id("resp_"),
        message_id=new_id("msg_" if reply.text is not None else "fc_"),
        created_at=int(time.time()),
        model=model,
        reply=reply,
        input_tokens=prompt_tokens(body) if sized else input_tokens,
        output_tokens=completion_tokens(body) if sized else max(1, words(said)),
        request=body,
    )


def response(body: Mapping[str, Any], *, sized: bool = False, reply: str | None = None) -> JSON:
    """With ``sized``, usage follows the request's size (see ``estimate``), else word counts;
    ``reply`` is the assistant's text, whatever the request asked for."""
    return _response(body, sized, reply).snapshot(done=True)


def response_events(
    body: Mapping[str, Any], *, sized: bool = False, reply: str | None = None
) -> list[SSEEvent]:
    """The Responses event sequence for one output item (a text message or a function call),
    numbered by ``sequence_number``."""
    resp = _response(body, sized, reply)

    def payloads() -> Iterator[JSON]:
        yield {"type": "response.created", "response": resp.snapshot(done=False)}
        yield {"type": "response.in_progress", "response": resp.snapshot(done=False)}
        yield {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": resp.item(done=False),
        }
        yield from _text_events(resp) if resp.reply.text is not None else _call_events(resp)
        yield {"type": "response.output_item.done", "output_index": 0, "item": resp.item(done=True)}
        yield {"type": "response.completed", "response": resp.snapshot(done=True)}

    return [
        SSEEvent(json.dumps({**payload, "sequence_number": number}), event=payload["type"])
        for number, payload in enumerate(payloads())
    ]


def _text_events(resp: _Response) -> Iterator[JSON]:
    where = {"item_id": resp.message_id, "output_index": 0, "content_index": 0}
    yield {"type": "response.content_part.added", **where, "part": resp.text_part(done=False)}
    for piece in pieces(resp.text):
        yield {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
    yield {"type": "response.output_text.done", **where, "text": resp.text, "logprobs": []}
    yield {"type": "response.content_part.done", **where, "part": resp.text_part(done=True)}


def _call_events(resp: _Response) -> Iterator[JSON]:
    where = {"item_id": resp.message_id, "output_index": 0}
    arguments = resp.reply.tool_calls[0].arguments
    for piece in pieces(arguments):
        yield {"type": "response.function_call_arguments.delta", **where, "delta": piece}
    yield {"type": "response.function_call_arguments.done", **where, "arguments": arguments}


def _text_format(request: Mapping[str, Any]) -> Any:
    """The request's ``text.format`` as the response echoes it (plain text by default)."""
    text = request.get("text")
    spec = text.get("format") if isinstance(text, Mapping) else None
    return spec if isinstance(spec, Mapping) else {"type": "text"}
