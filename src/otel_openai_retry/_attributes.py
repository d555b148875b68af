"""What the logical span and the metrics know about a request before its first attempt.

The operation is looked up once here (see ``_operations``) and travels with the call, so the
response, stream and message readers are found without dispatching again. Nothing here ever
reads a header value.

Everything but the request's own parameters (``max_tokens``, ``temperature``...) is the same for
every call of one client to one operation and model: it is worked out once per such shape and
kept (bounded), so a call pays for a lookup and its parameters only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.util.types import AttributeValue

from ._operations import Operation, operation_for
from ._routes import route_template

__all__ = ["RequestInfo", "describe_request"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(slots=True)
class RequestInfo:
    """Made once per call: not frozen, as a frozen dataclass's ``__init__`` pays a call per
    field; nothing changes it but the observers' span attributes added before the span starts."""

    span_name: str
    operation: Operation | None
    """What the API operation means, or ``None`` for endpoints without GenAI meaning."""
    attributes: dict[str, AttributeValue]
    """The logical span's, this call's own (observers add theirs to it)."""
    metric_attributes: dict[str, AttributeValue]
    """The low-cardinality subset allowed on metrics; shared by the calls of one shape, so
    never changed (a measurement that needs more copies it)."""


@dataclass(frozen=True, slots=True)
class _Shape:
    """What every request of one method, path, server, stream flag and model has in common."""

    span_name: str
    operation: Operation | None
    head: dict[str, AttributeValue]
    """The span attributes before the request's parameters."""
    tail: dict[str, AttributeValue]
    """Those after them."""
    metric_attributes: dict[str, AttributeValue]


_shapes: dict[tuple[object, ...], _Shape] = {}
_MAX_SHAPES = 256
"""Models are the caller's to choose: an application cycling through many must not grow this."""


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
    # Only a plain JSON body with a string model (or none) is looked up: what the SDK sends.
    model = json_data.get("model") if type(json_data) is dict else _UNKNOWN
    key = (
        (method, url, provider, host, port, scheme, stream, model)
        if model is None or type(model) is str
        else None
    )
    shape = _shapes.get(key) if key is not None else None
    if shape is None:
        shape = _shape(method, url, json_data, provider, host, port, scheme, stream)
        if key is not None:
            if len(_shapes) >= _MAX_SHAPES:
                _shapes.clear()
            _shapes[key] = shape
    operation = shape.operation
    if operation is None:
        return RequestInfo(shape.span_name, None, dict(shape.head), shape.metric_attributes)
    body: Mapping[str, Any] = json_data if isinstance(json_data, (dict, Mapping)) else {}
    attributes = {**shape.head, **operation.request_attributes(body), **shape.tail}
    return RequestInfo(shape.span_name, operation, attributes, shape.metric_attributes)


_UNKNOWN = object()
"""A body that is not a plain dict: described afresh every call."""


def _shape(
    method: str,
    url: str,
    json_data: object,
    provider: str,
    host: str | None,
    port: int | None,
    scheme: str | None,
    stream: bool,
) -> _Shape:
    operation = operation_for(url)
    head: dict[str, AttributeValue] = {}
    metric_attributes: dict[str, AttributeValue] = {}
    if host:
        head["server.address"] = host
        metric_attributes["server.address"] = host
        resolved_port = port if port is not None else _DEFAULT_PORTS.get(scheme or "")
        if resolved_port is not None:
            head["server.port"] = resolved_port
    if operation is None:
        name = f"{method.upper()} {route_template(url)}"
        return _Shape(name, None, head, {}, metric_attributes)

    # ``dict`` first: the SDK always sends one, and the ``Mapping`` ABC check costs microseconds.
    body: Mapping[str, Any] = json_data if isinstance(json_data, (dict, Mapping)) else {}
    model = body.get("model")
    genai: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation.name,
        "gen_ai.provider.name": provider,
    }
    if isinstance(model, str) and model:
        genai["gen_ai.request.model"] = model
    metric_attributes.update(genai)
    head.update(genai)
    tail: dict[str, AttributeValue] = {}
    if operation.api_type is not None:
        tail["openai.api.type"] = operation.api_type
    if stream:
        tail["gen_ai.request.stream"] = True
    name = f"{operation.name} {model}" if isinstance(model, str) and model else operation.name
    return _Shape(name, operation, head, tail, metric_attributes)
