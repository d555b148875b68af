"""Optional integrations cost nothing for users who do not install them."""

from __future__ import annotations

import textwrap

import pytest

from .helpers import run_python


def test_the_library_works_without_the_fake_servers_http_stack() -> None:
    """aiohttp belongs to the ``testing`` extra: without it (blocked here, as if not installed)
    the library instruments and patches as usual, and the fake server says what to install."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["aiohttp"] = None  # import aiohttp now raises ImportError
        import openai
        from otel_openai_retry import OpenAIRetryInstrumentor
        OpenAIRetryInstrumentor().instrument()
        from openai._base_client import SyncAPIClient
        print("patched", hasattr(SyncAPIClient.__dict__["request"], "__wrapped__"))
        try:
            import otel_openai_retry.testing
        except ImportError as exc:
            print("hint", exc)
        """
    )
    done = run_python("-c", code, env={"OTEL_SDK_DISABLED": "true"}, timeout=120)
    assert done.stdout.splitlines() == [
        "patched True",
        "hint otel_openai_retry.testing needs aiohttp: pip install 'otel-openai-retry[testing]'",
    ], done.stderr


def test_redis_is_imported_only_when_its_url_is_set() -> None:
    """No URL: not even imported. A URL without redis-py installed (blocked here): a clear error
    at instrument time, naming the variable and the extra, and nothing patched."""
    code = textwrap.dedent(
        """
        import os, sys
        from otel_openai_retry import ConfigurationError, OpenAIRetryInstrumentor
        instrumentor = OpenAIRetryInstrumentor()
        instrumentor.instrument()
        print("imported", "redis" in sys.modules)
        instrumentor.uninstrument()
        sys.modules["redis"] = None  # import redis now raises ImportError
        os.environ["OTEL_OPENAI_RETRY_REDIS_URL"] = "redis://127.0.0.1:1/0"
        try:
            instrumentor.instrument()
        except ConfigurationError as exc:
            print("refused", exc)
        print("patched", instrumentor.is_instrumented_by_opentelemetry)
        """
    )
    done = run_python("-c", code, env={"OTEL_SDK_DISABLED": "true"}, timeout=120)
    assert done.stdout.splitlines() == [
        "imported False",
        "refused OTEL_OPENAI_RETRY_REDIS_URL is set but redis-py is not installed: "
        "pip install 'otel-openai-retry[redis]'",
        "patched False",
    ], done.stderr


_WITHOUT_GRPC = textwrap.dedent(
    """
    import sys
    sys.modules["opentelemetry.exporter.otlp.proto.grpc"] = None  # as if not installed
    from openai._base_client import SyncAPIClient
    try:
        import otel_openai_retry.auto
    except Exception as exc:
        print("refused", type(exc).__name__, exc)
    else:
        from opentelemetry import trace
        print("imported", type(trace.get_tracer_provider()).__name__)
    print("patched", hasattr(SyncAPIClient.__dict__["request"], "__wrapped__"))
    """
)
_NEEDS_GRPC = (
    "needs the OTLP gRPC exporter, which is not installed: pip install 'otel-openai-retry[grpc]'"
)


@pytest.mark.parametrize(
    ("env", "chosen_by"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        (
            {"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "none"},
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=grpc",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp_proto_grpc"}, "OTEL_TRACES_EXPORTER=otlp_proto_grpc"),
        (
            {"OTEL_TRACES_EXPORTER": "console,otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
        ),
    ],
    ids=["protocol", "one-signal-protocol", "exporter-name", "otlp-among-others"],
)
def test_grpc_chosen_without_its_extra_is_a_clear_error(
    env: dict[str, str], chosen_by: str
) -> None:
    """The gRPC exporter is the ``grpc`` extra: settings that choose it without it installed
    fail the auto import with the setting and the install line, nothing patched, rather than
    the SDK's "component not found" about an entry point the user never named."""
    done = run_python("-c", _WITHOUT_GRPC, env=env, timeout=120)
    assert done.stdout.splitlines() == [
        f"refused ConfigurationError {chosen_by} {_NEEDS_GRPC} "
        "(or leave the protocol unset for http/protobuf)",
        "patched False",
    ], done.stderr


def test_grpc_is_not_needed_where_no_signal_exports_over_otlp() -> None:
    """A gRPC protocol with every exporter elsewhere (or none) asks nothing of the extra."""
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    done = run_python("-c", _WITHOUT_GRPC, env=env, timeout=120)
    assert done.stdout.splitlines() == ["imported TracerProvider", "patched True"], done.stderr
