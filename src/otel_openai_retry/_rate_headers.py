"""What OpenAI's rate-limit headers say about the server's limit, read defensively.

``x-ratelimit-{limit,remaining,reset}-requests`` give the rate the server refills. Hostile or
malformed values (huge, negative, non-numeric, non-finite, a reset of a year) say nothing: they
give ``None``, never an exception.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

__all__ = ["MAX_HINT_RATE", "MAX_RESET", "parse_duration", "refill_rate"]

MAX_HINT_RATE = 1e6
"""Requests per second above which a header's rate is nonsense (and pacing at it meaningless)."""
_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,12})?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_COUNT = re.compile(r"\d{1,15}")
MAX_RESET = 7 * 86400.0
"""A reset duration beyond a week is no rate limit OpenAI has: ignored."""


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations: ``"20ms"``, ``"1s"``, ``"6m0s"``, ``"1h2m3.5s"``; or seconds.

    ``None`` for anything else, including what is not a finite number of seconds.
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    return seconds if math.isfinite(seconds) else None


def _count(headers: Mapping[str, str], name: str) -> int | None:
    """A header holding a plain count (digits only, at most 15 of them), else ``None``."""
    value = headers.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return int(value) if _COUNT.fullmatch(value) else None


def refill_rate(headers: Mapping[str, str]) -> float | None:
    """Requests per second the server refills, from ``x-ratelimit-*-requests``, if it says.

    Hostile values (huge, negative, non-numeric, non-finite, a reset of a year) say nothing:
    ``None``, never an exception; a rate, when given, is finite and at most ``MAX_HINT_RATE``.
    """
    try:
        limit = _count(headers, "x-ratelimit-limit-requests")
        remaining = _count(headers, "x-ratelimit-remaining-requests")
        reset_text = headers.get("x-ratelimit-reset-requests")
    except Exception:  # a mapping that fails to read is no hint
        return None
    if limit is None or remaining is None or not isinstance(reset_text, str):
        return None
    reset = parse_duration(reset_text)
    if reset is None or not 0 < reset <= MAX_RESET or limit <= remaining:
        return None
    rate = (limit - remaining) / reset
    return rate if math.isfinite(rate) and 0 < rate <= MAX_HINT_RATE else None
