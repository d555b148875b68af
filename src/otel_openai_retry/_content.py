"""Whether prompts and completions go into telemetry: off unless the user turns it on.

Content is often personal data. The readers that turn messages into the conventions' JSON live
with each operation (``_operations``) and run only when this says yes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["CAPTURE_ENV_VAR", "capture_enabled"]

CAPTURE_ENV_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

_CAPTURE_ON_SPANS = frozenset({"true", "span_only", "span_and_event"})


def capture_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """As the OpenTelemetry GenAI instrumentations read it: ``true`` (their older boolean) or a
    mode that puts content on spans (``span_only``, ``span_and_event``), in any case. Every other
    value is off, as there: the variable is shared with them, so a value they accept must not
    fail the application here. Content goes on spans only (no events), so ``event_only`` is off."""
    env = os.environ if environ is None else environ
    return env.get(CAPTURE_ENV_VAR, "").strip().lower() in _CAPTURE_ON_SPANS
