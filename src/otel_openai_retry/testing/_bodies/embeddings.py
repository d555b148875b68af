"""``POST /v1/embeddings``: deterministic unit vectors, as floats or base64 float32."""

from __future__ import annotations

import base64
import hashlib
import random
import struct
from collections.abc import Mapping
from typing import Any

from .estimate import prompt_tokens
from .shared import JSON, InvalidRequestError, require_model, words

__all__ = ["EMBEDDING_DIMENSIONS", "embeddings"]

EMBEDDING_DIMENSIONS = 8
"""Small on purpose: the vectors only have to parse, and tests should stay fast to read."""


def _embedding_inputs(body: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Each input as (seed text, token count); token-id arrays count one token per id."""
    raw = body.get("input")
    if isinstance(raw, str) and raw:
        return [(raw, max(1, words(raw)))]
    if isinstance(raw, list) and raw:
        if all(isinstance(t, int) for t in raw):
            return [(" ".join(map(str, raw)), len(raw))]
        items: list[tuple[str, int]] = []
        for item in raw:
            if isinstance(item, str) and item:
                items.append((item, max(1, words(item))))
            elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
                items.append((" ".join(map(str, item)), len(item)))
            else:
                break
        else:
            return items
    raise InvalidRequestError("'input' must be a non-empty string or array", param="input")


def _vector(text: str, dimensions: int) -> list[float]:
    """A unit vector seeded by the text, with float32 values.

    float32 so that the ``float`` and ``base64`` encodings carry exactly the same numbers.
    """
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    values = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def embeddings(body: Mapping[str, Any], *, sized: bool = False) -> JSON:
    """One embedding per input, as floats or as base64 float32 (the SDK asks for base64); with
    ``sized``, usage is the inputs' estimate (see ``estimate``), else their word counts."""
    model = require_model(body)
    inputs = _embedding_inputs(body)
    dimensions = body.get("dimensions", EMBEDDING_DIMENSIONS)
    if (
        not isinstance(dimensions, int)
        or isinstance(dimensions, bool)
        or not 1 <= dimensions <= 4096
    ):
        raise InvalidRequestError("'dimensions' must be an integer from 1", param="dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequestError(
            f"{encoding!r} is not one of ['float', 'base64'] - 'encoding_format'",
            param="encoding_format",
        )
    data: list[JSON] = []
    for index, (text, _) in enumerate(inputs):
        vector = _vector(text, dimensions)
        embedding: list[float] | str = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = prompt_tokens(body) if sized else sum(count for _, count in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
