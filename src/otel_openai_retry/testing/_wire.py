"""The JSON forms of :class:`Fault` and :class:`RecordedRequest` that the control API carries.

One module for both directions, so that the server process and whatever drives it cannot drift
apart: a value that goes through ``to_json`` and back through ``from_json`` compares equal to
the one that went in.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ._faults import Fault
from ._state import RecordedRequest

__all__ = ["fault_from_json", "fault_to_json", "record_from_json", "record_to_json"]

JSON = dict[str, Any]


def fault_to_json(fault: Fault) -> JSON:
    return dataclasses.asdict(fault) | {"headers": [list(pair) for pair in fault.headers]}


def fault_from_json(data: Mapping[str, Any]) -> Fault:
    """Raises ``TypeError`` or ``ValueError`` for what is not a fault, as ``Fault(...)`` does."""
    headers = data.get("headers", ())
    return Fault(**{**data, "headers": tuple((str(name), str(value)) for name, value in headers)})


def record_to_json(record: RecordedRequest) -> JSON:
    return {
        "method": record.method,
        "path": record.path,
        "headers": dict(record.headers),
        "body": record.body,
        "retry_count": record.retry_count,
        "fault": fault_to_json(record.fault),
        "received_at": record.received_at,
        "request_id": record.request_id,
        # Base64: a body is any bytes (an upload, a truncated JSON), and JSON carries only text.
        "raw_body": base64.b64encode(record.raw_body).decode("ascii"),
        "query": dict(record.query),
        "deployment": record.deployment,
        "api_version": record.api_version,
    }


def record_from_json(data: Mapping[str, Any]) -> RecordedRequest:
    return RecordedRequest(
        method=data["method"],
        path=data["path"],
        headers=MappingProxyType(dict(data["headers"])),
        body=data["body"],
        retry_count=data["retry_count"],
        fault=fault_from_json(data["fault"]),
        received_at=data["received_at"],
        request_id=data["request_id"],
        raw_body=base64.b64decode(data["raw_body"]),
        query=MappingProxyType(dict(data.get("query", {}))),
        deployment=data.get("deployment"),
        api_version=data.get("api_version"),
    )
