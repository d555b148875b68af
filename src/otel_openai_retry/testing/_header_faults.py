"""Faults chosen by the client: the ``x-fake-openai-fault`` request header.

For black-box tests written in any language, which can set a header but cannot script the server
over its control API between calls. The header's value is a fault list in the command line's
mini-language (``_script``): ``429:retry-after=2``, ``500``, ``drop``, ``429,500,ok`` ...

A list is a sequence over the requests that carry the same header value: the first such request
gets the first fault, its retry (which re-sends the header) the second, and so on; once the list
is used up, requests succeed. So ``x-fake-openai-fault: 429,503`` tests a client that retries
twice and then gets its answer, with no other set-up. :meth:`ServerState.reset` starts every
sequence over; so does a new ``x-fake-openai-fault-key`` (any text, e.g. the test's name): the
sequence is counted per value and key, so that two tests asking for the same faults each get
them from the start.

A value the mini-language cannot read is answered 400, naming the header and what is wrong with
the value, so that a typo never passes for a fault that did not happen.
"""

from __future__ import annotations

from ._faults import Fault
from ._script import parse_script

__all__ = ["FAULT_HEADER", "FAULT_KEY_HEADER", "HeaderFaults"]

FAULT_HEADER = "x-fake-openai-fault"
FAULT_KEY_HEADER = "x-fake-openai-fault-key"


class HeaderFaults:
    """How far each header value's sequence has got; not thread-safe (the state's lock is)."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, str], int] = {}

    def next(self, value: str, key: str = "") -> Fault:
        """The fault for one more request carrying ``value`` (and the sequence ``key``)."""
        try:
            faults = parse_script(value)
        except ValueError as exc:
            return _refusal(str(exc))
        if not faults:
            return _refusal("the value names no fault")
        used = self._used.get((value, key), 0)
        self._used[value, key] = used + 1
        return faults[used] if used < len(faults) else Fault.ok()

    def clear(self) -> None:
        self._used.clear()


def _refusal(reason: str) -> Fault:
    return Fault(
        status_code=400,
        message=f"{FAULT_HEADER}: {reason} (see python -m otel_openai_retry.testing --help)",
        error_code="invalid_fault_header",
    )
