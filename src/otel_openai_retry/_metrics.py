"""The metric instruments, created once per instrumentation, and which attributes each gets.

The GenAI instruments follow the conventions, in the generation ``_semconv.metric_names``
chooses; ours are shaped after gRPC's retry metrics (A96) and ASP.NET's rate limiting: per call,
how many retries and how long it spent without an attempt in flight; per failed attempt, why; per
paced send, how long it queued. A clean call records a duration, its token counts and its retry
count, nothing more. Only low-cardinality attributes are recorded (operation, provider, request
model, server address, error type, status code, token type or modality): never an id or a message.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

from opentelemetry.metrics import Meter
from opentelemetry.util.types import AttributeValue

from ._internal import report_internal_error
from ._operations import ResponseFields
from ._semconv import (
    CALL_RETRIES,
    CALL_RETRY_DELAY,
    FAILED_ATTEMPTS,
    RATE_LIMITING_REQUESTS,
    RATE_LIMITING_RESULT,
    RATE_LIMITING_TIME_IN_QUEUE,
    MetricNames,
)

__all__ = ["DURATION_BUCKETS", "RETRY_BUCKETS", "TOKEN_BUCKETS", "Instruments"]

DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
RETRY_BUCKETS = (0, 1, 2, 3, 4, 5, 10, 100, 1000)
"""gRPC A96's buckets for retries per call."""
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
"""Waits span from a few milliseconds (``retry-after-ms``) to the 120 s Retry-After cap."""

_CURRENT_COUNTERS = (
    ("input", "gen_ai.client.inference.usage.input_tokens", "Input tokens, cached ones included"),
    ("output", "gen_ai.client.inference.usage.output_tokens", "Output tokens, reasoning included"),
)

Attributes = Mapping[str, AttributeValue]
_Record = Callable[[float, Attributes], None]


def _with(attributes: Attributes, key: str, value: AttributeValue) -> dict[str, AttributeValue]:
    merged = dict(attributes)
    merged[key] = value
    return merged


class Instruments:
    """The instruments of one instrumentation, and the one place that knows which attributes
    each measurement gets."""

    __slots__ = (
        "_cache_read",
        "_cache_write",
        "_call_retries",
        "_current_duration",
        "_current_ttfc",
        "_failed_attempts",
        "_older_duration",
        "_older_ttfc",
        "_operation_duration",
        "_peer_copies",
        "_queue_requests",
        "_queue_time",
        "_reasoning",
        "_retry_delay",
        "_token_histogram",
        "_usage",
    )

    def __init__(self, meter: Meter, names: MetricNames | None = None) -> None:
        names = names or MetricNames(older=True, current=False)

        def histogram(
            name: str, unit: str, description: str, buckets: tuple[float, ...]
        ) -> _Record:
            return meter.create_histogram(
                name,
                unit=unit,
                description=description,
                explicit_bucket_boundaries_advisory=buckets,
            ).record

        def counter(name: str, unit: str, description: str) -> _Record:
            return meter.create_counter(name, unit=unit, description=description).add

        operation_duration = histogram(
            "gen_ai.client.operation.duration",
            "s",
            "Duration of GenAI client operations, retries and sleeps included",
            DURATION_BUCKETS,
        )
        self._operation_duration: _Record | None = operation_duration
        """Embeddings and calls without GenAI meaning keep this name in every mode."""
        self._older_duration: _Record | None = operation_duration if names.older else None
        self._older_ttfc: _Record | None = None
        self._token_histogram: _Record | None = None
        if names.older:
            self._older_ttfc = histogram(
                "gen_ai.client.operation.time_to_first_chunk",
                "s",
                "Time from the start of the successful attempt to the first stream chunk",
                DURATION_BUCKETS,
            )
            self._token_histogram = histogram(
                "gen_ai.client.token.usage",
                "{token}",
                "Tokens used, from the successful attempt",
                TOKEN_BUCKETS,
            )
        self._current_duration: _Record | None = None
        self._current_ttfc: _Record | None = None
        self._usage: dict[str, _Record] = {}
        self._cache_read = self._cache_write = self._reasoning = None
        if names.current:
            self._current_duration = histogram(
                "gen_ai.client.inference.duration",
                "s",
                "Duration of GenAI inference operations, retries and sleeps included",
                DURATION_BUCKETS,
            )
            self._current_ttfc = histogram(
                "gen_ai.client.inference.time_to_first_chunk",
                "s",
                "Time from the start of the successful attempt to the first stream chunk",
                DURATION_BUCKETS,
            )
            self._usage = {
                direction: counter(name, "{token}", description)
                for direction, name, description in _CURRENT_COUNTERS
            }
            self._cache_read = counter(
                "gen_ai.client.inference.usage.cache_read.input_tokens",
                "{token}",
                "Input tokens served from the provider's cache",
            )
            self._cache_write = counter(
                "gen_ai.client.inference.usage.cache_write.input_tokens",
                "{token}",
                "Input tokens written to the provider's cache",
            )
            self._reasoning = counter(
                "gen_ai.client.inference.usage.reasoning.output_tokens",
                "{token}",
                "Output tokens used for reasoning",
            )
        self._call_retries = histogram(
            CALL_RETRIES, "{retry}", "Retries per logical call, 0 included", RETRY_BUCKETS
        )
        self._retry_delay = histogram(
            CALL_RETRY_DELAY,
            "s",
            "Time a call spent with no attempt in flight: retry sleeps and pacing waits",
            DELAY_BUCKETS,
        )
        self._failed_attempts = counter(
            FAILED_ATTEMPTS, "{attempt}", "HTTP attempts that failed, retried or not"
        )
        self._queue_time = histogram(
            RATE_LIMITING_TIME_IN_QUEUE,
            "s",
            "Time an attempt waited for its endpoint's send slot while pacing was engaged",
            DELAY_BUCKETS,
        )
        self._queue_requests = counter(
            RATE_LIMITING_REQUESTS, "{request}", "Attempts that asked their endpoint for a slot"
        )
        self._peer_copies: dict[frozenset[str], Instruments] = {}

    def without(self, records: frozenset[str]) -> Instruments:
        """These instruments less the GenAI measurements another instrumentation records for the
        call itself (``duration``, ``usage``: tokens and a failed call's zero, ``ttfc``): each is
        then recorded once, by whichever of us records it; ``openai_retry.*`` ones always stay."""
        found = self._peer_copies.get(records)
        if found is None:
            found = copy.copy(self)
            if "duration" in records:
                found._older_duration = found._current_duration = None
                found._operation_duration = None
            if "usage" in records:
                found._token_histogram = found._cache_read = None
                found._cache_write = found._reasoning = None
                found._usage = {}
            if "ttfc" in records:
                found._older_ttfc = found._current_ttfc = None
            self._peer_copies[records] = found
        return found

    # -- per call ----------------------------------------------------------------------------

    def call_ended(
        self, attributes: Attributes, seconds: float, error_type: str | None, inference: bool
    ) -> None:
        """The call's duration, in the generation(s) chosen."""
        failed = attributes if error_type is None else _with(attributes, "error.type", error_type)
        older = self._older_duration
        if older is not None:
            try:  # ``_measure``, inline on the path of every call
                older(seconds, failed)
            except Exception:
                report_internal_error("metrics")
        current = self._current_duration
        if inference and current is not None:
            _measure(current, seconds, failed)
        elif older is None and self._operation_duration is not None:
            _measure(self._operation_duration, seconds, failed)

    def retries(self, attributes: Attributes, retries: int, delay: float) -> None:
        """Once per call: its retries, and its time without an attempt in flight if any."""
        try:  # ``_measure``, inline on the path of every call
            self._call_retries(retries, attributes)
        except Exception:
            report_internal_error("metrics")
        if retries or delay > 0:
            _measure(self._retry_delay, delay, attributes)

    def usage(self, attributes: Attributes, fields: ResponseFields, inference: bool) -> None:
        histogram = self._token_histogram
        if histogram is not None:  # ``_measure`` and ``_with``, inline on every call's path
            for direction, count in (
                ("input", fields.input_tokens),
                ("output", fields.output_tokens),
            ):
                if count is not None:
                    typed = dict(attributes)
                    typed["gen_ai.token.type"] = direction
                    try:
                        histogram(count, typed)
                    except Exception:
                        report_internal_error("metrics")
        if not (inference and self._usage):
            return
        for direction, modality, count in fields.usage_by_modality():
            _measure(
                self._usage[direction], count, _with(attributes, "gen_ai.token.modality", modality)
            )
        unknown = _with(attributes, "gen_ai.token.modality", "unknown")
        for record, count in (
            (self._cache_read, fields.cache_read_tokens),
            (self._cache_write, fields.cache_write_tokens),
            (self._reasoning, fields.reasoning_tokens),
        ):
            if record is not None and count:
                _measure(record, count, unknown)

    def no_usage(self, attributes: Attributes) -> None:
        """A failed inference call: the conventions count it too, as 0 of an unknown modality."""
        if self._usage:
            unknown = _with(attributes, "gen_ai.token.modality", "unknown")
            for record in self._usage.values():
                _measure(record, 0, unknown)

    def time_to_first_chunk(self, attributes: Attributes, seconds: float, inference: bool) -> None:
        if self._older_ttfc is not None:
            _measure(self._older_ttfc, seconds, attributes)
        if inference and self._current_ttfc is not None:
            _measure(self._current_ttfc, seconds, attributes)

    # -- per attempt -------------------------------------------------------------------------

    def failed_attempt(
        self, attributes: Attributes, error_type: str, status_code: int | None
    ) -> None:
        failed = _with(attributes, "error.type", error_type)
        if status_code is not None:
            failed["http.response.status_code"] = status_code
        _measure(self._failed_attempts, 1, failed)

    def paced(self, attributes: Attributes, result: str, waited: float) -> None:
        """An attempt asked its engaged pacer for a send slot: ``acquired`` at once, ``delayed``,
        ``rejected`` (the slot came after the call's deadline) or ``canceled`` while waiting."""
        _measure(self._queue_requests, 1, _with(attributes, RATE_LIMITING_RESULT, result))
        if result != "acquired":
            _measure(self._queue_time, waited, attributes)


def _measure(record: _Record, value: float, attributes: Attributes) -> None:
    """Each measurement is guarded on its own: a meter or reader that raises loses that one
    measurement, never the spans or the other measurements of the call."""
    try:
        record(value, attributes)
    except Exception:
        report_internal_error("metrics")
