"""Pure retry decisions: is this failure retryable, what did the server ask for, how long to wait.

No I/O and no clock except where passed in, so every rule here is tested directly (including with
hostile header values) and shared by the sync and async loops.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import openai

from ._policy import RetryPolicy

__all__ = [
    "Outcome",
    "Verdict",
    "classify",
    "error_type",
    "parse_retry_after",
    "rate_limit_kind",
    "retry_after_wait",
]

RETRYABLE_STATUS = frozenset({408, 409, 429})


class Outcome(str, enum.Enum):
    """How a logical call ended; the value is the ``openai_retry.outcome`` attribute."""

    SUCCESS = "success"
    NON_RETRYABLE = "non_retryable"
    EXHAUSTED = "exhausted"
    DEADLINE = "deadline"
    RETRY_AFTER_TOO_LONG = "retry_after_too_long"
    BUDGET_EXHAUSTED = "budget_exhausted"
    QUOTA_EXHAUSTED = "quota_exhausted"
    """A 429 for ``insufficient_quota``: no credit left, which no wait restores."""
    CANCELLED = "cancelled"
    ERROR = "error"
    """The call failed after its response began (a stream cut or broken after it was returned)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one failed attempt means for the call."""

    retryable: bool
    give_up_as: Outcome | None
    """Why the call stops here when not retryable (``None`` when it may go on)."""
    status_code: int | None
    retry_after: float | None
    """The server's hint in seconds (finite, >= 0), or ``None``."""
    limit: str | None = None
    """For a 429: the limit its body says was hit, ``"tokens"`` or ``"requests"``, if it says."""

    def given_up(self, outcome: Outcome) -> Verdict:
        """The same failure, not retried after all (the budget, the deadline, a closed client)."""
        return replace(self, retryable=False, give_up_as=outcome)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The server's requested delay in seconds, or ``None`` when it gave no usable hint.

    Read as the SDK reads it, so that a hint means the same to both: ``retry-after-ms`` first,
    then ``retry-after`` as seconds, then as an HTTP date; the first header that parses as a
    number decides, and NaN, an infinity or a negative number there is no hint (the SDK backs off
    instead). A date in the past means "now" (0); one beyond any clock is no hint.
    """
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if not math.isfinite(value) or value < 0:
            return None
        return value / divisor
    raw_date = headers.get("retry-after")
    if raw_date is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(raw_date)
        if parsed is None:
            return None
        delay = email.utils.mktime_tz(parsed) - (time.time() if now is None else now)
    except (TypeError, ValueError, OverflowError, OSError):
        return None  # e.g. a zone offset of many digits: an int beyond any float
    return max(0.0, delay)


def _should_retry_header(headers: Mapping[str, str]) -> bool | None:
    raw = headers.get("x-should-retry")
    if raw is None:
        return None
    value = raw.strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None


_NON_RETRYABLE = Verdict(False, Outcome.NON_RETRYABLE, None, None)
_CONNECTION_FAILURE = Verdict(True, None, None, None)


def classify(exc: BaseException, policy: RetryPolicy) -> Verdict:
    """Decide whether a failed attempt may be retried, from the exception alone."""
    if isinstance(exc, openai.APIStatusError):
        response = exc.response
        headers: Mapping[str, str] = response.headers
        status = response.status_code
        hint = parse_retry_after(headers)
        override = _should_retry_header(headers)
        retryable = (
            override if override is not None else (status in RETRYABLE_STATUS or status >= 500)
        )
        limit = rate_limit_kind(exc.body) if status == 429 else None
        if limit == QUOTA:  # no credit left: waiting does not help, whatever the headers say
            return Verdict(False, Outcome.QUOTA_EXHAUSTED, status, hint)
        if not retryable:
            return Verdict(False, Outcome.NON_RETRYABLE, status, hint, limit)
        if hint is not None and hint > policy.max_retry_after:
            return Verdict(False, Outcome.RETRY_AFTER_TOO_LONG, status, hint, limit)
        return Verdict(True, None, status, hint, limit)
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError is a subclass
        return _NON_RETRYABLE if _refused_locally(exc) else _CONNECTION_FAILURE
    return _NON_RETRYABLE


QUOTA = "insufficient_quota"


def rate_limit_kind(body: object) -> str | None:
    """What a 429's body says was hit: ``insufficient_quota`` (in its code or its type),
    ``tokens`` (a type of ``tokens`` or ``tokens_usage_based``), ``requests``, or ``None``.

    The SDK gives the body's ``error`` object, or the whole body, as JSON (whichever its version
    does); anything else says nothing, and nothing here raises.
    """
    if not isinstance(body, dict):
        return None
    inner = body.get("error")
    if isinstance(inner, dict):
        body = inner
    kind, code = body.get("type"), body.get("code")
    if QUOTA in (kind, code):
        return QUOTA
    if isinstance(kind, str):
        if kind.startswith("tokens"):
            return "tokens"
        if kind.startswith("requests"):
            return "requests"
    return None


def _refused_locally(exc: BaseException) -> bool:
    """The HTTP stack itself refused the request (an illegal header value, a body longer than
    its declared length): it would refuse every retry the same way."""
    cause = exc.__cause__
    for _ in range(8):
        if cause is None:
            return False
        if type(cause).__name__ == "LocalProtocolError":  # h11's, httpcore's and httpx's alike
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def retry_after_wait(hint: float, rand: Callable[[], float] = random.random) -> float:
    """Honour the server's hint with 0-10 % upward jitter: never earlier than asked."""
    return hint * (1.0 + 0.1 * rand())


_names: dict[type[BaseException], str] = {}


def _qualified_name(exc_type: type[BaseException]) -> str:
    module = exc_type.__module__
    name = exc_type.__qualname__
    if module == "builtins":
        return name
    top = module.split(".", 1)[0]
    package = sys.modules.get(top)
    if getattr(package, exc_type.__name__, None) is exc_type:
        # The spelling users import: openai._exceptions.RateLimitError -> openai.RateLimitError
        return f"{top}.{exc_type.__name__}"
    return f"{module}.{name}"


def error_type(exc: BaseException) -> str:
    """The ``error.type`` value: the exception's qualified, public name."""
    exc_type = type(exc)
    name = _names.get(exc_type)
    if name is None:
        name = _names[exc_type] = _qualified_name(exc_type)
    return name
