"""The parsed body behind whatever the SDK's ``request`` returned, read without consuming
anything the caller will read."""

from __future__ import annotations

from typing import Any

from openai import BaseModel
from openai._legacy_response import LegacyAPIResponse

__all__ = ["parsed_body"]

_models: dict[type, bool] = {}
"""Per result type, whether it is an SDK model: the check goes through ``ABCMeta`` (pydantic's
metaclass), a Python-level call, while result types are few."""
_MAX_TYPES = 256


def parsed_body(result: object) -> object | None:
    """The parsed model (or JSON) behind an SDK result, or ``None``.

    A raw response's ``parse()`` also runs the caller's strict validation (``parse()`` with a
    ``response_format`` model, ``LengthFinishReasonError``, ...). Its failure is the caller's, not
    an internal error of ours: it is not logged or raised here, nothing is cached, so their own
    ``parse()`` raises it again; the span still gets the body's ids and usage, read as JSON.
    """
    cls = type(result)
    model = _models.get(cls)
    if model is None:
        if len(_models) >= _MAX_TYPES:
            _models.clear()
        model = _models[cls] = isinstance(result, BaseModel)
    if model:
        return result
    if isinstance(result, LegacyAPIResponse) and not getattr(result, "_stream", False):
        try:
            # parse() caches, so the caller's own parse() gets this same object for free.
            parsed: object = result.parse()
        except Exception:
            return _body_json(result)
        return parsed
    return None


def _body_json(result: LegacyAPIResponse[Any]) -> object | None:
    try:
        body: object = result.http_response.json()
    except Exception:  # not JSON either: the caller's parse() will say so
        return None
    return body
