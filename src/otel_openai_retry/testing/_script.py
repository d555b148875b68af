"""The command line's fault mini-language: ``"429:retry-after-ms=50,500,ok,drop,delay=2"``.

Deliberately small: just enough to drive a demo or a benchmark from a shell. Anything richer is
written in Python with :class:`Fault` directly.
"""

from __future__ import annotations

from typing import Any

from ._faults import Fault

__all__ = ["SCRIPT_HELP", "parse_script"]

SCRIPT_HELP = """\
comma-separated faults, applied to the next requests in order (later requests succeed):
  ok                      a normal answer
  STATUS                  that HTTP status with an OpenAI error body, e.g. 400, 429, 500, 503
  STATUS:OPTION=VALUE...  with response hints, options joined by ':'
                            retry-after-ms=N     `retry-after-ms: N`
                            retry-after=N        `retry-after: N` (seconds, sent as written)
                            retry-after-date=N   `retry-after` as an HTTP date N seconds ahead
                            should-retry=BOOL    `x-should-retry: true|false`
                            type=TYPE            the error body's type, e.g. 429:type=tokens
  quota                   429 insufficient_quota (an account out of credit)
  drop                    close the connection without answering
  delay=S                 answer normally after S seconds
  break=N                 send N stream events, then cut the connection
  slow=S                  answer normally, S seconds between stream events (per token)
  stall=N[:S]             after N stream events (half a JSON body), hang S seconds, or
                          until the client hangs up without S, then finish
  bad-sse=N               after N stream events, one whose data is not JSON, then the rest
  bad-json                a 200 whose body is not JSON
  truncated-json          a 200 whose JSON body stops halfway (content-length agrees)
example: 429:retry-after-ms=50,500,ok,drop,delay=2,400"""


def parse_script(text: str) -> list[Fault]:
    """Parse the mini-language; raises ``ValueError`` naming the item it could not read."""
    return [_parse_item(item.strip()) for item in text.split(",") if item.strip()]


def _parse_item(item: str) -> Fault:
    try:
        return _parse(item)
    except ValueError as exc:
        raise ValueError(f"bad fault {item!r}: {exc}") from None


def _parse(item: str) -> Fault:
    word, _, value = item.partition("=")
    word = word.strip().lower()
    if word == "ok" and not value:
        return Fault.ok()
    if word == "drop" and not value:
        return Fault.drop()
    if word == "quota" and not value:
        return Fault.insufficient_quota()
    if word == "delay":
        return Fault.delay(float(value))
    if word == "break":
        return Fault.stream_break(int(value))
    if word == "slow":
        return Fault.slow_stream(float(value))
    if word == "stall":
        after, _, seconds = value.partition(":")
        return Fault.stream_stall(int(after), float(seconds) if seconds else None)
    if word == "bad-sse":
        return Fault.bad_sse_frame(int(value))
    if word == "bad-json" and not value:
        return Fault.invalid_json()
    if word == "truncated-json" and not value:
        return Fault.truncated_json()

    status, *options = item.split(":")
    return Fault(status_code=int(status), **_options(options))


def _options(options: list[str]) -> dict[str, Any]:
    """The ``:NAME=VALUE`` options of a status, as :class:`Fault`'s keyword arguments."""
    headers: dict[str, str] = {}
    fields: dict[str, Any] = {}
    for option in options:
        name, sep, option_value = option.partition("=")
        name = name.strip().lower()
        option_value = option_value.strip()
        if not sep or not option_value:
            raise ValueError(f"option {option!r} needs a value")
        if name in ("retry-after-ms", "retry-after"):
            headers[name] = option_value
        elif name == "retry-after-date":
            fields["retry_after_date_in"] = float(option_value)
        elif name == "should-retry":
            if option_value.lower() not in ("true", "false"):
                raise ValueError("should-retry takes true or false")
            headers["x-should-retry"] = option_value.lower()
        elif name == "type":
            fields["error_type"] = option_value
        else:
            raise ValueError(f"unknown option {name!r}")
    if "retry-after" in headers and "retry_after_date_in" in fields:
        raise ValueError("retry-after and retry-after-date both set `retry-after`")
    return {**fields, "headers": tuple(headers.items())}
