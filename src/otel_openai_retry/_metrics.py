"""The metric instruments, created once per instrumentation.

Names, units and bucket boundaries follow the GenAI semantic conventions; the two ``retry.*``
instruments are ours. Only low-cardinality attributes are recorded (operation, provider, request
model, server address, error type, token type): never a response id or a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from opentelemetry.metrics import Meter
from opentelemetry.util.types import AttributeValue

from ._internal import report_internal_error

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "Instruments"]

DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
SLEEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
"""Sleeps span from a few milliseconds (``retry-after-ms``) to the 120 s Retry-After cap."""

Attributes = Mapping[str, AttributeValue]


def _with(attributes: Attributes, key: str, value: AttributeValue) -> dict[str, AttributeValue]:
    merged = dict(attributes)
    merged[key] = value
    return merged


class Instruments:
    """The five instruments, and the one place that knows which attributes each gets."""

    __slots__ = ("_attempts", "_duration", "_sleep", "_tokens", "_ttfc")

    def __init__(self, meter: Meter) -> None:
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of GenAI client operations, retries and sleeps included",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used, from the successful attempt",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._ttfc = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time from the start of the successful attempt to the first stream chunk",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._attempts = meter.create_counter(
            "retry.attempts", unit="{attempt}", description="HTTP attempts sent"
        )
        self._sleep = meter.create_histogram(
            "retry.sleep.duration",
            unit="s",
            description="Sleeps taken between attempts",
            explicit_bucket_boundaries_advisory=SLEEP_BUCKETS,
        )

    def attempt(self, attributes: Attributes, error_type: str | None) -> None:
        _measure(
            self._attempts.add,
            1,
            attributes if error_type is None else _with(attributes, "error.type", error_type),
        )

    def sleep(self, attributes: Attributes, seconds: float) -> None:
        _measure(self._sleep.record, seconds, attributes)

    def operation(self, attributes: Attributes, seconds: float, error_type: str | None) -> None:
        _measure(
            self._duration.record,
            seconds,
            attributes if error_type is None else _with(attributes, "error.type", error_type),
        )

    def tokens(
        self, attributes: Attributes, input_tokens: int | None, output_tokens: int | None
    ) -> None:
        if input_tokens is not None:
            _measure(
                self._tokens.record, input_tokens, _with(attributes, "gen_ai.token.type", "input")
            )
        if output_tokens is not None:
            _measure(
                self._tokens.record, output_tokens, _with(attributes, "gen_ai.token.type", "output")
            )

    def time_to_first_chunk(self, attributes: Attributes, seconds: float) -> None:
        _measure(self._ttfc.record, seconds, attributes)


def _measure(
    record: Callable[[float, Attributes], None], value: float, attributes: Attributes
) -> None:
    """Each measurement is guarded on its own: a meter or reader that raises loses that one
    measurement, never the spans or the other measurements of the call."""
    try:
        record(value, attributes)
    except Exception:
        report_internal_error("metrics")
