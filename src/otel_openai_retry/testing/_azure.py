"""Azure OpenAI's paths: ``/openai/deployments/{deployment}/chat/completions?api-version=...``.

``AzureOpenAI`` names the deployment in the path rather than the model in the body, and every
request carries ``api-version`` in its query; the newer ``/openai/v1/...`` paths take neither.
Each is mapped onto the ``/v1/...`` path the fake serves, so that one set of answers (and one
per-path script: ``path="/chat/completions"``) serves both clouds, and the journal records the
deployment and version the client sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Route", "azure_refusal", "route"]

_API_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2}(-preview)?|latest|preview)$")
"""What Azure accepts: a dated version (``2024-10-21``, ``2025-04-01-preview``), or the v1
API's ``latest`` and ``preview``."""

_DEPLOYMENTS = "/openai/deployments/"
_AZURE = "/openai/"
_AZURE_V1 = "/openai/v1/"


@dataclass(frozen=True)
class Route:
    """Where a request goes: the ``/v1`` path that answers it, and its Azure particulars."""

    api_path: str
    """``/v1/chat/completions`` for OpenAI's path and for each of Azure's."""
    deployment: str | None = None
    api_version: str | None = None
    azure: bool = False
    """An Azure path that needs ``api-version`` (every ``/openai/...`` one but ``/openai/v1``)."""


def route(path: str, query: Mapping[str, str]) -> Route:
    api_version = query.get("api-version")
    if path.startswith(_AZURE_V1):
        return Route("/v1/" + path[len(_AZURE_V1) :], api_version=api_version)
    if path.startswith(_DEPLOYMENTS):
        deployment, _, rest = path[len(_DEPLOYMENTS) :].partition("/")
        if deployment and rest:
            return Route("/v1/" + rest, deployment, api_version, azure=True)
    if path.startswith(_AZURE):
        return Route("/v1/" + path[len(_AZURE) :], api_version=api_version, azure=True)
    return Route(path, api_version=api_version)


def azure_refusal(route: Route) -> tuple[int, dict[str, Any]] | None:
    """Azure's own answer to a request without a usable ``api-version``, else ``None``: 404
    ``Resource not found`` when it is missing, 400 ``API version not supported`` when it is
    not a version, in Azure's error envelope (``code`` and ``message``, no ``type``)."""
    if not route.azure:
        return None
    if route.api_version is None:
        return 404, {"error": {"code": "404", "message": "Resource not found"}}
    if not _API_VERSION.match(route.api_version):
        return 400, {"error": {"code": "BadRequest", "message": "API version not supported"}}
    return None
