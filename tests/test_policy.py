"""Configuration: each bad value gives an error naming the variable, the value, what is accepted."""

from __future__ import annotations

import pytest

import otel_openai_retry
from otel_openai_retry import ConfigurationError, OpenAIRetryInstrumentor, RetryPolicy


def test_defaults_are_the_documented_ones() -> None:
    policy = RetryPolicy.from_env({})
    assert policy == RetryPolicy(
        max_attempts=5, initial_wait=0.5, max_wait=20, timeout=0, max_retry_after=120
    )


def test_every_variable_is_read() -> None:
    policy = RetryPolicy.from_env(
        {
            "OTEL_OPENAI_RETRY_MAX_ATTEMPTS": "7",
            "OTEL_OPENAI_RETRY_INITIAL_WAIT": "0.25",
            "OTEL_OPENAI_RETRY_MAX_WAIT": " 9 ",
            "OTEL_OPENAI_RETRY_TIMEOUT": "30",
            "OTEL_OPENAI_RETRY_MAX_RETRY_AFTER": "60",
        }
    )
    assert policy == RetryPolicy(
        max_attempts=7, initial_wait=0.25, max_wait=9, timeout=30, max_retry_after=60
    )


@pytest.mark.parametrize(
    ("raw", "expected"), [("5", 5), ("5.0", 5), ("+5", 5), (" 12 ", 12), ("007", 7)]
)
def test_a_whole_number_of_attempts_may_be_written_with_a_zero_fraction(
    raw: str, expected: int
) -> None:
    policy = RetryPolicy.from_env({"OTEL_OPENAI_RETRY_MAX_ATTEMPTS": raw})
    assert policy.max_attempts == expected
    assert type(policy.max_attempts) is int


@pytest.mark.parametrize(("raw", "expected"), [("1e2", 100.0), (".5", 0.5), ("3.", 3.0)])
def test_seconds_take_plain_decimal_notation(raw: str, expected: float) -> None:
    assert RetryPolicy.from_env({"OTEL_OPENAI_RETRY_MAX_RETRY_AFTER": raw}).max_retry_after == (
        expected
    )


BAD_VALUES = [
    ("OTEL_OPENAI_RETRY_MAX_ATTEMPTS", "abc", "a whole number >= 1"),
    ("OTEL_OPENAI_RETRY_MAX_ATTEMPTS", "0", "a whole number >= 1"),
    ("OTEL_OPENAI_RETRY_MAX_ATTEMPTS", "-2", "a whole number >= 1"),
    ("OTEL_OPENAI_RETRY_MAX_ATTEMPTS", "2.5", "a whole number >= 1"),
    ("OTEL_OPENAI_RETRY_INITIAL_WAIT", "-1", "a number of seconds >= 0"),
    ("OTEL_OPENAI_RETRY_INITIAL_WAIT", "soon", "a number of seconds >= 0"),
    ("OTEL_OPENAI_RETRY_INITIAL_WAIT", "nan", "a number of seconds >= 0"),
    ("OTEL_OPENAI_RETRY_MAX_WAIT", "inf", "a number of seconds >= 0"),
    ("OTEL_OPENAI_RETRY_MAX_WAIT", "-0.5", "a number of seconds >= 0"),
    ("OTEL_OPENAI_RETRY_TIMEOUT", "-5", "0 means no deadline"),
    ("OTEL_OPENAI_RETRY_TIMEOUT", "1m", "0 means no deadline"),
    ("OTEL_OPENAI_RETRY_MAX_RETRY_AFTER", "x", "a number of seconds >= 0"),
]


@pytest.mark.parametrize(("var", "value", "accepted"), BAD_VALUES)
def test_bad_value_names_variable_value_and_what_is_accepted(
    var: str, value: str, accepted: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        RetryPolicy.from_env({var: value})
    message = str(raised.value)
    assert var in message
    assert repr(value) in message
    assert accepted in message


def test_max_wait_below_initial_wait_is_refused() -> None:
    with pytest.raises(ConfigurationError) as raised:
        RetryPolicy.from_env(
            {"OTEL_OPENAI_RETRY_INITIAL_WAIT": "5", "OTEL_OPENAI_RETRY_MAX_WAIT": "1"}
        )
    message = str(raised.value)
    assert "OTEL_OPENAI_RETRY_MAX_WAIT=1.0" in message
    assert "OTEL_OPENAI_RETRY_INITIAL_WAIT=5.0" in message


def test_max_wait_below_default_initial_wait_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="OTEL_OPENAI_RETRY_MAX_WAIT"):
        RetryPolicy.from_env({"OTEL_OPENAI_RETRY_MAX_WAIT": "0.1"})


@pytest.mark.parametrize("value", ["maybe", "enabled", "2", "yes please"])
def test_unknown_boolean_spelling_is_refused_at_instrument_time(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_OPENAI_RETRY_ENABLED", value)
    instrumentor = OpenAIRetryInstrumentor()
    with pytest.raises(ConfigurationError) as raised:
        instrumentor.instrument()
    assert f"OTEL_OPENAI_RETRY_ENABLED={value!r}" in str(raised.value)
    assert "true" in str(raised.value) and "false" in str(raised.value)
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_bad_environment_fails_at_instrument_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_OPENAI_RETRY_MAX_ATTEMPTS", "zero")
    instrumentor = OpenAIRetryInstrumentor()
    with pytest.raises(ConfigurationError, match="OTEL_OPENAI_RETRY_MAX_ATTEMPTS='zero'"):
        instrumentor.instrument()
    assert not instrumentor.is_instrumented_by_opentelemetry


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"initial_wait": -1.0}, {"max_wait": float("nan")}, {"timeout": -1.0}],
)
def test_policy_in_code_is_validated_too(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 3  # type: ignore[misc]


def test_public_all_is_sorted_and_complete() -> None:
    names = otel_openai_retry.__all__
    assert list(names) == sorted(names)
    public = {n for n in dir(otel_openai_retry) if not n.startswith("_")} - {
        "auto",
        "package",
        "version",
        "testing",
        "langchain",
    }
    assert public <= set(names), public - set(names)
    for name in names:
        assert hasattr(otel_openai_retry, name)
