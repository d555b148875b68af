"""What the logical span and the metrics know about a request before its first attempt.

The operation is looked up once here (see ``_operations``) and travels with the call, so the
response, stream and message readers are found without dispatching again. Nothing here ever
reads a header value.
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


@dataclass(frozen=True, slots=True)
class RequestInfo:
    span_name: str
    operation: Operation | None
    """What the API operation means, or ``None`` for endpoints without GenAI meaning."""
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
    operation = operation_for(url)
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
        "gen_ai.operation.name": operation.name,
        "gen_ai.provider.name": provider,
    }
    if isinstance(model, str) and model:
        genai["gen_ai.request.model"] = model
    metric_attributes.update(genai)
    attributes.update(genai)
    attributes.update(operation.request_attributes(body))
    if operation.api_type is not None:
        attributes["openai.api.type"] = operation.api_type
    if stream:
        attributes["gen_ai.request.stream"] = True
    name = f"{operation.name} {model}" if isinstance(model, str) and model else operation.name
    return RequestInfo(name, operation, attributes, metric_attributes)
