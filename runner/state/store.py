"""The SQLite state store: tasks, runs, their events, the system mode, and free metadata.

Every run state change goes through one checked path (:meth:`Store._move`), inside one
``BEGIN IMMEDIATE`` transaction, and appends an event row; so two processes sharing a
state file never both claim a run, and a crash leaves either the old row or the new one.
Free text (a run's ``error`` and ``note``, event details, why a mode changed) passes the
store's :class:`~runner.core.redaction.Redactor` before it is written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from sqlite_utils import Database

from runner.core.clock import iso, utc_now
from runner.core.errors import StaleRunError, StoreError
from runner.core.ids import new_run_id
from runner.core.redaction import Redactor
from runner.core.states import (
    IN_FLIGHT,
    TERMINAL,
    Mode,
    RunState,
    check_mode_change,
)
from runner.state.migrations import MIGRATIONS, check_version
from runner.state.moves import CLAIMABLE as _CLAIMABLE
from runner.state.moves import OPEN as _OPEN
from runner.state.moves import RUN_COLUMNS as _COLUMNS
from runner.state.moves import change_of, check_changes, check_steps, claim_plan, stale
from runner.state.moves import run_from_row as _record
from runner.state.moves import sql_value as _sql_value
from runner.state.records import ModeRecord, RunChange, RunRecord, Settlement
from runner.state.sqlitefile import create_database, existing_database, translated

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from datetime import datetime

    from runner.defs.tasks import Task


_SELECT_RUNS = f"SELECT {', '.join(_COLUMNS)} FROM runs"
# The free-text columns a transition may set, redacted before they are written.
_TEXT = ("error", "note")


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


class Store:  # pylint: disable=too-many-public-methods  # the store's whole API
    """The state database at ``path``; one object per process (or per test)."""

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
                self._db = Database(self._conn, recursive_triggers=False, execute_plugins=False)
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._locked() as conn:
            return _dicts(conn.execute(sql, params))

    def _read_runs(self, where: str, params: Sequence[Any] = ()) -> list[RunRecord]:
        with self._locked() as conn:
            rows = conn.execute(f"{_SELECT_RUNS} {where}", params).fetchall()
        return [_record(row) for row in rows]

    def _now(self) -> str:
        return iso(self._clock())

    def _migrate(self) -> None:
        known = len(MIGRATIONS)
        # A plain read first, so opening an up-to-date database never waits for the
        # write lock another process may be holding.
        if self._schema_version() == known:
            return
        with self._write() as conn:
            self._db.table("schema_migrations").create(
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
        if not self._db.table("schema_migrations").exists():
            return 0
        row = self._conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return row[0] or 0

    def _move(
        self,
        conn: sqlite3.Connection,
        record: RunRecord,
        steps: Sequence[tuple[RunState, str]],
        changes: dict[str, Any] | None = None,
    ) -> RunRecord:
        """The one checked path of every run state change; the caller holds ``_write()``.

        Takes the run through each ``(state, detail)`` step in order (each checked
        against the table, each one event row) with one row update. The update applies
        only while the row still has ``record``'s state and attempt: a stale record is
        refused (:class:`StaleRunError`), not acted on.
        """
        old = check_steps(record, steps)
        now = self._now()
        steps = [(state, self._redact(detail)) for state, detail in steps]
        # A note says why a run stands where it stands: it goes when the run moves on.
        values: dict[str, Any] = {"note": None}
        values |= {k: _sql_value(v) for k, v in (changes or {}).items()}
        for name in _TEXT:
            if values.get(name) is not None:
                values[name] = self._redact(values[name])
        values |= {"state": old.value, "updated_at": now}
        if old in TERMINAL:
            values["finished_at"] = now
        assignments = ", ".join(f"{name} = ?" for name in values)
        row = conn.execute(
            f"UPDATE runs SET {assignments} WHERE run_id = ? AND state = ? AND attempt = ?"
            f" RETURNING {', '.join(_COLUMNS)}",
            (*values.values(), record.run_id, record.state.value, record.attempt),
        ).fetchone()
        if row is None:
            raise self._stale(conn, record)
        moved = _record(row)
        before: RunState | None = record.state
        for new, detail in steps:
            self._event(conn, record.run_id, before, new, detail=detail, now=now)
            self._note(moved, before, new, detail)
            before = new
        return moved

    def _stale(self, conn: sqlite3.Connection, record: RunRecord) -> StoreError:
        """The error for a move whose record no longer matches the row."""
        found = conn.execute(
            "SELECT state, attempt FROM runs WHERE run_id = ?", (record.run_id,)
        ).fetchone()
        if found is None:
            return StoreError(f"{self.path}: no run {record.run_id}")
        return stale(str(self.path), record, found[0], found[1])

    def _note(self, run: RunRecord, old: RunState | None, new: RunState, detail: str) -> None:
        if self._on_transition is not None:
            self._changes.append(change_of(run, old, new, detail))

    @staticmethod
    def _event(
        conn: sqlite3.Connection,
        run_id: str,
        old: RunState | None,
        new: RunState,
        *,
        detail: str,
        now: str,
    ) -> None:
        conn.execute(
            "INSERT INTO events (run_id, at, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?)",
            (run_id, now, None if old is None else old.value, new.value, detail),
        )

    # -- tasks and runs -------------------------------------------------------------

    def upsert_task(self, task: Task) -> None:
        """Record a task file as last loaded (id, path, hash, schedule, enabled)."""
        row = {
            "id": task.id,
            "path": str(task.path.absolute()),  # so a later pass from elsewhere finds it
            "task_hash": task.task_hash,
            "schedule": task.spec.schedule,
            "enabled": int(task.spec.enabled),
            "updated_at": self._now(),
        }
        with self._write():
            self._db.table("tasks").upsert(row, pk="id")

    def create_run(
        self,
        task_id: str,
        task_hash: str,
        *,
        max_attempts: int,
        slot: str | None = None,
        run_id: str | None = None,
        unique: bool = False,
    ) -> RunRecord:
        """A new idle run (attempt 0); its ``seq`` places it after every existing run.

        With ``unique`` (what planning asks for, but for a forced run) a run of the same
        slot (scheduled) or content (one-off) that is not failed with its attempts spent
        is returned instead: the database decides which run serves it, whoever planned it."""
        run_id = run_id or new_run_id(self._clock())
        now = self._now()
        with self._write() as conn:
            if unique and (found := self._same_key(conn, task_id, task_hash, slot)):
                return found
            try:
                row = conn.execute(
                    "INSERT INTO runs (run_id, task_id, task_hash, slot, state, attempt,"
                    " max_attempts, created_at, updated_at, seq) VALUES (?, ?, ?, ?, ?, 0, ?,"
                    " ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM runs))"
                    f" RETURNING {', '.join(_COLUMNS)}",
                    (run_id, task_id, task_hash, slot, RunState.IDLE.value, max_attempts, now, now),
                ).fetchall()[0]
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"{self.path}: run {run_id} already exists") from exc
            self._event(conn, run_id, None, RunState.IDLE, detail="created", now=now)
            created = _record(row)
            self._note(created, None, RunState.IDLE, "created")
        return created

    @staticmethod
    def _same_key(
        conn: sqlite3.Connection, task_id: str, task_hash: str, slot: str | None
    ) -> RunRecord | None:
        """The run that already serves this slot (or content, for a one-off)."""
        key_sql, key = (
            ("slot = ?", slot)
            if slot is not None
            else ("slot IS NULL AND task_hash = ?", task_hash)
        )
        row = conn.execute(
            f"{_SELECT_RUNS} WHERE task_id = ? AND {key_sql}"
            " AND NOT (state = ? AND attempt >= max_attempts) ORDER BY seq LIMIT 1",
            (task_id, key, RunState.FAILED.value),
        ).fetchone()
        return None if row is None else _record(row)

    def claim(
        self,
        run: str | RunRecord,
        *,
        executor: str | None = None,
        tool: str | None = None,
        detail: str = "",
    ) -> RunRecord | None:
        """Move an idle or waiting run to dispatching, or ``None`` if it is not claimable.

        Only a claim from idle starts a new attempt: a waiting run was parked mid-attempt.
        With ``executor`` the run goes on to executing (on that executor and ``tool``,
        event ``detail``) in the same transaction: the dispatch path's one commit
        before the call. ``run`` is a run id, or the caller's :class:`RunRecord`: then
        the row is not read first, and a record that no longer matches it is not
        claimable either.
        """
        with self._write() as conn:
            record = run if isinstance(run, RunRecord) else self._get(conn, run)
            if record is None or record.state not in _CLAIMABLE:
                return None
            plan = claim_plan(record, self._now(), executor=executor, tool=tool, detail=detail)
            try:
                return self._move(conn, record, plan.steps, plan.changes)
            except StaleRunError:
                return None

    def transition(
        self, run: str | RunRecord, new: RunState, *, detail: str = "", **changes: Any
    ) -> RunRecord:
        """Move a run to ``new`` (checked against the table), setting any column in
        ``changes`` (executor, tool, model, tier, mode, note, error, result_path,
        cost_usd, slot).

        ``run`` is a run id, or the :class:`RunRecord` its caller holds: then the row
        is not read first, and the move is refused with :class:`StaleRunError` if the
        row no longer has that record's state and attempt. Raises :class:`IllegalTransitionError`,
        :class:`StoreError` for an unknown run, ``TypeError`` for an unknown field."""
        check_changes(changes)
        with self._write() as conn:
            record = run if isinstance(run, RunRecord) else self._get(conn, run)
            if record is None:
                raise StoreError(f"{self.path}: no run {run}")
            return self._move(conn, record, [(RunState(new), detail)], changes)

    @staticmethod
    def _get(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        row = conn.execute(f"{_SELECT_RUNS} WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else _record(row)

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run's current row, or ``None``."""
        with self._locked() as conn:
            return self._get(conn, run_id)

    def runs(
        self,
        *,
        state: RunState | None = None,
        task_id: str | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[RunRecord]:
        """Runs in creation order (newest first by default), optionally filtered."""
        where: list[str] = []
        params: list[Any] = []
        if state is not None:
            where.append("state = ?")
            params.append(RunState(state).value)
        if task_id is not None:
            where.append("task_id = ?")
            params.append(task_id)
        sql = f"WHERE {' AND '.join(where)}" if where else ""
        sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._read_runs(sql, params)

    def runs_by_id_prefix(self, prefix: str, limit: int = 10) -> list[RunRecord]:
        """Runs whose id starts with ``prefix`` (ids are upper-case), newest first."""
        text = prefix.upper()
        return self._read_runs(
            "WHERE substr(run_id, 1, ?) = ? ORDER BY seq DESC LIMIT ?", (len(text), text, limit)
        )

    def unfinished_runs(self) -> list[RunRecord]:
        """Runs that have not started and may still: idle, waiting, and failed ones with
        attempts left (a retry), in creation order."""
        return self._read_runs(
            "WHERE state IN (?, ?) OR (state = ? AND attempt < max_attempts) ORDER BY seq",
            (RunState.IDLE.value, RunState.WAITING.value, RunState.FAILED.value),
        )

    def task_paths(self) -> dict[str, str]:
        """Each recorded task's file, as last loaded (task id -> absolute path)."""
        return {row["id"]: row["path"] for row in self._read("SELECT id, path FROM tasks")}

    def counts_by_state(self) -> dict[RunState, int]:
        """How many runs are in each state; every state is present."""
        counts = dict.fromkeys(RunState, 0)
        for row in self._read("SELECT state, COUNT(*) AS n FROM runs GROUP BY state"):
            counts[RunState(row["state"])] = row["n"]
        return counts

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """A run's state changes, oldest first: id, run_id, at, from_state, to_state, detail."""
        return self._read("SELECT * FROM events WHERE run_id = ? ORDER BY id", (run_id,))

    def open_run(self, task_id: str, task_hash: str, slot: str | None = None) -> RunRecord | None:
        """The newest run of this task content (and slot, when given) that may still
        make progress: not completed, and not failed with its attempts spent."""
        slot_sql, params = self._task_filter(task_id, task_hash, slot)
        found = self._read_runs(
            f"WHERE {slot_sql} AND (state IN ({', '.join('?' * len(_OPEN))})"
            " OR (state = ? AND attempt < max_attempts)) ORDER BY seq DESC LIMIT 1",
            (*params, *(s.value for s in _OPEN), RunState.FAILED.value),
        )
        return found[0] if found else None

    def has_completed(self, task_id: str, task_hash: str, slot: str | None = None) -> bool:
        """True if a run of this task content (and slot, when given) completed."""
        slot_sql, params = self._task_filter(task_id, task_hash, slot)
        rows = self._read(
            f"SELECT 1 FROM runs WHERE {slot_sql} AND state = ? LIMIT 1",
            (*params, RunState.COMPLETED.value),
        )
        return bool(rows)

    def last_finished_slot(self, task_id: str) -> str | None:
        """The latest ``slot`` a *finished* run of this task served (completed or failed,
        any content); an unfinished run does not count, so ``run --once`` takes it up
        again instead of skipping its slot."""
        rows = self._read(
            "SELECT MAX(slot) AS slot FROM runs WHERE task_id = ? AND slot IS NOT NULL"
            " AND state IN (?, ?)",
            (task_id, RunState.COMPLETED.value, RunState.FAILED.value),
        )
        return rows[0]["slot"]

    @staticmethod
    def _task_filter(task_id: str, task_hash: str, slot: str | None) -> tuple[str, list[Any]]:
        sql, params = "task_id = ? AND task_hash = ?", [task_id, task_hash]
        if slot is not None:
            sql += " AND slot = ?"
            params.append(slot)
        return sql, params

    def set_note(self, run_id: str, note: str) -> None:
        """Set a run's ``note`` (why it waits, how a fault ended) without a state change."""
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET note = ?, updated_at = ? WHERE run_id = ?",
                (self._redact(note), self._now(), run_id),
            )

    def delete_runs(self, run_ids: list[str]) -> int:
        """Delete runs and (by cascade) their events; returns how many runs went."""
        # One JSON parameter: no limit on how many ids, whatever SQLite was built with.
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each(?))",
                (json.dumps(run_ids),),
            ).rowcount

    # -- crash recovery -------------------------------------------------------------

    def settle_in_flight(
        self, decide: Callable[[RunRecord], Settlement]
    ) -> tuple[list[RunRecord], list[RunRecord]]:
        """In one transaction, move every run left dispatching or executing (a dead
        process's) the way ``decide`` says. Returns the moved runs, and the waiting
        runs, both in creation order."""
        with self._write() as conn:
            marks = ", ".join("?" * len(IN_FLIGHT))
            in_flight = [state.value for state in IN_FLIGHT]
            moved = []
            for record in self._read_runs(f"WHERE state IN ({marks}) ORDER BY seq", in_flight):
                settlement = decide(record)
                moved.append(self._move(conn, record, settlement.steps, settlement.changes))
            waiting = self._read_runs("WHERE state = ? ORDER BY seq", [RunState.WAITING.value])
        return moved, waiting

    # -- modes, spend, metadata -----------------------------------------------------

    def mode(self) -> ModeRecord:
        """The current mode; ``normal`` with ``since=None`` when it never changed."""
        with self._locked() as conn:
            return self._current_mode(conn)

    @staticmethod
    def _current_mode(conn: sqlite3.Connection) -> ModeRecord:
        row = conn.execute("SELECT to_mode, at, why FROM modes ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return ModeRecord(mode=Mode.NORMAL, since=None, why="")
        return ModeRecord(mode=Mode(row[0]), since=row[1], why=row[2])

    def set_mode(self, new: Mode, why: str) -> ModeRecord:
        """Change the mode (checked against the table); the same mode is a no-op."""
        new = Mode(new)
        why = self._redact(why)
        with self._write() as conn:
            current = self._current_mode(conn)
            if new is current.mode:
                return current
            check_mode_change(current.mode, new)
            now = self._now()
            conn.execute(
                "INSERT INTO modes (at, from_mode, to_mode, why) VALUES (?, ?, ?, ?)",
                (now, current.mode.value, new.value, why),
            )
        return ModeRecord(mode=new, since=now, why=why)

    def mode_history(self, limit: int = 50) -> list[dict[str, Any]]:
        """Mode changes, newest first: id, at, from_mode, to_mode, why."""
        return self._read("SELECT * FROM modes ORDER BY id DESC LIMIT ?", (limit,))

    def spend_since(self, moment_iso: str) -> float:
        """Total ``cost_usd`` of runs finished at or after ``moment_iso`` (an ``iso()``)."""
        rows = self._read(
            "SELECT TOTAL(cost_usd) AS spent FROM runs WHERE finished_at >= ?", (moment_iso,)
        )
        return float(rows[0]["spent"])

    def rate_limits(self, now_iso: str) -> dict[str, tuple[str, str]]:
        """Models rate-limited after ``now_iso``: model -> (until, why)."""
        rows = self._read("SELECT model, until, why FROM rate_limits WHERE until > ?", (now_iso,))
        return {r["model"]: (r["until"], r["why"]) for r in rows}

    def set_rate_limit(self, model: str, until_iso: str, why: str) -> None:
        """Remember that ``model`` is rate-limited until ``until_iso`` (the later wins)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO rate_limits (model, until, why, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (model) DO UPDATE SET until = excluded.until, why = excluded.why,"
                " at = excluded.at WHERE excluded.until > rate_limits.until",
                (model, until_iso, why, self._now()),
            )

    def meta_get(self, key: str) -> str | None:
        """A stored value (e.g. the git source's last processed commit), or ``None``."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def meta_set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any earlier one."""
        with self._write():
            self._db.table("meta").upsert({"key": key, "value": value}, pk="key")
