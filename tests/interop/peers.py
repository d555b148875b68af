"""Other OpenAI instrumentations, installed from PyPI into a directory of their own.

A peer's packages go into ``.cache/interop/<peer>/`` (once; later runs reuse it) and are put on
``PYTHONPATH`` only for the fresh process a test runs: their patches never reach the main suite's
process, and the project's own environment never gains them. Only the peer's own packages are
installed there (``--no-deps``): everything they need besides is already in the project's
environment, so the peer runs against exactly the OpenTelemetry and OpenAI versions ours does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PEERS", "Peer", "install"]

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "interop"


@dataclass(frozen=True)
class Peer:
    name: str
    packages: tuple[str, ...]
    span: tuple[str, str]
    """The name and the instrumentation scope of the peer's span for a chat call."""
    imports: str
    instrument: str
    """Python that instruments the peer, given ``tracer_provider`` and ``meter_provider``."""
    uninstrument: str


PEERS = {
    "official": Peer(
        "official",
        ("opentelemetry-instrumentation-genai-openai==1.3b0", "opentelemetry-util-genai==1.3b0"),
        ("chat gpt-4o-mini", "opentelemetry.instrumentation.genai.openai"),
        "from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor",
        "OpenAIInstrumentor().instrument("
        "tracer_provider=tracer_provider, meter_provider=meter_provider)",
        "OpenAIInstrumentor().uninstrument()",
    ),
    "openllmetry": Peer(
        "openllmetry",
        (
            "opentelemetry-instrumentation-openai==0.62.4",
            "opentelemetry-semantic-conventions-ai==0.5.1",
        ),
        ("openai.chat", "opentelemetry.instrumentation.openai.v1"),
        "from opentelemetry.instrumentation.openai import OpenAIInstrumentor",
        "OpenAIInstrumentor().instrument("
        "tracer_provider=tracer_provider, meter_provider=meter_provider)",
        "OpenAIInstrumentor().uninstrument()",
    ),
}


def install(peer: Peer) -> Path:
    """The directory holding ``peer``'s packages, installed there on first use."""
    target = CACHE / peer.name
    done = target / ".installed"
    if done.exists() and done.read_text() == "\n".join(peer.packages):
        return target
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--upgrade",
            "--target",
            os.fspath(target),
            *peer.packages,
        ],
        check=True,
        timeout=600,
    )
    done.write_text("\n".join(peer.packages))
    return target
