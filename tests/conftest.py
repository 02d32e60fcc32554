"""Shared fixtures: tests scrub REHOST_* variables and use temporary data directories.

CI declares what it must test (``REHOST_TEST_REQUIRE``, set by ``.ci/run``): there a skipped test is a
failed one, so a green run cannot hide missing PostgreSQL, root, conversion, VM or browser coverage.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest

# Read at import: the fixture below scrubs REHOST_* from each test's environment.
REQUIRED = [name for name in os.environ.get("REHOST_TEST_REQUIRE", "").split(",") if name.strip()]


@pytest.fixture(autouse=True)
def _scrub_rehost_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REHOST_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """`rehost.cli.main.main` sets the process's umask to 077, as the CLI should; a test calling it in
    process must not leave that to the tests after it (directories they make would turn 0700)."""
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if REQUIRED and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where it must run (REHOST_TEST_REQUIRE={','.join(REQUIRED)}): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome: Any = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome: Any = yield
    _fail_skip(outcome.get_result())


def pytest_report_header(config: pytest.Config) -> str | None:
    if REQUIRED:
        return f"rehost: must test {', '.join(REQUIRED)}; a skipped test fails"
    return None
