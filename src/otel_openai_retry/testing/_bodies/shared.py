"""What every answer is built from: the JSON and SSE types, the error a bad body raises, and
the helpers that keep answers deterministic (the reply echoes the last user message, token counts
are word counts), so that tests can assert on them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DONE",
    "FINGERPRINT",
    "JSON",
    "InvalidRequestError",
    "SSEEvent",
    "choices_count",
    "completion_usage",
    "new_id",
    "pieces",
    "reply_to",
    "require_model",
    "text_of",
    "wants_usage",
    "words",
]

JSON = dict[str, Any]

FALLBACK_REPLY = "Hello from the fake OpenAI server."
FINGERPRINT = "fp_fake"


class InvalidRequestError(Exception):
    """The request body is unusable; the server answers 400 as the real API would."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event; ``data`` is already serialized (``[DONE]`` is not JSON)."""

    data: str
    event: str | None = None

    def encode(self) -> bytes:
        head = f"event: {self.event}\n" if self.event is not None else ""
        return f"{head}data: {self.data}\n\n".encode()


DONE = SSEEvent("[DONE]")
"""The Chat Completions and Completions stream terminator; the Responses API sends none."""


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def words(text: str) -> int:
    return len(text.split())


def pieces(text: str) -> list[str]:
    """Word-sized deltas that join back to ``text``, like tokens in a real stream."""
    return re.findall(r"\s*\S+", text) or [text]


def require_model(body: Mapping[str, Any]) -> str:
    value = body.get("model")
    if not isinstance(value, str) or not value:
        raise InvalidRequestError("you must provide a model parameter", param="model")
    return value


def choices_count(body: Mapping[str, Any]) -> int:
    n = body.get("n")
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidRequestError(f"{n!r} is less than the minimum of 1 - 'n'", param="n")
    return n


def wants_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def text_of(content: Any) -> str:
    """Text of a message's ``content``: a string, or a list of parts some of which hold text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def reply_to(user_text: str) -> str:
    user_text = " ".join(user_text.split())
    return f"Echo: {user_text}" if user_text else FALLBACK_REPLY


def completion_usage(prompt_tokens: int, completion_tokens: int) -> JSON:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
