"""Other OpenAI instrumentations, installed from PyPI into a directory of their own.

A peer's packages go into ``.cache/interop/<peer>/`` (once; later runs reuse it) and are put on
``PYTHONPATH`` only for the fresh process a test runs: their patches never reach the main suite's
process, and the project's own environment never gains them. Only the peer's own packages are
installed there (``--no-deps``): everything they need besides is already in the project's
environment (or, the odd small library it lacks, listed with the peer), so the peer runs against
exactly the OpenTelemetry and OpenAI versions ours does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ALL_GENAI", "PEERS", "Peer", "install"]

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
    logs: tuple[str, ...] = ()
    """Names of spans the peer makes as log lines beside its inference span."""
    other_scopes: tuple[str, ...] = ()
    """Instrumentation scopes of the peer's inference spans for other operations, where they
    differ from its chat span's."""
    ours_genai: frozenset[str] = frozenset()
    """The GenAI metrics ours records beside the peer: those it does not record itself."""
    sdk_calls: bool = True
    """It instruments every OpenAI SDK call (not only those its own framework makes)."""


ALL_GENAI = frozenset(
    {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.time_to_first_chunk",
    }
)


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
    # openai-v2 2.4b0 imports util-genai modules that 1.2b0 removed (``instruments``): it runs
    # with the newest util-genai that has them, in its own directory as every peer does.
    "openai-v2": Peer(
        "openai-v2",
        ("opentelemetry-instrumentation-openai-v2==2.4b0", "opentelemetry-util-genai==1.1b0"),
        # Its chat spans are made by util-genai's handler, under that scope; embeddings by itself.
        ("chat gpt-4o-mini", "opentelemetry.util.genai.handler"),
        "from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor",
        "OpenAIInstrumentor().instrument("
        "tracer_provider=tracer_provider, meter_provider=meter_provider)",
        "OpenAIInstrumentor().uninstrument()",
        other_scopes=("opentelemetry.instrumentation.openai_v2",),
        # it records the duration and the token usage, not a stream's time to first chunk
        ours_genai=frozenset({"gen_ai.client.operation.time_to_first_chunk"}),
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
    "openinference": Peer(
        "openinference",
        (
            "openinference-instrumentation-openai==0.1.66",
            "openinference-instrumentation==0.1.72",
            "openinference-semantic-conventions==0.1.42",
        ),
        ("ChatCompletion", "openinference.instrumentation.openai"),
        "from openinference.instrumentation.openai import OpenAIInstrumentor",
        "OpenAIInstrumentor().instrument(tracer_provider=tracer_provider)",
        "OpenAIInstrumentor().uninstrument()",
        ours_genai=ALL_GENAI,  # it records no metrics
    ),
    "logfire": Peer(
        "logfire",
        ("logfire==5.4.0", "logfire-sdk==5.4.0", "executing==2.3.0"),
        ("Chat Completion with {request_data[model]!r}", "logfire.openai"),
        "import logfire",
        # Its own tracer provider, sampling as the script's does and exporting where it does;
        # instrument_openai() returns the context manager that uninstruments it.
        "global logfire_off; logfire.configure(send_to_logfire=False, console=False, "
        "sampling=logfire.SamplingOptions(head=0.0 if mode == 'sampled-out' else 1.0), "
        "additional_span_processors=[SimpleSpanProcessor(memory)]); "
        "logfire_off = logfire.instrument_openai(); logfire_off.__enter__()",
        "logfire_off.__exit__(None, None, None)",
        ("streaming response from {request_data[model]!r} took {duration:.2f}s",),
    ),
    "langfuse": Peer(
        "langfuse",
        ("langfuse==5.2.0", "backoff==2.2.1"),
        ("OpenAI-generation", "langfuse-sdk"),
        "from langfuse import Langfuse",
        # Its client on the script's tracer provider, exporting nowhere (Langfuse's own span
        # processor and export filter still run); importing `langfuse.openai` wraps the SDK's
        # resource methods, for good: Langfuse has no uninstrument.
        "global langfuse_exported; langfuse_exported = InMemorySpanExporter(); "
        "Langfuse(public_key='pk-lf-test', secret_key='sk-lf-test', base_url='http://127.0.0.1:9', "
        "tracer_provider=tracer_provider, span_exporter=langfuse_exported); "
        "import langfuse.openai",
        "pass",
        ours_genai=ALL_GENAI,  # it records no metrics
    ),
    "pydantic-ai": Peer(
        "pydantic-ai",
        (
            "pydantic-ai-slim==2.78.0",
            "pydantic-graph==2.78.0",
            "genai-prices==0.2.5",
            "griffelib==2.4.1",
            "logfire-api==6.1.0",
        ),
        ("chat gpt-4o-mini", "pydantic-ai"),
        "from pydantic_ai import Agent, InstrumentationSettings",
        "Agent.instrument_all(InstrumentationSettings("
        "tracer_provider=tracer_provider, meter_provider=meter_provider))",
        "Agent.instrument_all(False)",
        ours_genai=frozenset({"gen_ai.client.operation.duration"}),  # it records the others
        sdk_calls=False,  # its agents' model requests only
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
