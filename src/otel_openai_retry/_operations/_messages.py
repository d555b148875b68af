"""Prompt and completion content in the GenAI conventions' message shape, as JSON.

Only reached when content capture is on (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``),
so no serialization work is ever done otherwise: :func:`dumps` is the one place JSON is made.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["JSON", "assistant_messages", "dumps", "message", "parts"]

JSON = dict[str, Any]


def parts(content: Any) -> list[JSON]:
    """A message's content as parts: a string is one text part; other parts keep their type."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    found: list[JSON] = []
    if isinstance(content, Sequence):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            text = part.get("text")
            if isinstance(text, str):
                found.append({"type": "text", "content": text})
            else:
                found.append({"type": str(part.get("type", "unknown"))})
    return found


def message(role: object, content: Any) -> JSON:
    return {"role": str(role), "parts": parts(content)}


def dumps(messages: list[JSON]) -> str | None:
    return json.dumps(messages, ensure_ascii=False, default=str) if messages else None


def _in_order(indexes: set[int]) -> list[int]:
    try:
        return sorted(indexes)
    except TypeError:  # keys of mixed types: their order is as good as any
        return list(indexes)


def assistant_messages(texts: Mapping[int, str], reasons: Mapping[int, str]) -> str | None:
    """One assistant message per choice index, from text assembled per index."""
    return dumps(
        [
            {
                "role": "assistant",
                "parts": parts(texts.get(index, "")),
                "finish_reason": reasons.get(index, ""),
            }
            for index in _in_order(set(texts) | set(reasons))
        ]
    )
