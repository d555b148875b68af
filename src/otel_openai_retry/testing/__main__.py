"""``python -m otel_openai_retry.testing``: the fake server as a process, for demos and benchmarks.

It prints ``listening on <base_url>`` once the port accepts connections, so that whatever started
it can read the line and connect without guessing a port or sleeping.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from ._chaos import CHAOS_HELP, Chaos, parse_chaos
from ._header_faults import FAULT_HEADER
from ._limits import HINT_MODES, Hints
from ._script import SCRIPT_HELP, parse_script
from ._server import FakeOpenAIServer
from ._state import RecordedRequest

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    # Under `python -m`, argparse would call the program "__main__.py".
    invoked_as_module = os.path.basename(sys.argv[0]) == "__main__.py"
    parser = argparse.ArgumentParser(
        prog="python -m otel_openai_retry.testing" if invoked_as_module else None,
        description=(
            "Serve a fake OpenAI-compatible API (/v1/chat/completions, /v1/completions,\n"
            "/v1/embeddings, /v1/responses, /v1/models, /v1/files) that answers with scripted\n"
            "faults, until SIGINT or SIGTERM. Prints 'listening on BASE_URL' once it accepts\n"
            "requests. Structured output (response_format / text.format with a JSON schema)\n"
            "gets JSON valid for the schema; a request with tools gets a call to one (the\n"
            "one tool_choice names, else the first), with arguments valid for its parameters;\n"
            "the follow-up with the tool's result gets text. Azure paths are served too:\n"
            "AzureOpenAI(azure_endpoint=URL without /v1, api_version=..., azure_deployment=...)\n"
            "(/openai/deployments/NAME/...?api-version=V: 404 without api-version)."
        ),
        epilog=(
            f"--script syntax: {SCRIPT_HELP}\n\n{CHAOS_HELP}\n\n"
            f"{FAULT_HEADER}: REQUEST HEADER, the same syntax: a request carrying it gets the\n"
            "  fault it names, whatever the script; with a list, the n-th request carrying the\n"
            "  same value gets the n-th fault (a retry re-sends the header), later ones succeed;\n"
            "  a new x-fake-openai-fault-key: TEXT (e.g. the test's name) starts it over.\n"
            f"  A value that does not parse is answered 400. e.g. {FAULT_HEADER}: 429:retry-after=2"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=0, help="port; 0 lets the OS pick one (default: %(default)s)"
    )
    parser.add_argument(
        "--script", default="", metavar="FAULTS", help="faults for the first requests (see below)"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="do not log each request on standard error"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="S", help="answer successes after S seconds"
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="RPS",
        help="token-bucket limit in requests/s; over it, 429 (see --burst, --no-hints)",
    )
    parser.add_argument("--burst", type=int, default=10, help="token bucket size (default: 10)")
    parser.add_argument(
        "--tpm",
        type=int,
        default=None,
        metavar="TOKENS",
        help="tokens-per-minute limit beside the requests one; each request is charged prompt "
        "characters / 4 + max_tokens x n; over it, 429 type tokens (see --tpm-bucket)",
    )
    parser.add_argument(
        "--tpm-bucket",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds of tokens the --tpm bucket holds (default: %(default)s)",
    )
    parser.add_argument(
        "--no-hints",
        action="store_true",
        help="no retry-after-ms and x-ratelimit-* headers from --rate-limit and --tpm",
    )
    parser.add_argument(
        "--hints",
        choices=HINT_MODES,
        default=None,
        help="the hints of --rate-limit and --tpm: retry-after-ms (ms, the default), a "
        "whole-second retry-after (seconds), x-ratelimit-* only (headers), or none",
    )
    parser.add_argument(
        "--quota-exhausted",
        action="store_true",
        help="answer every request 429 insufficient_quota",
    )
    parser.add_argument(
        "--sized-usage",
        action="store_true",
        help="usage follows each request's size (as --tpm charges it) instead of word counts",
    )
    parser.add_argument(
        "--reject",
        type=float,
        default=None,
        metavar="FRACTION",
        help="answer 429 (retry-after-ms: 100) to this random fraction of requests",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of --reject's random choice")
    parser.add_argument(
        "--reject-limit",
        choices=("requests", "tokens"),
        default="requests",
        help="the limit --reject's 429 bodies name as hit (type: requests or tokens)",
    )
    parser.add_argument(
        "--chunk-latency",
        type=float,
        default=0.0,
        metavar="S",
        help="S seconds between the events of every successful stream (per token)",
    )
    parser.add_argument(
        "--chaos",
        type=_chaos,
        default=None,
        metavar="SPEC",
        help="seeded random faults per request, e.g. seed=1,429=0.1,500=0.05,drop=0.02 (below)",
    )
    return parser


def _chaos(text: str) -> Chaos:
    try:
        return parse_chaos(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _log_request(record: RecordedRequest) -> None:
    retry = "" if record.retry_count is None else f" retry={record.retry_count}"
    print(f"{record.method} {record.path}{retry} -> {record.fault!r}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = parse_script(args.script)
    except ValueError as exc:
        parser.error(str(exc))

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = FakeOpenAIServer(args.host, args.port, on_request=None if args.quiet else _log_request)
    try:
        try:
            server.start()
        except RuntimeError as exc:
            print(f"error: {exc}: {exc.__cause__}", file=sys.stderr)
            return 1
        server.script(*faults)
        server.set_latency(args.latency)
        server.set_chunk_latency(args.chunk_latency)
        server.set_chaos(args.chaos)
        hints: bool | Hints = False if args.no_hints else args.hints or True
        if args.rate_limit is not None:
            server.set_rate_limit(args.rate_limit, args.burst, hints=hints)
        if args.tpm is not None:
            server.set_token_limit(args.tpm, args.tpm_bucket, hints=hints)
        server.set_quota_exhausted(args.quota_exhausted)
        server.set_sized_usage(args.sized_usage)
        if args.reject is not None:
            server.set_random_rejections(args.reject, args.seed, limit=args.reject_limit)
        # Flushed: the reader is usually a pipe, where nothing shows up until the buffer fills.
        print(f"listening on {server.base_url}", flush=True)
        # A timeout keeps the main thread waking up, so the signal handler runs promptly.
        while not stopping.wait(0.2):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
