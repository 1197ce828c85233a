"""The PostgreSQL ledger's connection, under :class:`runner.state.postgres.PostgresStore`.

Opening (and migrating: the mechanism of :mod:`runner.state.migrations`, with
:mod:`runner.state.pgschema`'s list, one migrator at a time; or, for the commands that
only look, a read-only session that migrates nothing), replacing a connection that
broke, statements and transactions with psycopg's errors translated into
:class:`StoreError` (the URL's password masked), the reads
:class:`~runner.state.queries.StoreQueries` asks for (and a pass's reads of every task
at once, one query each), and the changes a transaction made reported to
``on_transition`` once it committed.
"""

from __future__ import annotations

import contextlib
import math
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from runner.core.clock import iso, utc_now
from runner.core.dsn import dsn_secrets, shown
from runner.core.errors import StoreError
from runner.core.redaction import Redactor
from runner.core.states import RunState
from runner.state.interface import StateStore
from runner.state.migrations import check_version
from runner.state.moves import RUN_COLUMNS, change_of, run_from_row
from runner.state.pgschema import PG_MIGRATIONS
from runner.state.records import TaskRuns

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from datetime import datetime

    from runner.defs.tasks import Task
    from runner.state.records import RunChange, RunRecord

#: The run columns, in :class:`RunRecord`'s order, and the select of them.
COLS = ", ".join(RUN_COLUMNS)
SELECT_RUNS = f"SELECT {COLS} FROM runs"
#: Serialises migrations of one database (any constant; "omni" in ASCII).
_MIGRATION_LOCK = 0x6F6D6E69
#: Seconds the store's connection may take to open, unless the URL names its own
#: ``connect_timeout``: an unreachable host is a :class:`StoreError` then, not a wait for
#: the system's TCP timeout (psycopg's default is 130 s).
CONNECT_TIMEOUT = 10

Cursor = psycopg.Cursor[Any]


class LedgerConnection(StateStore):  # pylint: disable=abstract-method  # moves: the store's
    """One connection to the ledger at ``url``, migrated to this omni's schema."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_transition: Callable[[RunChange], None] | None = None,
        redactor: Redactor | None = None,
        read_only: bool = False,
    ) -> None:
        """Connect (and migrate); with ``read_only`` a session that can change nothing,
        on a ledger already at this omni's schema (:class:`StoreError` otherwise)."""
        self.where = shown(url)
        """The URL fit to show (password masked)."""
        self._url = url
        self._clock = clock
        self._on_transition = on_transition
        self._changes: list[RunChange] = []
        # Free text is redacted before it is written (URL userinfo is masked in any case).
        self._redact = (redactor or Redactor([])).text
        self._lock = threading.RLock()
        self._read_only = read_only
        self._conn = self._connect()
        try:
            # A looking-only session checks the schema; any other brings it up to date.
            (self._check_schema if read_only else self._migrate)()
        except BaseException:
            self._conn.close()
            raise

    @property
    def url(self) -> str:
        """The connection URL (secret: never print it; :attr:`where` is the shown form)."""
        return self._url

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            self._conn.close()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,
                application_name="omni",
                connect_timeout=connect_timeout(self._url, CONNECT_TIMEOUT),
            )
            if self._read_only:  # the session's every statement, whatever the URL says
                try:
                    conn.execute("SET default_transaction_read_only = on")
                except BaseException:
                    conn.close()
                    raise
            return conn
        except psycopg.Error as exc:
            raise self._error("cannot connect to the state database", exc) from None

    def _live(self) -> psycopg.Connection[Any]:
        """The connection; a broken one (the server restarted, the network dropped) is
        replaced, so a statement that failed with it is not the last one that can run."""
        if self._conn.broken:
            self._conn.close()
            self._conn = self._connect()
        return self._conn

    def _error(self, what: str, exc: BaseException) -> StoreError:
        detail = " ".join(str(exc).split())
        # The URL's password goes too, whatever ``redactor`` knows.
        masked = Redactor(dsn_secrets(self._url)).text(self._redact(detail))
        return StoreError(f"{self.where}: {what}: {masked}")

    @contextmanager
    def _write(self, *, transaction: bool = False) -> Iterator[Cursor]:
        """A cursor for one statement (atomic on its own), or with ``transaction`` for
        several; changes are reported to ``on_transition`` once it committed."""
        with self._lock:
            try:
                conn = self._live()
                if transaction:
                    with conn.transaction(), conn.cursor() as cur:
                        yield cur
                else:
                    with conn.cursor() as cur:
                        yield cur
            except psycopg.Error as exc:
                self._changes.clear()
                raise self._error("state database error", exc) from None
            except BaseException:
                self._changes.clear()
                raise
            committed, self._changes = self._changes, []
        self._report(committed)

    def _report(self, committed: list[RunChange]) -> None:
        """Tell ``on_transition`` about changes that committed (outside the lock)."""
        tell = self._on_transition
        if tell is None:
            return
        for change in committed:
            tell(change)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._read(_placeholders(sql), params)

    def _query_runs(self, where: str, params: Sequence[Any] = ()) -> list[RunRecord]:
        return self._read_runs(_placeholders(where), params)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                with self._live().cursor(row_factory=dict_row) as cur:
                    return cur.execute(sql, params).fetchall()
            except psycopg.Error as exc:
                raise self._error("state database error", exc) from None

    def _read_runs(self, where: str, params: Sequence[Any] = ()) -> list[RunRecord]:
        with self._lock:
            try:
                with self._live().cursor() as cur:
                    rows = cur.execute(f"{SELECT_RUNS} {where}", params).fetchall()
            except psycopg.Error as exc:
                raise self._error("state database error", exc) from None
        return [run_from_row(row) for row in rows]

    def task_runs(self, tasks: Sequence[Task]) -> dict[str, TaskRuns]:
        """As the shared read, in one query: the pass's tasks as three array parameters
        (no limit on how many), correlated index lookups a task."""
        wanted = {t.id: (t.task_hash, t.spec.schedule is not None) for t in tasks}
        if not wanted:
            return {}
        hashes, scheduled = zip(*wanted.values(), strict=True)
        done, failed = RunState.COMPLETED.value, RunState.FAILED.value
        rows = self._read(
            "SELECT w.id,"
            " EXISTS (SELECT 1 FROM runs r WHERE r.task_id = w.id AND r.task_hash = w.hash"
            "  AND r.state = %s) AS completed,"
            " EXISTS (SELECT 1 FROM runs r WHERE r.task_id = w.id AND r.task_hash = w.hash"
            "  AND r.state = %s AND r.attempt >= r.max_attempts"
            "  AND COALESCE(r.result_path, '') <> '') AS failed,"
            " CASE WHEN w.scheduled THEN (SELECT MAX(r.slot) FROM runs r"
            "  WHERE r.task_id = w.id AND r.state IN (%s, %s)) END AS last_slot"
            " FROM unnest(%s::text[], %s::text[], %s::bool[]) AS w(id, hash, scheduled)",
            (done, failed, done, failed, list(wanted), list(hashes), list(scheduled)),
        )
        return {
            row["id"]: TaskRuns(row["completed"], row["failed"], row["last_slot"]) for row in rows
        }

    def newest_runs(self, task_ids: Sequence[str]) -> dict[str, RunRecord]:
        """As the shared read, in one query: the ids as one array parameter, an index
        lookup a task."""
        found = self._read_runs(
            "WHERE seq IN (SELECT (SELECT r.seq FROM runs r WHERE r.task_id = w.id"
            " ORDER BY r.seq DESC LIMIT 1) FROM unnest(%s::text[]) AS w(id))",
            (list(dict.fromkeys(task_ids)),),
        )
        return {run.task_id: run for run in found}

    def _now(self) -> str:
        return iso(self._clock())

    def _migrate(self) -> None:
        known = len(PG_MIGRATIONS)
        if self._schema_version() == known:
            return
        with self._write(transaction=True) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version integer PRIMARY KEY, applied_at text NOT NULL)"
            )
            found = self._schema_version()
            check_version(self.where, found, known, "point OMNI_STATE_URL elsewhere")
            for version in range(found + 1, known + 1):
                PG_MIGRATIONS[version - 1](cur)
                cur.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                    (version, self._now()),
                )

    def _check_schema(self) -> None:
        found = self._schema_version()
        if found != len(PG_MIGRATIONS):
            raise StoreError(
                f"{self.where}: ledger schema {found}, this omni reads schema"
                f" {len(PG_MIGRATIONS)}; `omni run --once` brings it up to date"
            )

    def _schema_version(self) -> int:
        with self._lock:
            try:
                with self._conn.cursor() as cur:
                    exists = cur.execute("SELECT to_regclass('schema_migrations')").fetchone()
                    if exists is None or exists[0] is None:
                        return 0
                    row = cur.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            except psycopg.Error as exc:
                raise self._error("cannot read the schema version", exc) from None
        return int(row[0] or 0) if row else 0

    def _note(self, run: RunRecord, old: RunState | None, new: RunState, detail: str) -> None:
        if self._on_transition is not None:
            self._changes.append(change_of(run, old, new, detail))

    def copy_in(
        self,
        tables: dict[str, list[dict[str, Any]]],
        identities: Sequence[tuple[str, str]],
    ) -> dict[str, int]:
        """Insert whole tables (rows as column -> value) into an empty ledger, in one
        transaction; then move each ``(table, column)`` identity past the copied values.
        Returns how many rows went into each table."""
        copied: dict[str, int] = {}
        with self._write(transaction=True) as cur:
            for table in tables:
                found = cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()
                if found is not None and found[0]:
                    raise StoreError(
                        f"{self.where}: table {table} already has rows: migrate into an"
                        " empty ledger"
                    )
            for table, rows in tables.items():
                if rows:
                    columns = list(rows[0])
                    cur.executemany(
                        f"INSERT INTO {table} ({', '.join(columns)}) OVERRIDING SYSTEM VALUE"
                        f" VALUES ({', '.join(['%s'] * len(columns))})",
                        [tuple(row[c] for c in columns) for row in rows],
                    )
                copied[table] = len(rows)
            for table, column in identities:
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                    f" COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
                )
        return copied


def connect_timeout(url: str, seconds: float) -> int:
    """The ``connect_timeout`` to open a connection to ``url`` with: the URL's own when
    it names one (the URL wins), else ``seconds`` (at least libpq's floor, 2)."""
    own = conninfo_to_dict(url).get("connect_timeout")
    with contextlib.suppress(TypeError, ValueError):
        return int(float(str(own)))
    return max(2, math.ceil(seconds))


def _placeholders(sql: str) -> str:
    """SQL written with ``?`` placeholders (:mod:`runner.state.queries`) in psycopg's
    ``%s`` form; the shared reads hold no ``?`` or ``%`` of their own."""
    return sql.replace("?", "%s")


def steps_values(old: RunState, steps: Sequence[tuple[RunState, str]]) -> tuple[str, list[Any]]:
    """``VALUES`` rows (n, from, to, detail) of a move's events, and their parameters."""
    rows, params = [], []
    before = old
    for n, (state, detail) in enumerate(steps):
        rows.append("(%s::int, %s::text, %s::text, %s::text)")
        params += [n, before.value, state.value, detail]
        before = state
    return ", ".join(rows), params
