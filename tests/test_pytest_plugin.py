"""The pytest plugin, tested as its users use it: test files written as a user writes them, run
in a pytest session of their own (``pytester``), and the fixtures used directly here."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import openai
import pytest
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue

from otel_openai_retry import OpenAIRetryInstrumentor, RetryPolicy
from otel_openai_retry._sleeps import is_testing
from otel_openai_retry.testing import FakeOpenAI, Fault, RetryTelemetry, Verdict, set_testing

from .helpers import sdk_httpx as httpx

pytest_plugins = ["pytester"]

README = Path(__file__).parent.parent / "README.md"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


@pytest.fixture
def user(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project: an empty directory with a pytest.ini, the plugin installed."""
    pytester.makefile(".ini", pytest=INI)
    return pytester


# -- a user's test files, in a session of their own ------------------------------------------


def test_a_users_first_test_passes_without_waiting(user: pytest.Pytester) -> None:
    user.makepyfile(
        test_app="""
        import time

        from openai import OpenAI
        from otel_openai_retry.testing import Fault


        def ask() -> str:
            answer = OpenAI().chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            return answer.choices[0].message.content


        def test_my_app(fake_openai):
            fake_openai.script(Fault.rate_limit(retry_after_ms=2000), Fault.server_error(503))
            started = time.monotonic()
            assert ask()
            elapsed = time.monotonic() - started
            [slept] = [
                span.attributes["openai_retry.total_sleep"]
                for span in fake_openai.telemetry.spans()
                if "openai_retry.total_sleep" in span.attributes
            ]
            assert slept >= 2.0 > elapsed  # 2 s asked for: recorded, not slept
            assert [r.fault.status_code for r in fake_openai.requests] == [429, 503, 200]
            assert fake_openai.verdict()
        """
    )
    user.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_every_verdict_passes_for_the_library_in_sync_and_async_code(
    user: pytest.Pytester,
) -> None:
    user.makepyfile(
        test_verdicts="""
        import openai
        import pytest
        from otel_openai_retry.testing import Fault

        MESSAGES = [{"role": "user", "content": "hi"}]


        def test_retry_after_in_seconds_and_ms(fake_openai):
            fake_openai.script(
                Fault.rate_limit(retry_after=3), Fault.rate_limit(retry_after_ms=250), Fault.drop()
            )
            openai.OpenAI().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            sleeps = [
                span.attributes.get("openai_retry.sleep")
                for span in fake_openai.telemetry.spans()
                if span.name.startswith("attempt")
            ]
            assert sleeps[0] >= 3 and sleeps[1] >= 0.25
            assert fake_openai.retry_after_honoured()
            assert fake_openai.attempts_match_requests()


        def test_x_should_retry_false_is_final(fake_openai):
            fake_openai.script(Fault.status(503, should_retry=False))
            with pytest.raises(openai.InternalServerError):
                openai.OpenAI().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert len(fake_openai.requests) == 1
            assert fake_openai.should_retry_false_obeyed()
            assert fake_openai.verdict()


        async def test_async_client(fake_openai):
            fake_openai.script(Fault.rate_limit(retry_after_ms=1500), Fault.server_error())
            client = openai.AsyncOpenAI()
            await client.embeddings.create(model="text-embedding-3-small", input="hi")
            assert len(fake_openai.requests) == 3
            assert fake_openai.verdict()


        def test_a_key_of_my_own_is_kept_out_of_telemetry(fake_openai):
            client = openai.OpenAI(api_key="sk-my-own-key-123456789")
            fake_openai.script(Fault.status(401))
            with pytest.raises(openai.AuthenticationError):
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert fake_openai.requests[0].headers["authorization"].endswith("123456789")
            assert fake_openai.no_secret_in_spans("my-org-secret")
        """
    )
    user.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)


def test_a_user_grades_their_own_policy_by_overriding_the_policy_fixture(
    user: pytest.Pytester,
) -> None:
    user.makeconftest(
        """
        import pytest
        from otel_openai_retry import RetryPolicy


        @pytest.fixture
        def openai_retry_policy():
            return RetryPolicy(max_attempts=3, max_retry_after=10)
        """
    )
    user.makepyfile(
        test_policy="""
        import openai
        import pytest
        from otel_openai_retry.testing import Fault

        MESSAGES = [{"role": "user", "content": "hi"}]


        def test_three_attempts_at_most(fake_openai):
            fake_openai.script(*[Fault.server_error()] * 4)
            with pytest.raises(openai.InternalServerError):
                openai.OpenAI().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert len(fake_openai.requests) == 3
            assert fake_openai.server.pending_faults == 1
            assert fake_openai.verdict()


        def test_a_hint_over_max_retry_after_gives_up(fake_openai):
            fake_openai.script(Fault.rate_limit(retry_after=60))
            with pytest.raises(openai.RateLimitError):
                openai.OpenAI().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert len(fake_openai.requests) == 1
            assert fake_openai.verdict()
        """
    )
    user.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_failed_verdict_says_what_went_wrong(user: pytest.Pytester) -> None:
    user.makepyfile(
        test_leaky_app="""
        import os

        import httpx
        import openai
        from otel_openai_retry.testing import Fault


        def test_a_request_around_the_sdk(fake_openai):
            openai.OpenAI().models.list()
            httpx.get(fake_openai.base_url + "/models")  # no attempt span for this one
            assert fake_openai.verdict()


        def test_my_span_leaks_the_key(fake_openai):
            tracer = fake_openai.telemetry.tracer_provider.get_tracer("my_app")
            with tracer.start_as_current_span("my span") as span:
                span.set_attribute("my.key", os.environ["OPENAI_API_KEY"])
            assert fake_openai.verdict()
        """
    )
    result = user.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: every verdict: FAILED",
            "E * - attempt spans equal requests received: the server received 2 request(s); "
            "there are 1 attempt(s)",
            "E * - no secret in any span: span 'my span', attribute my.key: holds the secret sk-…",
        ]
    )


def test_everything_is_undone_after_each_test(user: pytest.Pytester) -> None:
    user.makepyfile(
        test_order="""
        import os

        from otel_openai_retry import OpenAIRetryInstrumentor
        from otel_openai_retry._sleeps import is_testing


        def test_uses_the_fixture(fake_openai):
            assert os.environ["OPENAI_BASE_URL"] == fake_openai.base_url
            assert OpenAIRetryInstrumentor().is_instrumented_by_opentelemetry
            assert is_testing()


        def test_after_it():
            assert os.environ.get("OPENAI_BASE_URL") == "http://my-proxy.invalid/v1"
            assert "OPENAI_API_KEY" not in os.environ
            assert not OpenAIRetryInstrumentor().is_instrumented_by_opentelemetry
            assert not is_testing()
        """
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_BASE_URL", "http://my-proxy.invalid/v1")
        env.delenv("OPENAI_API_KEY", raising=False)
        user.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly").assert_outcomes(
            passed=2
        )


def test_the_plugin_costs_nothing_to_a_session_that_does_not_use_it(
    user: pytest.Pytester,
) -> None:
    """Nothing heavy is imported until a test asks for a fixture: measured against the same
    session with the plugin turned off, since other plugins may import some of it themselves
    (langsmith's imports aiohttp)."""
    user.makepyfile(
        test_other="""
        import json
        import sys


        def test_unrelated(request):
            on = request.config.pluginmanager.has_plugin("otel_openai_retry")
            loaded = [m for m in ("otel_openai_retry", "openai", "aiohttp") if m in sys.modules]
            with open(f"loaded-{'on' if on else 'off'}.json", "w") as out:
                json.dump(loaded, out)
        """
    )
    result = user.runpytest_subprocess("-p", "no:cacheprovider", "--trace-config")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*otel_openai_retry*_otel_openai_retry_pytest*"])
    without = user.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:otel_openai_retry")
    without.assert_outcomes(passed=1)

    loaded = json.loads((user.path / "loaded-on.json").read_text())
    assert "otel_openai_retry" not in loaded
    assert loaded == json.loads((user.path / "loaded-off.json").read_text())


def test_the_readme_plugin_example_runs_as_written(user: pytest.Pytester) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (example,) = [block for block in blocks if "def test_" in block and "fake_openai" in block]
    user.makepyfile(test_readme_example=example)
    outcomes = user.runpytest_subprocess("-p", "no:cacheprovider").parseoutcomes()
    assert outcomes.get("passed", 0) >= 2 and set(outcomes) == {"passed"}


# -- the fixtures used directly ----------------------------------------------------------------


def test_the_fixture_points_the_sdk_at_the_server(fake_openai: FakeOpenAI) -> None:
    openai.OpenAI().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (request,) = fake_openai.requests
    assert request.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert fake_openai.verdict()


def test_the_default_policy_waits_for_nothing_but_the_server(
    openai_retry_policy: RetryPolicy,
) -> None:
    assert (openai_retry_policy.initial_wait, openai_retry_policy.max_wait) == (0, 0)
    assert not openai_retry_policy.adaptive
    assert openai_retry_policy.max_attempts == RetryPolicy().max_attempts


def test_telemetry_without_the_server(
    openai_retry_telemetry: RetryTelemetry, fake_openai: FakeOpenAI
) -> None:
    assert fake_openai.telemetry is openai_retry_telemetry
    fake_openai.script(Fault.server_error())
    openai.OpenAI().embeddings.create(model="text-embedding-3-small", input="hi")
    (failed,) = openai_retry_telemetry.metric_points("openai_retry.client.failed_attempts")
    assert failed.value == 1
    assert [s.name for s in openai_retry_telemetry.spans()] == [
        "attempt 1",
        "attempt 2",
        "embeddings text-embedding-3-small",
    ]


def test_set_testing_makes_waits_instant_and_keeps_them_in_the_spans(
    openai_retry_telemetry: RetryTelemetry, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Fault.rate_limit(retry_after_ms=1200))
    set_testing(False)
    try:
        started = time.monotonic()
        openai.OpenAI().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        really = time.monotonic() - started
        assert really >= 1.2  # slept for real
    finally:
        set_testing(True)
    fake_openai.script(Fault.rate_limit(retry_after_ms=1200))
    started = time.monotonic()
    openai.OpenAI().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    # Against the same call that slept, in this run: at least half the sleep is gone.
    assert time.monotonic() - started < really - 0.6
    sleeps = [
        (s.attributes or {}).get("openai_retry.sleep")
        for s in openai_retry_telemetry.spans()
        if s.name == "attempt 1"
    ]
    assert all(isinstance(x, float) and x >= 1.2 for x in sleeps) and len(sleeps) == 2
    assert fake_openai.verdict()


def test_an_application_instrumented_already_is_taken_over_and_given_back() -> None:
    instrumentor = OpenAIRetryInstrumentor()
    instrumentor.instrument(policy=RetryPolicy())  # as `import otel_openai_retry.auto` does
    try:
        telemetry = RetryTelemetry(RetryPolicy(initial_wait=0, max_wait=0))
        with telemetry.instrumented():
            assert instrumentor.is_instrumented_by_opentelemetry and is_testing()
        assert instrumentor.is_instrumented_by_opentelemetry and not is_testing()
    finally:
        instrumentor.uninstrument()


# -- a verdict catches what it is there to catch ---------------------------------------------


def _forged_call(fake_openai: FakeOpenAI, *attempts: dict[str, AttributeValue]) -> None:
    """Spans as a broken client would make them, under the library's own scope."""
    tracer = fake_openai.telemetry.tracer_provider.get_tracer("otel_openai_retry")
    with tracer.start_as_current_span("chat gpt-4o-mini") as call:
        call.set_attribute("openai_retry.attempts", len(attempts))
        for number, attributes in enumerate(attempts, start=1):
            with tracer.start_as_current_span(f"attempt {number}") as span:
                span.set_attributes({"openai_retry.attempt": number, **attributes})
                if "error.type" in attributes:
                    span.set_status(StatusCode.ERROR)


def test_retry_after_not_honoured_is_caught(fake_openai: FakeOpenAI) -> None:
    _forged_call(
        fake_openai,
        {"http.response.header.retry-after-ms": ("2000",), "openai_retry.sleep": 0.5},
        {},
    )
    with pytest.raises(AssertionError) as failed:
        fake_openai.retry_after_honoured()
    assert str(failed.value) == (
        "Retry-After honoured: FAILED\n"
        "  - 'chat gpt-4o-mini', attempt 1: the server asked for 2 s, the client slept 0.5 s\n"
        "  - the server sent 0 answer(s) with a retry hint; attempt spans record 1"
    )


def test_a_retry_after_x_should_retry_false_is_caught(fake_openai: FakeOpenAI) -> None:
    _forged_call(
        fake_openai,
        {"http.response.header.x-should-retry": ("false",), "openai_retry.sleep": 0},
        {},
    )
    with pytest.raises(
        AssertionError, match="attempt 1: answered x-should-retry: false, and retried"
    ):
        fake_openai.should_retry_false_obeyed()


def test_the_library_keeps_its_budget_and_a_client_over_it_is_caught(
    fake_openai: FakeOpenAI,
) -> None:
    client = openai.OpenAI(max_retries=300)  # the caller's count: the budget still holds
    fake_openai.script(*[Fault.server_error()] * 300)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    (call,) = [s for s in fake_openai.telemetry.spans() if s.name == "chat gpt-4o-mini"]
    assert (call.attributes or {})["openai_retry.outcome"] == "budget_exhausted"
    assert fake_openai.budget_kept()
    assert fake_openai.verdict()

    fake_openai.server.reset()  # a client without a budget: retries the server counts
    fake_openai.script(*[Fault.server_error()] * 150)
    with httpx.Client(base_url=fake_openai.base_url) as raw:
        for _ in range(150):
            raw.post("/embeddings", json={"model": "m"}, headers={"x-stainless-retry-count": "1"})
    with pytest.raises(AssertionError, match=r"model 'm': 1\d\d retries among 1\d\d requests"):
        fake_openai.budget_kept()


def test_a_verdict_reads_well() -> None:
    failed = Verdict.every(Verdict.of("a", ["x went wrong", "y too"]), Verdict.of("b", []))
    assert not failed
    assert str(failed) == "every verdict: FAILED\n  - a: x went wrong\n  - a: y too"
    with pytest.raises(AssertionError, match="x went wrong"):
        failed.require()
    passed = Verdict.of("b", [])
    assert passed.require() is passed and repr(passed) == "Verdict(b: passed)"
