"""The schemathesis run's figures, printed at the end of the session that runs it."""

from __future__ import annotations

import pytest

SCHEMATHESIS_REPORTS = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "schemathesis: the schemathesis run; bin/run-tests gives it a session"
    )


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    reports = config.stash.get(SCHEMATHESIS_REPORTS, [])
    if reports:
        terminalreporter.section("schemathesis")
        for line in reports:
            terminalreporter.write_line(line)
