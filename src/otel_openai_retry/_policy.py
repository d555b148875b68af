"""The retry policy: one frozen value, built in code or from the environment.

Every setting is validated when the policy is built (at instrument time), so a typo in a
deployment's environment fails loudly at start-up instead of silently changing how calls retry.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ._errors import ConfigurationError

__all__ = ["ENV_VARS", "RetryPolicy", "parse_bool"]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

ENV_VARS: Mapping[str, str] = {
    "max_attempts": "OTEL_OPENAI_RETRY_MAX_ATTEMPTS",
    "initial_wait": "OTEL_OPENAI_RETRY_INITIAL_WAIT",
    "max_wait": "OTEL_OPENAI_RETRY_MAX_WAIT",
    "timeout": "OTEL_OPENAI_RETRY_TIMEOUT",
    "max_retry_after": "OTEL_OPENAI_RETRY_MAX_RETRY_AFTER",
    "budget": "OTEL_OPENAI_RETRY_BUDGET",
    "adaptive": "OTEL_OPENAI_RETRY_ADAPTIVE",
}
"""Policy field → environment variable; the names are a public interface."""

ENABLED_ENV_VAR = "OTEL_OPENAI_RETRY_ENABLED"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one logical OpenAI call is retried.

    Frozen so that one policy can be shared by every concurrent call without locks, and so that
    the strategies derived from it can be built once and reused.
    """

    max_attempts: int = 5
    """Total attempts, the first included."""
    initial_wait: float = 0.5
    """Upper bound of the first full-jitter backoff, in seconds."""
    max_wait: float = 20.0
    """Cap of any backoff, in seconds."""
    timeout: float = 0.0
    """Deadline for the whole logical call in seconds; 0 means none."""
    max_retry_after: float = 120.0
    """Longest server ``Retry-After`` honoured; a longer one means giving up at once."""
    budget: float = 0.1
    """Retries allowed per request sent, per endpoint, over a sliding window; 0 turns it off."""
    adaptive: bool = True
    """Pace all calls to an endpoint once it has answered 429."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check(field.name, getattr(self, field.name), source=field.name)
        if self.max_wait < self.initial_wait:
            raise ConfigurationError(
                f"max_wait ({self.max_wait}) must be >= initial_wait ({self.initial_wait})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        """Build the policy from ``OTEL_OPENAI_RETRY_*``; unset variables keep their default."""
        env = os.environ if environ is None else environ
        values: dict[str, float | int | bool] = {}
        for name, var in ENV_VARS.items():
            if name == "adaptive":
                values[name] = parse_bool(var, env, default=True)
                continue
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            values[name] = _parse_field(name, var, raw)
        if "max_wait" in values or "initial_wait" in values:
            defaults = cls()
            initial = float(values.get("initial_wait", defaults.initial_wait))
            maximum = float(values.get("max_wait", defaults.max_wait))
            if maximum < initial:
                raise ConfigurationError(
                    f"{ENV_VARS['max_wait']}={maximum!r} is smaller than "
                    f"{ENV_VARS['initial_wait']}={initial!r}; the backoff cap must be >= "
                    "the first backoff"
                )
        return cls(**values)  # type: ignore[arg-type]


def parse_bool(var: str, environ: Mapping[str, str] | None = None, *, default: bool) -> bool:
    """Read a boolean variable, refusing spellings we would otherwise have to guess at."""
    env = os.environ if environ is None else environ
    raw = env.get(var)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(
        f"{var}={raw!r} is not a boolean; accepted: "
        f"{', '.join(sorted(_TRUE))} or {', '.join(sorted(_FALSE))}"
    )


_ACCEPTED = {
    "max_attempts": "a whole number >= 1",
    "initial_wait": "a number of seconds >= 0",
    "max_wait": "a number of seconds >= 0",
    "timeout": "a number of seconds >= 0 (0 means no deadline)",
    "max_retry_after": "a number of seconds >= 0",
    "budget": "a ratio >= 0 of retries to requests (0 turns the budget off)",
    "adaptive": "true or false",
}


_DECIMAL = re.compile(r"[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
"""Plain ASCII decimal notation: Python's ``int``/``float`` also take ``1_000``, ``nan`` and
digits of every script (fullwidth, Arabic-Indic), none of which a deployment means as a number."""
_WHOLE = re.compile(r"[+]?([0-9]{1,9})(?:\.0*)?\Z")


def _parse_field(name: str, var: str, raw: str) -> float | int:
    text = raw.strip()
    value: float | int
    if name == "max_attempts":
        whole = _WHOLE.match(text)  # "5" and "5.0" alike; "5.5" and "1e3" are refused
        value = int(whole.group(1)) if whole is not None else math.nan
    elif _DECIMAL.match(text) is None:
        value = math.nan  # refused below, with what is accepted
    else:
        value = float(text)
    _check(name, value, source=f"{var}={raw!r}")
    return value


def _check(name: str, value: object, *, source: str) -> None:
    accepted = _ACCEPTED[name]
    if name == "adaptive":
        ok = isinstance(value, bool)
    elif name == "max_attempts":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    else:
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
        )
    if not ok:
        shown = source if "=" in source else f"{source}={value!r}"
        raise ConfigurationError(f"{shown} is not valid; accepted: {accepted}")
