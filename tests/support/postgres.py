"""A private PostgreSQL cluster for the tests: ``initdb`` + ``pg_ctl`` from the
distribution's packages, in a temp folder, on 127.0.0.1 and a free port, as a non-root
user (PostgreSQL refuses root; as root the cluster runs as the ``postgres`` user).

Where no cluster can start, :class:`Cluster` raises :class:`Unavailable`; the tests'
fixture then skips off CI, saying why, and fails with ``CI=true`` (``.ci/run`` installs
PostgreSQL). ``bench/scale_out.py`` starts its cluster here too.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

_USER = "omni"
#: Speed over durability: a test cluster is thrown away.
_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200")


def _bin_dir() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` folder with ``initdb``, or ``None``."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable_reason() -> str | None:
    """Why no cluster can start here, or ``None``."""
    if _bin_dir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql); CI installs it"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run PostgreSQL as"
    return None


class Unavailable(RuntimeError):
    """No PostgreSQL cluster can start on this machine; the message says why."""


class Cluster:
    """One running cluster; :meth:`database` makes a fresh database for each test."""

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise Unavailable(reason)
        self._bin = _bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="omni-pg-"))
        self.port = _free_port()
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.data = self.folder / "data"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", _USER, "--no-sync")
        options = " ".join(
            [f"-h 127.0.0.1 -p {self.port} -k {self.folder}"]
            + [f"-c {setting}" for setting in _SETTINGS]
        )
        log = str(self.folder / "log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def _run(self, program: str, *args: str) -> None:
        assert self._bin is not None
        subprocess.run(
            [*self._as, str(self._bin / program), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def url(self, database: str = "postgres") -> str:
        """A URL of ``database`` on this cluster."""
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def stop(self) -> None:
        """Stop the cluster and remove its folder."""
        assert self._bin is not None
        subprocess.run(
            [*self._as, str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.folder, ignore_errors=True)
