"""Prompt and completion content as ``gen_ai.input.messages`` / ``gen_ai.output.messages`` JSON.

Off by default (content is often personal data); only called when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, so no serialization work is ever
done otherwise. The shape is the GenAI semantic conventions' message schema: role, parts, and
for output the finish reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CAPTURE_ENV_VAR",
    "capture_enabled",
    "choice_index",
    "input_messages",
    "output_messages",
    "text_output",
]

CAPTURE_ENV_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

JSON = dict[str, Any]

_CAPTURE_ON_SPANS = frozenset({"true", "span_only", "span_and_event"})


def capture_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """As the OpenTelemetry GenAI instrumentations read it: ``true`` (their older boolean) or a
    mode that puts content on spans (``span_only``, ``span_and_event``), in any case. Every other
    value is off, as there: the variable is shared with them, so a value they accept must not
    fail the application here. Content goes on spans only (no events), so ``event_only`` is off."""
    env = os.environ if environ is None else environ
    return env.get(CAPTURE_ENV_VAR, "").strip().lower() in _CAPTURE_ON_SPANS


def _parts(content: Any) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[JSON] = []
    if isinstance(content, Sequence):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            text = part.get("text")
            if isinstance(text, str):
                parts.append({"type": "text", "content": text})
            else:
                parts.append({"type": str(part.get("type", "unknown"))})
    return parts


def _dumps(messages: list[JSON]) -> str | None:
    return json.dumps(messages, ensure_ascii=False, default=str) if messages else None


def input_messages(operation: str | None, body: object) -> str | None:
    """The request's messages, or ``None`` when the endpoint has none."""
    if not isinstance(body, Mapping) or operation is None:
        return None
    messages: list[JSON] = []
    if isinstance(body.get("messages"), Sequence):  # chat completions
        for message in body["messages"]:
            if isinstance(message, Mapping):
                messages.append(
                    {
                        "role": str(message.get("role", "user")),
                        "parts": _parts(message.get("content")),
                    }
                )
    elif "input" in body and operation == "chat":  # responses
        raw = body["input"]
        if isinstance(raw, str):
            messages.append({"role": "user", "parts": _parts(raw)})
        elif isinstance(raw, Sequence):
            for item in raw:
                if isinstance(item, Mapping) and "role" in item:
                    messages.append(
                        {"role": str(item["role"]), "parts": _parts(item.get("content"))}
                    )
    elif "prompt" in body:  # text completions
        prompt = body["prompt"]
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if isinstance(prompts, Sequence):
            messages.extend(
                {"role": "user", "parts": _parts(p)} for p in prompts if isinstance(p, str)
            )
    return _dumps(messages)


def choice_index(choice: object, position: int) -> int:
    """A choice's ``index`` when it is a real int, else its position in ``choices``.

    The SDK builds stream chunks without validation, so a server can send ``"1"``, ``null`` or
    ``true``; keys of mixed types would make every later ``sorted()`` raise.
    """
    index = getattr(choice, "index", None)
    return index if type(index) is int else position


def _in_order(indexes: set[int]) -> list[int]:
    try:
        return sorted(indexes)
    except TypeError:  # a caller's keys of mixed types: their order is as good as any
        return list(indexes)


def text_output(texts: Mapping[int, str], reasons: Mapping[int, str]) -> str | None:
    """Assistant messages from text assembled per choice index (streams, completions)."""
    return _dumps(
        [
            {
                "role": "assistant",
                "parts": _parts(texts.get(index, "")),
                "finish_reason": reasons.get(index, ""),
            }
            for index in _in_order(set(texts) | set(reasons))
        ]
    )


def output_messages(result: object) -> str | None:
    """The completion's messages from a parsed SDK model."""
    choices = getattr(result, "choices", None)
    if isinstance(choices, Sequence):
        texts: dict[int, str] = {}
        reasons: dict[int, str] = {}
        for position, choice in enumerate(choices):
            index = choice_index(choice, position)
            message = getattr(choice, "message", None)
            text = getattr(message, "content", None) if message is not None else None
            if text is None:
                text = getattr(choice, "text", None)
            texts[index] = text if isinstance(text, str) else ""
            reason = getattr(choice, "finish_reason", None)
            if isinstance(reason, str):
                reasons[index] = reason
        return text_output(texts, reasons)
    output_text = getattr(result, "output_text", None)  # responses
    if isinstance(output_text, str):
        status = getattr(result, "status", None)
        return _dumps(
            [
                {
                    "role": "assistant",
                    "parts": _parts(output_text),
                    "finish_reason": "stop" if status == "completed" else str(status),
                }
            ]
        )
    return None
