"""Where a run's 429s came from, read from the fake server's journal.

Each benchmark process tags its requests with ``x-bench-process``; the journal's arrival times
then say, per process, whether a 429 belongs to its first wave (its opening burst, sent before any
answer could slow it), to the second after it (the schedule still learning), or to the steady
state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from otel_openai_retry.testing import RecordedRequest

__all__ = ["PROCESS_HEADER", "Sources", "sources"]

PROCESS_HEADER = "x-bench-process"
WAVE_S = 0.1
"""Seconds after a process's first request that count as its first wave."""
LEARNING_S = 1.0
"""Seconds after its first wave still counted as its learning phase."""


@dataclass(frozen=True)
class Sources:
    """429s of one run: sent before the sender's first answer came back (its first wave), within
    ``LEARNING_S`` of it, and after (the steady state); and the steady state's by process."""

    first_wave: int
    learning: int
    steady: int
    steady_by_process: tuple[int, ...]

    def __str__(self) -> str:
        per = "/".join(str(n) for n in self.steady_by_process)
        return (
            f"first wave {self.first_wave}, learning {self.learning}, steady {self.steady} ({per})"
        )


def sources(journal: Sequence[RecordedRequest]) -> Sources:
    """Split the run's 429s by when they arrived after their process's first request."""
    first: dict[str, float] = {}
    for record in journal:
        process = record.headers.get(PROCESS_HEADER, "")
        first[process] = min(first.get(process, record.received_at), record.received_at)
    counts = [0, 0, 0]
    steady: dict[str, int] = dict.fromkeys(sorted(first, key=_number), 0)
    for record in journal:
        if record.fault.status_code != 429:
            continue
        process = record.headers.get(PROCESS_HEADER, "")
        since = record.received_at - first[process]
        phase = 0 if since < WAVE_S else 1 if since < WAVE_S + LEARNING_S else 2
        counts[phase] += 1
        if phase == 2:
            steady[process] += 1
    return Sources(counts[0], counts[1], counts[2], tuple(steady.values()))


def _number(process: str) -> int:
    return int(process) if process.isdigit() else -1
