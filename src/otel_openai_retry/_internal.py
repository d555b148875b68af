"""Telemetry must never break or lose the user's call.

Code that only observes (spans, metrics, callbacks we add) runs behind :func:`guarded`: an
exception there is logged once per place and swallowed. The test suite flips
:data:`raise_internal_errors` so that our own bugs fail tests instead of hiding.
"""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["guarded", "logger", "report_internal_error", "set_raise_internal_errors"]

logger = logging.getLogger("otel_openai_retry")

_P = ParamSpec("_P")
_R = TypeVar("_R")

_state = {"raise": False}
_already_logged: set[str] = set()


def set_raise_internal_errors(value: bool) -> None:
    """Re-raise internal telemetry errors instead of logging them (for test suites)."""
    _state["raise"] = value


def report_internal_error(where: str) -> None:
    """Handle the exception being handled now: re-raise under tests, else log it once."""
    if _state["raise"]:
        raise  # noqa: PLE0704 - called from an except block
    if where not in _already_logged:
        _already_logged.add(where)
        # Our own exception only, without its chain: the chain may be the user's call failing,
        # whose messages can quote a header value (an API key the transport refused).
        logger.error(
            "otel-openai-retry: internal error in %s; telemetry for this call may be "
            "incomplete, the call itself is unaffected (logged once)\n%s",
            where,
            "".join(traceback.format_exception(sys.exc_info()[1], chain=False)).rstrip(),
        )


def guarded(func: Callable[_P, _R | None]) -> Callable[_P, _R | None]:
    """Run ``func``; on an internal error log it once (per function) and return ``None``."""
    where = func.__qualname__

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R | None:
        try:
            return func(*args, **kwargs)
        except Exception:
            report_internal_error(where)
            return None

    return wrapper
