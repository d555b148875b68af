"""A small valid instance of a JSON schema: what structured output and tool arguments answer.

The real API guarantees (in strict mode) that the content matches the schema the caller sent; a
fake that answers text instead makes ``parse()`` fail, and one that answers ``{}`` makes a caller's
model fail its own validation. So the answer is built from the schema itself: every required
property, the shortest array its bounds allow, the first enum value, the first ``anyOf`` branch
that is not ``null``, references followed. Deterministic, so tests can assert on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["instance_of"]

_MAX_DEPTH = 32
"""Deeper than any sane schema: a recursive one (a tree of nodes) stops with an empty value."""

_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "duration": "P1D",
    "email": "user@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri": "https://example.com/",
}


def instance_of(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A minimal value valid for ``schema``; ``root`` is where ``#/...`` references resolve
    (the schema itself by default)."""
    root = schema if root is None else root
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None if depth > _MAX_DEPTH else {}
    if "$ref" in schema:
        return instance_of(_resolve(str(schema["$ref"]), root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return instance_of(_preferred(branches), root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(str(part["$ref"]), root) if "$ref" in part else part)
        return instance_of(merged, root, depth + 1)
    if "default" in schema:
        return schema["default"]
    return _typed(schema, _type_of(schema), root, depth)


def _resolve(ref: str, root: Any) -> Any:
    """A local reference (``#/$defs/Name``, ``#/definitions/Name``, ``#``)."""
    if not ref.startswith("#"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    node = root
    for part in ref[1:].strip("/").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _preferred(branches: list[Any]) -> Any:
    """The first branch that is not ``null``: an answer that fills a nullable field says more."""
    for branch in branches:
        if not (isinstance(branch, Mapping) and branch.get("type") == "null"):
            return branch
    return branches[0]


def _type_of(schema: Mapping[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        types = [t for t in declared if t != "null"] or ["null"]
        return str(types[0])
    if isinstance(declared, str):
        return declared
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "object"


def _typed(schema: Mapping[str, Any], kind: str, root: Any, depth: int) -> Any:
    if kind == "object":
        properties = schema.get("properties") or {}
        required = schema.get("required")
        names = list(properties) if required is None else list(required)
        return {name: instance_of(properties.get(name, {}), root, depth + 1) for name in names}
    if kind == "array":
        count = int(schema.get("minItems", 0))
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [instance_of(item, root, depth + 1) for item in prefix]
        return [instance_of(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind == "string":
        return _string(schema)
    if kind in ("number", "integer"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    return None


def _string(schema: Mapping[str, Any]) -> str:
    text = _FORMATS.get(str(schema.get("format")), "")
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    text = text + "x" * max(0, low - len(text))
    return text[: int(high)] if high is not None else text


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    value: float = 0
    if "minimum" in schema:
        value = max(value, schema["minimum"]) if "maximum" not in schema else schema["minimum"]
    if "exclusiveMinimum" in schema:
        value = max(value, schema["exclusiveMinimum"] + 1)
    if "maximum" in schema and value > schema["maximum"]:
        value = schema["maximum"]
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        value = schema["exclusiveMaximum"] - 1
    multiple = schema.get("multipleOf")
    if multiple and value % multiple:
        value = (value // multiple + 1) * multiple
    return int(value) if integer else value
