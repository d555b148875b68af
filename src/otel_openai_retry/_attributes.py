"""Request and response → span attributes, as pure functions.

Dispatch is on the request path (as pydantic/logfire does), so a new SDK resource method needs no
code here: anything not listed in ``GENAI_OPERATIONS`` is still retried and traced, as
``{METHOD} {path}`` without GenAI attributes. Nothing here ever reads a header value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.util.types import AttributeValue

from ._routes import route_template

__all__ = [
    "GENAI_OPERATIONS",
    "RequestInfo",
    "ResponseFields",
    "describe_request",
    "response_fields",
    "usage_tokens",
]

GENAI_OPERATIONS: Mapping[str, str] = {
    "/chat/completions": "chat",
    "/completions": "text_completion",
    "/embeddings": "embeddings",
    "/responses": "chat",
}
"""Request path → ``gen_ai.operation.name``."""

_NUMERIC_PARAMS: tuple[tuple[str, str], ...] = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("max_output_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
)

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the logical span and the metrics know before the first attempt."""

    span_name: str
    operation: str | None
    """``gen_ai.operation.name``, or ``None`` for endpoints without GenAI meaning."""
    attributes: dict[str, AttributeValue]
    metric_attributes: dict[str, AttributeValue]
    """The low-cardinality subset allowed on metrics."""


def describe_request(
    *,
    method: str,
    url: str,
    json_data: object,
    provider: str,
    host: str | None,
    port: int | None,
    scheme: str | None,
    stream: bool,
) -> RequestInfo:
    """Name and attributes of the logical span for one SDK request."""
    operation = GENAI_OPERATIONS.get(_endpoint_path(url))
    attributes: dict[str, AttributeValue] = {}
    metric_attributes: dict[str, AttributeValue] = {}
    if host:
        attributes["server.address"] = host
        metric_attributes["server.address"] = host
        resolved_port = port if port is not None else _DEFAULT_PORTS.get(scheme or "")
        if resolved_port is not None:
            attributes["server.port"] = resolved_port
    if operation is None:
        return RequestInfo(
            f"{method.upper()} {route_template(url)}", None, attributes, metric_attributes
        )

    # ``dict`` first: the SDK always sends one, and the ``Mapping`` ABC check costs microseconds.
    body: Mapping[str, Any] = json_data if isinstance(json_data, (dict, Mapping)) else {}
    model = body.get("model")
    genai: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
    }
    if isinstance(model, str) and model:
        genai["gen_ai.request.model"] = model
    metric_attributes.update(genai)
    attributes.update(genai)
    for key, attribute in _NUMERIC_PARAMS:
        value = body.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[attribute] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = (stop,)
    elif isinstance(stop, Sequence) and stop and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = tuple(stop)
    if stream:
        attributes["gen_ai.request.stream"] = True
    name = f"{operation} {model}" if isinstance(model, str) and model else operation
    return RequestInfo(name, operation, attributes, metric_attributes)


def _endpoint_path(url: str) -> str:
    """The SDK passes paths relative to the base URL (``/chat/completions``); tolerate more."""
    path = url.split("?", 1)[0].rstrip("/")
    if path.startswith("/"):
        return path
    return "/" + path.split("://", 1)[-1].split("/", 1)[-1] if "://" in path else "/" + path


@dataclass(slots=True)
class ResponseFields:
    """What a parsed response says about itself: span attributes and token counts."""

    response_id: str | None
    model: str | None
    finish_reasons: tuple[str, ...]
    input_tokens: int | None
    output_tokens: int | None

    def attributes(self) -> dict[str, AttributeValue]:
        """``gen_ai.response.*`` and ``gen_ai.usage.*``, for the fields present."""
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
        return attributes


def _fields(model: object) -> Mapping[str, Any]:
    """A pydantic model's field values without ``getattr``: a missing attribute on an SDK model
    goes through pydantic's ``__getattr__``, which raises and catches (a few µs each)."""
    if isinstance(model, dict):  # an undeclared nested object stays a dict
        return model
    fields = getattr(model, "__dict__", None)
    if not isinstance(fields, dict):  # (dict, not the Mapping ABC: its check costs µs)
        return {}
    extra = getattr(model, "__pydantic_extra__", None)  # fields the model does not declare
    return {**extra, **fields} if extra else fields


def response_fields(result: object) -> ResponseFields:
    """Read a parsed OpenAI model (chat, completion, embeddings, Responses) once."""
    fields = _fields(result)
    response_id = fields.get("id")
    model = fields.get("model")
    input_tokens, output_tokens = usage_tokens(fields.get("usage"))
    return ResponseFields(
        response_id if isinstance(response_id, str) else None,
        model if isinstance(model, str) else None,
        _finish_reasons(fields),
        input_tokens,
        output_tokens,
    )


def usage_tokens(usage: object) -> tuple[int | None, int | None]:
    """(input, output) tokens from Chat/Completions (``prompt_tokens``) or Responses usage."""
    if usage is None:
        return None, None
    fields = _fields(usage)
    input_tokens = fields.get("input_tokens")
    if input_tokens is None:
        input_tokens = fields.get("prompt_tokens")
    output_tokens = fields.get("output_tokens")
    if output_tokens is None:
        output_tokens = fields.get("completion_tokens")
    return _token_count(input_tokens), _token_count(output_tokens)


_MAX_COUNT = 2**63
"""OTLP's ``int64``: one count at or above it (``2**64`` from a hostile server) makes the OTLP
encoder refuse the whole metrics batch (every library's metrics, through the exemplar's
``as_int``) and drops the span attribute."""


def _token_count(value: object) -> int | None:
    """A token count as the server reported it, if it is one: an ``int`` (not a ``bool``) in
    ``[0, 2**63)``; anything else is not recorded at all."""
    if type(value) is int and 0 <= value < _MAX_COUNT:  # ``type``: bools and int subclasses out
        return value
    return None


def _finish_reasons(fields: Mapping[str, Any]) -> tuple[str, ...]:
    choices = fields.get("choices")
    if isinstance(choices, (list, Sequence)):
        return tuple(
            reason
            for choice in choices
            if isinstance(reason := _fields(choice).get("finish_reason"), str)
        )
    if fields.get("object") == "response":
        status = fields.get("status")
        details = fields.get("incomplete_details")
        reason = _fields(details).get("reason") if details is not None else None
        if isinstance(reason, str):
            return (reason,)
        if status == "completed":
            return ("stop",)
        if isinstance(status, str):
            return (status,)
    return ()
