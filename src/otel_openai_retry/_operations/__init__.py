"""What each API operation means: one table entry per request path, looked up once per call.

An entry names the operation (``gen_ai.operation.name``) and gives its readers: request body →
``gen_ai.request.*`` attributes, parsed response → :class:`ResponseFields`, a reader for its stream
chunks, and the message readers used only when content capture is on. Adding an operation is one
entry here plus its readers; a path not in the table is still retried and traced, as
``{METHOD} {route}`` without GenAI attributes. Nothing here reads a header value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.util.types import AttributeValue

from ._choices import (
    ChoiceChunks,
    chat_input_messages,
    choice_output_messages,
    choices_request,
    choices_response,
    completion_input_messages,
)
from ._fields import ResponseFields, usage_tokens
from .embeddings import embeddings_request, embeddings_response, no_messages
from .responses import (
    ResponseEvents,
    response_input_messages,
    response_output_messages,
    responses_request,
    responses_response,
)

__all__ = [
    "OPERATIONS",
    "ChunkReader",
    "Operation",
    "ResponseFields",
    "operation_for",
    "request_path",
    "usage_tokens",
]


class ChunkReader(Protocol):
    """Summarises one stream's chunks as the caller reads them."""

    def add(self, chunk: object) -> None: ...

    def fields(self, cut: bool = False) -> ResponseFields:
        """What the chunks said; ``cut``: the stream ended before its last event."""
        ...

    def output_messages(self) -> str | None:
        """The streamed completion as messages; ``None`` unless content is captured."""
        ...


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    """``gen_ai.operation.name``."""
    api_type: str | None
    """``openai.api.type``, where the conventions name one."""
    inference: bool
    """Whether the conventions count it as inference (``gen_ai.client.inference.*`` metrics);
    embeddings keep ``gen_ai.client.operation.duration``."""
    request_attributes: Callable[[Mapping[str, Any]], dict[str, AttributeValue]]
    response_fields: Callable[[object], ResponseFields]
    chunk_reader: Callable[[bool], ChunkReader]
    """A reader for one stream; its argument says whether content is captured."""
    input_messages: Callable[[Mapping[str, Any]], str | None]
    output_messages: Callable[[object], str | None]


_CHAT = Operation(
    "chat",
    "chat_completions",
    True,
    choices_request,
    choices_response,
    ChoiceChunks,
    chat_input_messages,
    choice_output_messages,
)

OPERATIONS: Mapping[str, Operation] = {
    "/chat/completions": _CHAT,
    "/completions": Operation(
        "text_completion",
        None,
        True,
        choices_request,
        choices_response,
        ChoiceChunks,
        completion_input_messages,
        choice_output_messages,
    ),
    "/embeddings": Operation(
        "embeddings",
        None,
        False,
        embeddings_request,
        embeddings_response,
        ChoiceChunks,  # never streamed; a chunk reader all the same, for a server that does
        no_messages,
        no_messages,
    ),
    "/responses": Operation(
        "chat",
        "responses",
        True,
        responses_request,
        responses_response,
        ResponseEvents,
        response_input_messages,
        response_output_messages,
    ),
}
"""Request path (relative to the base URL) → what the operation means."""


def request_path(url: str) -> str:
    """The SDK passes paths relative to the base URL (``/chat/completions``); tolerate more."""
    path = url.split("?", 1)[0].rstrip("/")
    if path.startswith("/"):
        return path
    return "/" + path.split("://", 1)[-1].split("/", 1)[-1] if "://" in path else "/" + path


def operation_for(url: str) -> Operation | None:
    return OPERATIONS.get(request_path(url))
