"""OpenAI's two limits on an organisation's model, requests and tokens, as token buckets.

A request must fit both: it is charged one request and its estimated tokens at admission (see
``_bodies.estimate``), from both buckets or from neither. A request over either limit gets OpenAI's
429, whose body's ``type`` (``"requests"`` or ``"tokens"``) names the limit it hit, and whose
message reads as the real one does, numbers included, so that a client parsing it is exercised.

The token limit speaks per minute, as OpenAI does, while its bucket holds only ``bucket_seconds``
of tokens, as OpenAI quantizes its limits: ``x-ratelimit-limit-tokens`` is the per-minute limit,
``x-ratelimit-remaining-tokens`` what fits now, and ``x-ratelimit-reset-tokens`` the time the
minute's usage takes to drain at the limit's rate, so that ``(limit - remaining) / reset`` is the
rate, and a 429's ``Used + Requested - Limit`` is what must drain before the request fits.

The requests limit keeps the headers it always had: its bucket's capacity as the limit, and
resets in milliseconds.

Servers differ in the hints they give, and a client must cope with each (``Hints``): ``"ms"``
(``True``) is OpenAI's ``retry-after-ms`` with the ``x-ratelimit-*`` headers; ``"seconds"`` a
whole-second ``retry-after`` with them (Azure and proxies); ``"headers"`` the ``x-ratelimit-*``
headers alone; ``"none"`` (``False``) no header at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "HINT_MODES",
    "Gate",
    "Hints",
    "RateLimit",
    "TokenLimit",
    "duration",
    "hint_mode",
    "requests_gate",
    "tokens_gate",
]

Hints = Literal["ms", "seconds", "headers", "none"]
HINT_MODES: tuple[Hints, ...] = ("ms", "seconds", "headers", "none")


def hint_mode(hints: bool | str) -> Hints:
    """``True`` and ``False`` as the modes they always meant; a mode checked."""
    if hints is True or hints is False:
        return "ms" if hints else "none"
    for mode in HINT_MODES:
        if hints == mode:
            return mode
    raise ValueError(f"hints must be a bool or one of {', '.join(HINT_MODES)}; got {hints!r}")


_ORGANIZATION = "org-fake"
_LEARN_MORE = "Visit https://platform.openai.com/account/rate-limits to learn more."


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``rate`` requests per second, up to ``burst`` at once."""

    rate: float
    burst: int = 10
    hints: bool | Hints = True

    def __post_init__(self) -> None:
        hint_mode(self.hints)
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be > 0 requests per second, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")


@dataclass(frozen=True)
class TokenLimit:
    """``per_minute`` tokens a minute, of which a bucket holds ``bucket_seconds``' worth."""

    per_minute: int
    bucket_seconds: float = 60.0
    hints: bool | Hints = True

    def __post_init__(self) -> None:
        hint_mode(self.hints)
        if isinstance(self.per_minute, bool) or not (
            isinstance(self.per_minute, int) and self.per_minute >= 1
        ):
            raise ValueError(f"tokens per minute must be an integer >= 1, got {self.per_minute}")
        if not (math.isfinite(self.bucket_seconds) and self.bucket_seconds > 0):
            raise ValueError(f"bucket_seconds must be > 0, got {self.bucket_seconds}")

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.per_minute / 60.0

    @property
    def capacity(self) -> float:
        return self.rate * self.bucket_seconds


def duration(seconds: float) -> str:
    """OpenAI's reset and retry durations: ``17ms``, ``1.2s``, ``6m0s``, ``1h2m3.5s``.

    Rounded up to the millisecond, so that a wait it states is never shorter than the real one.
    """
    ms = max(0, math.ceil(seconds * 1000 - 1e-9))
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    text = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


class Gate:
    """One limit's bucket, refilled lazily; its level may go below zero (see :meth:`wait`)."""

    def __init__(
        self, kind: str, unit: str, per_minute: int, rate: float, capacity: float, hints: Hints
    ) -> None:
        self.kind = kind
        self._unit = unit
        self.per_minute = per_minute
        self.rate = rate
        self.capacity = capacity
        self.mode = hints
        self.hints = hints != "none"
        """Whether answers carry this limit's ``x-ratelimit-*`` headers."""
        self.level = capacity
        self._updated: float | None = None

    def refill(self, now: float) -> None:
        if self._updated is not None:
            self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now

    def wait(self, cost: float) -> float:
        """Seconds until ``cost`` fits; 0 when it fits now.

        A cost above the bucket's capacity fits once the bucket is full, and leaves it in debt:
        otherwise a request the per-minute limit allows could never be admitted.
        """
        if cost <= 0:
            return 0.0
        return max(0.0, min(cost, self.capacity) - self.level) / self.rate

    def take(self, cost: float) -> None:
        self.level -= cost

    def too_large(self, cost: float) -> bool:
        return cost > self.per_minute

    def headers(self) -> list[tuple[str, str]]:
        """The ``x-ratelimit-*`` headers of this limit as it stands."""
        return [
            (f"x-ratelimit-limit-{self.kind}", str(self.per_minute)),
            (f"x-ratelimit-remaining-{self.kind}", str(max(0, math.floor(self.level)))),
            (f"x-ratelimit-reset-{self.kind}", duration(self._used() / self.rate)),
        ]

    def _used(self) -> float:
        return self.per_minute - self.level

    def reached(self, model: str | None, cost: float, wait: float) -> str:
        """OpenAI's message for a request this limit refused."""
        retry = f" Please try again in {duration(wait)}." if self.hints else ""
        return (
            f"Rate limit reached {_for(model)}in organization {_ORGANIZATION} on {self._unit}: "
            f"Limit {self.per_minute}, Used {math.ceil(self._used())}, Requested {round(cost)}."
            f"{retry} {_LEARN_MORE}"
        )

    def too_large_message(self, model: str | None, cost: float) -> str:
        return (
            f"Request too large {_for(model)}in organization {_ORGANIZATION} on {self._unit}: "
            f"Limit {self.per_minute}, Requested {round(cost)}. The input or output tokens must "
            f"be reduced in order to run successfully. {_LEARN_MORE}"
        )


class _RequestsGate(Gate):
    """The requests limit, with the headers the fake server has always sent for it."""

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("x-ratelimit-limit-requests", str(math.floor(self.capacity))),
            ("x-ratelimit-remaining-requests", str(math.floor(self.level))),
            (
                "x-ratelimit-reset-requests",
                f"{max(self.capacity - self.level, 0.0) / self.rate * 1000:.0f}ms",
            ),
        ]


def _for(model: str | None) -> str:
    return f"for {model} " if model else ""


def requests_gate(limit: RateLimit) -> Gate:
    return _RequestsGate(
        "requests",
        "requests per min (RPM)",
        max(1, round(limit.rate * 60)),
        limit.rate,
        float(limit.burst),
        hint_mode(limit.hints),
    )


def tokens_gate(limit: TokenLimit) -> Gate:
    return Gate(
        "tokens",
        "tokens per min (TPM)",
        limit.per_minute,
        limit.rate,
        limit.capacity,
        hint_mode(limit.hints),
    )
