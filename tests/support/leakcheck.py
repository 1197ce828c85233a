"""The pytest plugin that runs the leak scan (:mod:`tests.support.leakscan`) once the
session is over, on pytest's basetemp, whatever part of the suite ran: a planted secret
found anywhere there fails the session, with a report naming each place (never the
secret). ``tests/conftest.py`` loads it for every ``pytest`` run.
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.leakscan import Scan, scan

BASETEMP = pytest.StashKey["Path"]()
SCANNED = pytest.StashKey[Scan]()
#: The planted secrets by their names in tests/support/planted.py.
SECRETS = {
    "SECRET": planted.SECRET,
    "ENV_SECRET": planted.ENV_SECRET,
    "URL_PASSWORD": planted.URL_PASSWORD,
}


@pytest.fixture(scope="session", autouse=True)
def _leak_scan_root(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> None:
    """Note the session's basetemp, where every test's ``tmp_path`` lies."""
    pytestconfig.stash[BASETEMP] = tmp_path_factory.getbasetemp()


@pytest.hookimpl(tryfirst=True)  # before pytest's own may remove the basetemp
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Scan the basetemp; any hit fails the session."""
    root = session.config.stash.get(BASETEMP, None)
    if root is None or not root.is_dir():
        return
    found = session.config.stash[SCANNED] = scan(root, SECRETS)
    if found.hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The scan's one-line summary; and each hit, when there are any."""
    found = config.stash.get(SCANNED, None)
    if found is None:
        return
    if found.hits:
        terminalreporter.section("planted secrets found after the session", sep="=", red=True)
        terminalreporter.line(f"under {config.stash[BASETEMP]}:")
        for hit in found.hits:
            terminalreporter.line(f"  {hit}", red=True)
    terminalreporter.write_line(found.summary())
