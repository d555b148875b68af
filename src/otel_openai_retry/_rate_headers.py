"""What OpenAI's rate-limit headers say about the server's limit, read defensively.

``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` give the rate the server refills, and
for tokens the bucket's size and how full it is. Hostile or malformed values (huge, negative,
non-numeric, non-finite, a reset of a year) say nothing: they give ``None``, never an exception.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import NamedTuple

__all__ = [
    "MAX_HINT_RATE",
    "MAX_RESET",
    "MAX_TOKEN_RATE",
    "Limit",
    "parse_duration",
    "read_limit",
    "refill_rate",
    "shared_gate",
]

MAX_HINT_RATE = 1e6
"""Requests per second above which a header's rate is nonsense (and pacing at it meaningless)."""
MAX_TOKEN_RATE = 1e9
"""The same for tokens per second (the largest limits are some millions a second)."""
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


def refill_rate(headers: Mapping[str, str], unit: str = "requests") -> float | None:
    """Requests (or, with ``unit="tokens"``, tokens) per second the server refills, from
    ``x-ratelimit-*-{unit}``, if it says.

    Hostile values (huge, negative, non-numeric, non-finite, a reset of a year) say nothing:
    ``None``, never an exception; a rate, when given, is finite and at most ``MAX_HINT_RATE``.
    """
    found = read_limit(headers, unit)
    return None if found is None else found.rate


class Limit(NamedTuple):
    """What ``x-ratelimit-{limit,remaining,reset}-{unit}`` say together."""

    rate: float | None
    """Refilled per second, at most: what was used (limit - remaining; for requests, less the
    one the floored count may hide) over the time to refill it; ``None`` when that is nothing
    or the reset is unreadable."""
    limit: int
    """The bucket's size."""
    remaining: int


def read_limit(headers: Mapping[str, str], unit: str) -> Limit | None:
    """The limit of one unit (``requests`` or ``tokens``), or ``None`` when the headers do not
    give both counts (or give nonsense: more remaining than the limit); never an exception."""
    try:
        limit = _count(headers, f"x-ratelimit-limit-{unit}")
        remaining = _count(headers, f"x-ratelimit-remaining-{unit}")
        reset_text = headers.get(f"x-ratelimit-reset-{unit}")
    except Exception:  # a mapping that fails to read is no hint
        return None
    if limit is None or remaining is None or remaining > limit:
        return None
    reset = parse_duration(reset_text) if isinstance(reset_text, str) else None
    if reset is None or not 0 < reset <= MAX_RESET or limit == remaining:
        return Limit(None, limit, remaining)
    # ``remaining`` is a whole count, floored: up to one request of what looks used may have been
    # refilled already. Counting one less gives a rate never above the server's (a bucket of 10
    # with 9.5 left reads "9 left, full in 5 ms": 200/s from a 100/s limit, 0/s this way, which
    # says nothing); the error shrinks as more is used, and for tokens it is one in thousands.
    rate = (limit - remaining - (unit == "requests")) / reset
    if rate <= 0:
        return Limit(None, limit, remaining)
    highest = MAX_TOKEN_RATE if unit == "tokens" else MAX_HINT_RATE
    return Limit(rate if math.isfinite(rate) and 0 < rate <= highest else None, limit, remaining)


def shared_gate(retry_after: float | None, hinted: float | None, max_gate: float) -> float | None:
    """Seconds a ``Retry-After`` closes an endpoint for every caller, or ``None`` for none.

    With the refill rate of the same answer's headers, one interval of it at most: a hint
    rounded up to whole seconds would idle the endpoint for most of a second the schedule can
    use (the caller that got it still sleeps the whole hint). A hint longer than ``max_gate``
    is ignored.
    """
    if retry_after is None or not (math.isfinite(retry_after) and 0 <= retry_after <= max_gate):
        return None
    return retry_after if hinted is None else min(retry_after, 1.0 / hinted)
