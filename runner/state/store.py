"""The SQLite state store: tasks, runs, their events, the system mode, rate limits and
free metadata, in one file beside the project (the default backend).

Every run state change goes through one checked path (:meth:`Store._move`), inside one
``BEGIN IMMEDIATE`` transaction, and appends an event row; so two processes sharing a
state file never both claim a run, and a crash leaves either the old row or the new one.
Free text (a run's ``error`` and ``note``, event details, why a mode changed) passes the
store's :class:`~runner.core.redaction.Redactor` before it is written. The connection is
:mod:`runner.state.sqlitebase`'s, the reads :mod:`runner.state.queries`'.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import TYPE_CHECKING, Any

from runner.core.errors import StaleRunError, StoreError
from runner.core.ids import new_run_id
from runner.core.states import IN_FLIGHT, Mode, RunState, check_mode_change
from runner.state.moves import (
    CLAIMABLE,
    HOLDS_KEY,
    RUN_COLUMNS,
    check_changes,
    check_steps,
    claim_plan,
    move_values,
    run_from_row,
    stale,
)
from runner.state.records import ModeRecord, NewRun, RunRecord, TaskRuns
from runner.state.sqlitebase import SELECT_RUNS, SqliteConnection

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from runner.defs.tasks import Task
    from runner.state.records import Settlement


class Store(SqliteConnection):
    """The state database at ``path``; one object per process (or per test)."""

    # -- moves ----------------------------------------------------------------------

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
        new_state = check_steps(record, steps)
        now = self._now()
        steps = [(state, self._redact(detail)) for state, detail in steps]
        values = move_values(changes or {}, new_state, now, self._redact)
        assignments = ", ".join(f"{name} = ?" for name in values)
        row = conn.execute(
            f"UPDATE runs SET {assignments} WHERE run_id = ? AND state = ? AND attempt = ?"
            f" RETURNING {', '.join(RUN_COLUMNS)}",
            (*values.values(), record.run_id, record.state.value, record.attempt),
        ).fetchone()
        if row is None:
            raise self._stale(conn, record)
        moved = run_from_row(row)
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

    def upsert_tasks(self, tasks: Sequence[Task]) -> None:
        """Record task files as last loaded, all in one transaction (a pass over
        thousands of tasks: one commit, not one a task); a row that would not change is
        not rewritten (its ``updated_at`` says when it last changed)."""
        now = self._now()
        rows = [
            (
                task.id,
                os.path.abspath(task.path),  # so a later pass from elsewhere finds it
                task.task_hash,
                task.spec.schedule,
                int(task.spec.enabled),
                now,
            )
            for task in tasks
        ]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO tasks (id, path, task_hash, schedule, enabled, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET path = excluded.path,"
                " task_hash = excluded.task_hash, schedule = excluded.schedule,"
                " enabled = excluded.enabled, updated_at = excluded.updated_at"
                " WHERE tasks.path IS NOT excluded.path OR tasks.task_hash IS NOT"
                " excluded.task_hash OR tasks.schedule IS NOT excluded.schedule"
                " OR tasks.enabled IS NOT excluded.enabled",
                rows,
            )

    def task_runs(self, tasks: Sequence[Task]) -> dict[str, TaskRuns]:
        """As the shared read, in one query (correlated index lookups a task)."""
        wanted = [[t.id, t.task_hash, t.spec.schedule is not None] for t in tasks]
        done, failed = RunState.COMPLETED.value, RunState.FAILED.value
        with self._locked() as conn:
            # One JSON parameter: no limit on how many tasks, whatever SQLite was built with.
            rows = conn.execute(
                "WITH wanted (id, hash, scheduled) AS MATERIALIZED (SELECT"
                " json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
                " json_extract(value, '$[2]') FROM json_each(?))"
                " SELECT id,"
                " EXISTS (SELECT 1 FROM runs WHERE task_id = id AND task_hash = hash"
                "  AND state = ?),"
                " EXISTS (SELECT 1 FROM runs WHERE task_id = id AND task_hash = hash"
                "  AND state = ? AND attempt >= max_attempts AND COALESCE(result_path, '') != ''),"
                " CASE WHEN scheduled THEN (SELECT MAX(slot) FROM runs WHERE task_id = id"
                "  AND state IN (?, ?)) END"
                " FROM wanted",
                (json.dumps(wanted), done, failed, done, failed),
            ).fetchall()
        return {row[0]: TaskRuns(bool(row[1]), bool(row[2]), row[3]) for row in rows}

    def newest_runs(self, task_ids: Sequence[str]) -> dict[str, RunRecord]:
        """As the shared read, in one query."""
        found = self._query_runs(
            "WHERE seq IN (SELECT MAX(seq) FROM runs WHERE task_id IN"
            " (SELECT value FROM json_each(?)) GROUP BY task_id)",
            (json.dumps(list(task_ids)),),
        )
        return {run.task_id: run for run in found}

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
        """A new idle run; with ``unique``, the run that already holds its key (looked up
        in the write transaction that would insert it: one writer at a time decides)."""
        with self._write() as conn:
            return self._insert_run(
                conn, NewRun(task_id, task_hash, max_attempts, slot, unique), run_id
            )

    def create_runs(self, new: Sequence[NewRun]) -> list[RunRecord]:
        """As :meth:`create_run` for each, all in one transaction."""
        if not new:
            return []
        with self._write() as conn:
            return [self._insert_run(conn, one) for one in new]

    def _insert_run(
        self, conn: sqlite3.Connection, new: NewRun, run_id: str | None = None
    ) -> RunRecord:
        """Insert one idle run (or find the one holding its key, with ``new.unique``);
        the caller holds ``_write()``."""
        run_id = run_id or new_run_id(self._clock())
        now = self._now()
        if new.unique and (found := self._same_key(conn, new.task_id, new.task_hash, new.slot)):
            return found
        try:
            row = conn.execute(
                "INSERT INTO runs (run_id, task_id, task_hash, slot, state, attempt,"
                " max_attempts, created_at, updated_at, seq) VALUES (?, ?, ?, ?, ?, 0, ?,"
                " ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM runs))"
                f" RETURNING {', '.join(RUN_COLUMNS)}",
                (
                    run_id,
                    new.task_id,
                    new.task_hash,
                    new.slot,
                    RunState.IDLE.value,
                    new.max_attempts,
                    now,
                    now,
                ),
            ).fetchall()[0]
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"{self.path}: run {run_id} already exists") from exc
        self._event(conn, run_id, None, RunState.IDLE, detail="created", now=now)
        created = run_from_row(row)
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
            f"{SELECT_RUNS} WHERE task_id = ? AND {key_sql} AND {HOLDS_KEY} ORDER BY seq LIMIT 1",
            (task_id, key),
        ).fetchone()
        return None if row is None else run_from_row(row)

    def claim(
        self,
        run: str | RunRecord,
        *,
        executor: str | None = None,
        tool: str | None = None,
        detail: str = "",
    ) -> RunRecord | None:
        """Claim ``run`` in one ``BEGIN IMMEDIATE`` transaction (the dispatch path's one
        commit before the call)."""
        with self._write() as conn:
            record = run if isinstance(run, RunRecord) else self._get(conn, run)
            if record is None or record.state not in CLAIMABLE:
                return None
            plan = claim_plan(record, self._now(), executor=executor, tool=tool, detail=detail)
            try:
                return self._move(conn, record, plan.steps, plan.changes)
            except StaleRunError:
                return None

    def transition(
        self, run: str | RunRecord, new: RunState, *, detail: str = "", **changes: Any
    ) -> RunRecord:
        """Move ``run`` to ``new`` through :meth:`_move`."""
        check_changes(changes)
        with self._write() as conn:
            record = run if isinstance(run, RunRecord) else self._get(conn, run)
            if record is None:
                raise StoreError(f"{self.path}: no run {run}")
            return self._move(conn, record, [(RunState(new), detail)], changes)

    @staticmethod
    def _get(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        row = conn.execute(f"{SELECT_RUNS} WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else run_from_row(row)

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
        """Settle every run in flight: on a state file only one runner runs (the state
        lock), so whatever is in flight when it starts was left by a dead one."""
        with self._write() as conn:
            marks = ", ".join("?" * len(IN_FLIGHT))
            in_flight = [state.value for state in IN_FLIGHT]
            moved = []
            for record in self._query_runs(f"WHERE state IN ({marks}) ORDER BY seq", in_flight):
                settlement = decide(record)
                moved.append(self._move(conn, record, settlement.steps, settlement.changes))
            waiting = self._query_runs("WHERE state = ? ORDER BY seq", [RunState.WAITING.value])
        return moved, waiting

    # -- modes, rate limits, metadata -----------------------------------------------------

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

    def set_rate_limit(self, model: str, until_iso: str, why: str) -> None:
        """Remember that ``model`` is rate-limited until ``until_iso`` (the later wins)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO rate_limits (model, until, why, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (model) DO UPDATE SET until = excluded.until, why = excluded.why,"
                " at = excluded.at WHERE excluded.until > rate_limits.until",
                (model, until_iso, self._redact(why), self._now()),
            )

    def meta_set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any earlier one."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
