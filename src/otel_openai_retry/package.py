"""What this instrumentation patches, for ``opentelemetry-instrument``'s dependency check."""

_instruments = ("openai >= 1.92",)
