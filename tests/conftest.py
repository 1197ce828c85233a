"""Fixtures every test folder shares: the private PostgreSQL cluster
(:mod:`tests.support.postgres`), started once a session, and a fresh database a test.
And every session ends with the session-wide leak scan (``tests/support/leakcheck.py``);
``pytester`` is there for the tests of that scan."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from tests.support.postgres import Cluster, Unavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

pytest_plugins = ["pytester", "tests.support.leakcheck"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The session's PostgreSQL cluster (skips, off CI, where PostgreSQL is missing)."""
    try:
        cluster = Cluster()
    except Unavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is needed on CI: {exc}")
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """The URL of a new, empty database for this test."""
    return pg_cluster.database()
