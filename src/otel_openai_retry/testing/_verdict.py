"""``Verdict``: the outcome of one check, and the assertion error that says why it failed.

A verdict is what a test asserts: ``assert fake_openai.retry_after_honoured()``. A failed check
raises :class:`AssertionError` itself, its message naming the check and listing every finding one
per line, in full: pytest would cut a long ``repr`` of a false value short and fold its lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Verdict"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check of the client and its telemetry.

    True when nothing was found. ``findings`` says what was wrong, one sentence each;
    ``notes`` what the check could not look at (e.g. "no retry hint was sent"), for a reader
    wondering why a verdict passed.
    """

    check: str
    findings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return not self.findings

    @classmethod
    def of(cls, check: str, findings: Iterable[str], notes: Iterable[str] = ()) -> Verdict:
        return cls(check, tuple(findings), tuple(notes))

    @classmethod
    def every(cls, *verdicts: Verdict) -> Verdict:
        """One verdict for several: true when all are, with the findings of those that are not."""
        findings = [f"{v.check}: {finding}" for v in verdicts for finding in v.findings]
        return cls("every verdict", tuple(findings))

    def require(self) -> Verdict:
        """This verdict when it passed; else :class:`AssertionError` listing every finding."""
        if self.findings:
            raise AssertionError(str(self))
        return self

    def __str__(self) -> str:
        if not self.findings:
            return f"{self.check}: passed"
        lines = "".join(f"\n  - {finding}" for finding in self.findings)
        return f"{self.check}: FAILED{lines}"

    def __repr__(self) -> str:
        return f"Verdict({self})"
