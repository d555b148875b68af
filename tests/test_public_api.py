"""The public API, exactly: a name added or lost here is a release note, never an accident."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "otel_openai_retry": [
        "ConfigurationError",
        "OpenAIRetryInstrumentor",
        "Outcome",
        "RetryDetails",
        "RetryHook",
        "RetryPolicy",
        "__version__",
        "get_on_retry_hooks",
        "set_on_retry_hooks",
    ],
    "otel_openai_retry.testing": [
        "Chaos",
        "FakeOpenAI",
        "FakeOpenAIServer",
        "FakeServerProcess",
        "Fault",
        "RecordedRequest",
        "RetryTelemetry",
        "Verdict",
        "set_testing",
    ],
    "otel_openai_retry.langchain": [
        "LangChainRetryInstrumentor",
        "acompletion_with_retry",
        "completion_with_retry",
        "reporting_to",
    ],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_all_is_exactly_the_public_api(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__ == PUBLIC[module_name]
    for name in module.__all__:
        assert getattr(module, name) is not None
    undeclared = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith(module_name)
        and name not in module.__all__
    }
    assert undeclared == set(), "public-looking names missing from __all__"


def test_the_instrumented_openai_range_is_the_one_the_package_requires() -> None:
    """``opentelemetry-instrument`` skips an instrumentor whose ``_instruments`` the installed
    SDK does not satisfy: the range it checks must be the one the package was tested with."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    from otel_openai_retry.package import _instruments

    required = [Requirement(r) for r in requires("otel-openai-retry") or []]
    (openai,) = [r for r in required if r.name == "openai" and r.marker is None]
    assert [Requirement(r).specifier for r in _instruments] == [openai.specifier]
