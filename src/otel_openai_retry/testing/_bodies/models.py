"""``GET /v1/models`` and ``GET /v1/models/{id}``: a fixed catalogue."""

from __future__ import annotations

from .shared import JSON

__all__ = ["MODELS", "model", "model_list"]

MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small")
_MODELS_CREATED = 1_700_000_000


def model(model_id: str) -> JSON:
    return {
        "id": model_id,
        "object": "model",
        "created": _MODELS_CREATED,
        "owned_by": "openai",
    }


def model_list() -> JSON:
    return {"object": "list", "data": [model(model_id) for model_id in MODELS]}
