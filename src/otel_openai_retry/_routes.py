"""The route template of a request path: ``/files/file-abc123?purpose=x`` → ``/files/{file_id}``.

Span names must be low-cardinality (OpenTelemetry's naming rules): a resource id or a query string
in a name makes every call its own operation in Jaeger and Tempo. The SDK interpolates ids into the
path before ``request`` sees it, so the template is rebuilt here: a segment that follows a
collection is that collection's id, named as the SDK's own templates name it; any other segment
that is not a plain lowercase word is an id too. Only endpoints without GenAI meaning (files,
batches, models, ...) come here; the GenAI ones are named after their operation and model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["route_template"]

_ID_AFTER: Mapping[str, str] = {
    "admin_api_keys": "key_id",
    "agents": "agent_id",
    "alerts": "id",
    "assistants": "assistant_id",
    "automations": "automation_id",
    "batches": "batch_id",
    "calls": "call_id",
    "cases": "id",
    "certificates": "certificate_id",
    "characters": "character_id",
    "completions": "completion_id",
    "containers": "container_id",
    "conversations": "conversation_id",
    "environments": "environment_id",
    "evals": "eval_id",
    "external_keys": "external_key_id",
    "files": "file_id",
    "groups": "group_id",
    "invites": "invite_id",
    "items": "item_id",
    "jobs": "fine_tuning_job_id",
    "messages": "message_id",
    "models": "model",
    "output_items": "output_item_id",
    "parts": "part_id",
    "projects": "project_id",
    "responses": "response_id",
    "roles": "role_id",
    "runs": "run_id",
    "service_accounts": "service_account_id",
    "sessions": "session_id",
    "skills": "skill_id",
    "spend_alerts": "alert_id",
    "steps": "step_id",
    "threads": "thread_id",
    "turns": "turn_id",
    "uploads": "upload_id",
    "users": "user_id",
    "vaults": "vault_id",
    "vector_stores": "vector_store_id",
    "versions": "version",
    "videos": "video_id",
    "voice_consents": "consent_id",
    "voices": "voice_id",
    "webhook_endpoints": "webhook_endpoint_id",
    "file_batches": "batch_id",
    "checkpoints": "checkpoint_id",
    "api_keys": "key_id",
}
"""Collection → the name the SDK's path templates give the id that follows it."""

_STATIC = frozenset(
    {
        "accept", "activate", "archive", "artifacts", "attach", "audio", "cancel", "chat",
        "chatkit", "complete", "content", "credentials", "data_retention", "deactivate", "events",
        "fine_tuning", "fork", "hangup", "hosted_tool_permissions", "input_items", "live",
        "model_permissions", "organization", "pause", "permissions", "rate_limits", "realtime",
        "refer", "reject", "remix", "resume", "safety", "search", "service_tier_settings",
        "spend_limit", "subagents", "submit_tool_outputs", "test", "traces", "validate",
        "invocations", "speech", "transcriptions", "translations", "generations", "edits",
        "variations", "moderations", "embeddings", "images", "usage", "costs", "audit_logs",
    }
    | set(_ID_AFTER)
)  # fmt: skip
"""Fixed words of the API's paths: never taken for an id, even after a collection."""

_WORD = re.compile(r"[a-z][a-z_]*\Z|v[0-9]+\Z")


def route_template(url: str) -> str:
    """The path without its query, with every id replaced by ``{name}``."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:  # an absolute URL: keep only its path
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    segments = path.strip("/").split("/")
    previous = ""
    for i, segment in enumerate(segments):
        if not segment:
            continue
        if segment in _STATIC:
            previous = segment
            continue
        named = _ID_AFTER.get(previous)
        if named is not None:
            segments[i] = "{" + named + "}"
        elif _WORD.match(segment) is None:
            segments[i] = "{id}"
        previous = segment
    return "/" + "/".join(segments)
