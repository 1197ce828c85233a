"""The SQLite state store's connection, under :class:`runner.state.store.Store`.

Opening (creating the file, or for the commands that only look a read-only connection
that never changes it), migrating (:mod:`runner.state.migrations`, refusing a newer
schema), transactions (``BEGIN IMMEDIATE``: the write lock before any read) with
SQLite's errors translated into :class:`StoreError`, the reads
:class:`~runner.state.queries.StoreQueries` asks for, and the changes a transaction made
reported to ``on_transition`` once it committed.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.clock import iso, utc_now
from runner.core.errors import StoreError
from runner.core.redaction import Redactor
from runner.state.interface import StateStore
from runner.state.migrations import MIGRATIONS, check_version
from runner.state.moves import RUN_COLUMNS, change_of, run_from_row
from runner.state.sqlitefile import create_database, existing_database, translated

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from datetime import datetime

    from sqlite_utils import Database

    from runner.core.states import RunState
    from runner.state.records import RunChange, RunRecord

#: The select of a run row's columns, in :class:`RunRecord`'s order.
SELECT_RUNS = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"

# busy_timeout first: switching to WAL needs a lock another process may hold.
_PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


# A looking-only connection: never writes, so it never changes the file.
_READ_ONLY_PRAGMAS = ("PRAGMA busy_timeout=5000", "PRAGMA query_only=ON")


def _set_pragmas(conn: sqlite3.Connection) -> None:
    for pragma in _PRAGMAS:
        conn.execute(pragma)


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class SqliteConnection(StateStore):  # pylint: disable=abstract-method  # moves: the store's
    """One connection to the state database at ``path``, migrated to this omni's schema."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_transition: Callable[[RunChange], None] | None = None,
        redactor: Redactor | None = None,
        read_only: bool = False,
    ) -> None:
        """Open (creating and migrating) the database at ``path``; with ``read_only``, an
        existing, up-to-date one that this object never writes (:class:`StoreError`
        otherwise): the commands that only look (``status``, ``tasks``, ``show``,
        ``run --once --dry-run``) leave the file as they found it."""
        self.path = Path(path)
        self._clock = clock
        # Without secrets it still masks URL userinfo.
        self._redact = (redactor or Redactor([])).text
        # Changes made inside the open transaction; reported only once it commits.
        self._on_transition = on_transition
        self._changes: list[RunChange] = []
        # A store may be shared by threads (the runner keeps it on the event loop's, but
        # a caller need not); one connection must never interleave two transactions.
        self._lock = threading.RLock()
        try:
            if read_only:
                existing_database(self.path)  # refuses a file that is not one
                # rw, not ro: a read-only connection leaves the -wal and -shm files behind.
                uri = f"{self.path.absolute().as_uri()}?mode=rw"
                self._conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not existing_database(self.path):  # refuses a file that is not one
                    create_database(self.path, _set_pragmas)
                self._conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the state database: {exc}") from exc
        try:
            with translated(self.path):
                if read_only:
                    for pragma in _READ_ONLY_PRAGMAS:
                        self._conn.execute(pragma)
                else:
                    _set_pragmas(self._conn)
                self._utils: Database | None = None
                if read_only:
                    self._check_schema()
                else:
                    self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        with self._lock:
            self._conn.close()

    # -- plumbing -------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: the write lock is taken before any read,
        so a read-then-write can never act on a row another process has since changed."""
        with self._lock, translated(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._changes.clear()
                if self._conn.in_transaction:
                    with suppress(sqlite3.Error):  # the first error is the one to report
                        self._conn.execute("ROLLBACK")
                raise
            changes, self._changes = self._changes, []
            if self._on_transition is not None:
                for change in changes:
                    self._on_transition(change)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads outside a transaction; SQLite's errors become
        :class:`StoreError` (a damaged file says so, and what to do)."""
        with self._lock, translated(self.path):
            yield self._conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._locked() as conn:
            return _dicts(conn.execute(sql, params))

    def _query_runs(self, where: str, params: Sequence[Any] = ()) -> list[RunRecord]:
        with self._locked() as conn:
            rows = conn.execute(f"{SELECT_RUNS} {where}", params).fetchall()
        return [run_from_row(row) for row in rows]

    @property
    def _db(self) -> Database:
        """sqlite-utils over the connection, for migrations; loaded only when one
        runs (it imports numpy: a tenth of a second)."""
        if self._utils is None:
            # pylint: disable-next=import-outside-toplevel
            from sqlite_utils import Database  # noqa: PLC0415

            self._utils = Database(self._conn, recursive_triggers=False, execute_plugins=False)
        return self._utils

    def _utils_for_migrations(self) -> Database:
        """:attr:`_db` for the migrations at open, loading sqlite-utils without numpy and
        pandas when they are not loaded yet: it imports them, if installed, only to map
        their types, which omni never writes (numpy alone costs a fifth of a second of
        every fresh state file: a CI machine's every run). Only here, at open, before
        the process starts other threads that might import them meanwhile."""
        blocked = [name for name in ("numpy", "pandas") if name not in sys.modules]
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  # import fails: "not installed"
        try:
            return self._db
        finally:
            for name in blocked:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]

    def _now(self) -> str:
        return iso(self._clock())

    def _migrate(self) -> None:
        known = len(MIGRATIONS)
        # A plain read first, so opening an up-to-date database never waits for the
        # write lock another process may be holding.
        if self._schema_version() == known:
            return
        with self._write() as conn:
            self._utils_for_migrations().table("schema_migrations").create(
                {"version": int, "applied_at": str}, pk="version", if_not_exists=True
            )
            found = self._schema_version()
            check_version(str(self.path), found, known, "point --state elsewhere")
            for version in range(found + 1, known + 1):
                MIGRATIONS[version - 1](self._db)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, self._now()),
                )

    def _check_schema(self) -> None:
        found = self._schema_version()
        if found != len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: state database schema {found}, this omni reads schema"
                f" {len(MIGRATIONS)}; `omni run --once` brings it up to date"
            )

    def _schema_version(self) -> int:
        table = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if table is None:
            return 0
        row = self._conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return row[0] or 0

    def _note(self, run: RunRecord, old: RunState | None, new: RunState, detail: str) -> None:
        if self._on_transition is not None:
            self._changes.append(change_of(run, old, new, detail))
