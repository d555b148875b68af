"""Figures the reliability tests report, shown at the end of the run (``pytest`` summary)."""

from __future__ import annotations

import pytest

_figures: list[str] = []


def report_figures(line: str) -> None:
    """Keep a line for the terminal summary: the chaos run's figures belong in the report."""
    _figures.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _figures:
        terminalreporter.section("reliability figures")
        for line in _figures:
            terminalreporter.write_line(line)
