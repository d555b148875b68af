"""Embeddings: no choices, no output tokens, no messages, never streamed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.util.types import AttributeValue

from ._fields import ResponseFields, fields_of, read_common

__all__ = ["embeddings_request", "embeddings_response", "no_messages"]


def embeddings_request(body: Mapping[str, Any]) -> dict[str, AttributeValue]:
    return {}


def embeddings_response(result: object) -> ResponseFields:
    return read_common(fields_of(result), ResponseFields())


def no_messages(source: object) -> str | None:
    """The conventions record no input or output messages for embeddings."""
    return None
