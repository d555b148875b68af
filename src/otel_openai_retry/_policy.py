"""The retry policy: one frozen value, built in code or from the environment.

Every setting is validated when the policy is built (at instrument time), so a typo in a
deployment's environment fails loudly at start-up instead of silently changing how calls retry.
Each setting is declared once, in :data:`SETTINGS`: its field, its variable, how its text is read,
what it must satisfy and how that is said to the user; code-built and environment-built policies
go through the same checks.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._errors import ConfigurationError

__all__ = ["ENABLED_ENV_VAR", "ENV_VARS", "SETTINGS", "RetryPolicy", "Setting", "parse_bool"]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

ENABLED_ENV_VAR = "OTEL_OPENAI_RETRY_ENABLED"

_DECIMAL = re.compile(r"[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
"""Plain ASCII decimal notation: Python's ``int``/``float`` also take ``1_000``, ``nan`` and
digits of every script (fullwidth, Arabic-Indic), none of which a deployment means as a number."""
_WHOLE = re.compile(r"[+]?([0-9]{1,9})(?:\.0*)?\Z")


def _read_whole(text: str) -> object:
    """``5`` and ``5.0`` alike; ``5.5`` and ``1e3`` are refused."""
    whole = _WHOLE.match(text)
    return int(whole.group(1)) if whole is not None else None


def _read_seconds(text: str) -> object:
    return float(text) if _DECIMAL.match(text) is not None else None


def _read_bool(text: str) -> object:
    value = text.lower()
    return True if value in _TRUE else False if value in _FALSE else None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_seconds(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


_ATTEMPT_SPANS = ("all", "retried")


def _read_word(text: str) -> object:
    return text.lower()


def _is_attempt_spans(value: object) -> bool:
    return value in _ATTEMPT_SPANS


_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _is_redis_url(value: object) -> bool:
    """Checked as redis-py will read it (without importing it: the extra may be absent until the
    URL is used): a known scheme, a host (or a socket path), a port and a database number that
    are numbers. Empty means no Redis."""
    if not isinstance(value, str):
        return False
    if value == "":
        return True
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError:
        return False
    if parts.scheme == "unix":
        return bool(parts.path) and port is None
    database = parts.path.lstrip("/")
    return (
        parts.scheme in _REDIS_SCHEMES
        and bool(parts.hostname)
        and (database == "" or (database.isascii() and database.isdigit()))
    )


_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


def _hide_password(text: str) -> str:
    """A URL as it may be shown in an error: its password (if any) replaced."""
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return "<unreadable URL>"
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)  # redis-py also takes it from there
    if not password and query == parts.query:
        return text  # as written: a round trip through urlsplit would turn "redis://" to "redis:"
    if password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@", 1))
    return parts._replace(query=query).geturl()


@dataclass(frozen=True, slots=True)
class Setting:
    """One policy field and the environment variable that sets it."""

    field: str
    variable: str
    read: Callable[[str], object]
    """The value the text means, or ``None`` when it means none."""
    valid: Callable[[object], bool]
    accepted: str
    shown: Callable[[str], str] = str
    """How a refused value is quoted in the error: never a secret it may hold."""

    def from_text(self, raw: str) -> object:
        value = self.read(raw.strip())
        if value is None or not self.valid(value):
            raise ConfigurationError(
                f"{self.variable}={self.shown(raw)!r} is not valid; accepted: {self.accepted}"
            )
        return value


_BOOLEANS = f"{', '.join(sorted(_TRUE))} or {', '.join(sorted(_FALSE))}"

SETTINGS: tuple[Setting, ...] = (
    Setting("max_attempts", "OTEL_OPENAI_RETRY_MAX_ATTEMPTS", _read_whole, _is_count,
            "a whole number >= 1"),
    Setting("initial_wait", "OTEL_OPENAI_RETRY_INITIAL_WAIT", _read_seconds, _is_seconds,
            "a number of seconds >= 0"),
    Setting("max_wait", "OTEL_OPENAI_RETRY_MAX_WAIT", _read_seconds, _is_seconds,
            "a number of seconds >= 0"),
    Setting("timeout", "OTEL_OPENAI_RETRY_TIMEOUT", _read_seconds, _is_seconds,
            "a number of seconds >= 0 (0 means no deadline)"),
    Setting("max_retry_after", "OTEL_OPENAI_RETRY_MAX_RETRY_AFTER", _read_seconds, _is_seconds,
            "a number of seconds >= 0"),
    Setting("budget", "OTEL_OPENAI_RETRY_BUDGET", _read_seconds, _is_seconds,
            "a ratio >= 0 of retries to requests (0 turns the budget off)"),
    Setting("adaptive", "OTEL_OPENAI_RETRY_ADAPTIVE", _read_bool, _is_bool,
            f"a boolean: {_BOOLEANS}"),
    Setting("attempt_spans", "OTEL_OPENAI_RETRY_ATTEMPT_SPANS", _read_word, _is_attempt_spans,
            "all (a span for every attempt) or retried (attempt spans only for calls retried)"),
    Setting("redis_url", "OTEL_OPENAI_RETRY_REDIS_URL", str, _is_redis_url,
            "a redis://host[:port][/db], rediss://... or unix:///path URL, or empty (pacing and "
            "the retry budget per process)", _hide_password),
)  # fmt: skip
"""Every policy setting, in the order the variables are read."""

ENV_VARS: Mapping[str, str] = {setting.field: setting.variable for setting in SETTINGS}
"""Policy field → environment variable; the names are a public interface."""


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
    attempt_spans: str = "all"
    """``all``: a span for every attempt; ``retried``: none for a call whose first attempt
    succeeded (its span says ``openai_retry.attempts = 1``), all of them for a retried call."""
    redis_url: str = field(default="", repr=False)  # it may hold a password
    """Share pacing and the retry budget with every process using this Redis; empty: per
    process."""

    def __post_init__(self) -> None:
        for setting in SETTINGS:
            value = getattr(self, setting.field)
            if not setting.valid(value):
                shown = setting.shown(value) if isinstance(value, str) else value
                raise ConfigurationError(
                    f"{setting.field}={shown!r} is not valid; accepted: {setting.accepted}"
                )
        if self.max_wait < self.initial_wait:
            raise ConfigurationError(
                f"max_wait ({self.max_wait}) must be >= initial_wait ({self.initial_wait})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        """Build the policy from ``OTEL_OPENAI_RETRY_*``; unset variables keep their default."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for setting in SETTINGS:
            raw = env.get(setting.variable)
            if raw is not None and raw.strip():
                values[setting.field] = setting.from_text(raw)
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ConfigurationError:
            if "max_wait" not in values and "initial_wait" not in values:
                raise
            # The only check across fields: say it in the variables' terms.
            defaults = cls()
            maximum = values.get("max_wait", defaults.max_wait)
            initial = values.get("initial_wait", defaults.initial_wait)
            raise ConfigurationError(
                f"{ENV_VARS['max_wait']}={maximum!r} is smaller than "
                f"{ENV_VARS['initial_wait']}={initial!r}; the backoff cap must be >= "
                "the first backoff"
            ) from None


def parse_bool(var: str, environ: Mapping[str, str] | None = None, *, default: bool) -> bool:
    """Read a boolean variable, refusing spellings we would otherwise have to guess at."""
    env = os.environ if environ is None else environ
    raw = env.get(var)
    if raw is None or raw.strip() == "":
        return default
    value = _read_bool(raw.strip())
    if value is None:
        raise ConfigurationError(f"{var}={raw!r} is not a boolean; accepted: {_BOOLEANS}")
    return bool(value)
