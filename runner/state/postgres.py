"""The PostgreSQL state store: one ledger for runners on several machines.

The same API, state machine and migrations mechanism as the SQLite store
(:mod:`runner.state.store`; the shared rules are in :mod:`runner.state.moves`), for a
database every instance shares. What several instances add, the database decides:

* a run is unique per (task, slot) for a schedule and per (task, content) for a one-off
  (a partial unique index): two instances that plan the same slot get one run;
* a claim locks the row with ``FOR UPDATE SKIP LOCKED`` (a run another instance is
  claiming is skipped, never waited for) and compares state and attempt, the fencing
  token: a late writer holding an older attempt is refused;
* a claim holds a lease (owner instance, expiry in the database's clock) that the
  instance's heartbeats renew (:mod:`runner.state.fleet`); a run whose lease expired is
  settled by :meth:`PostgresStore.settle_in_flight`, on whichever instance runs it first;
* a trigger notifies ``omni_work`` when a run becomes idle (created, retried, released).

Every move is one statement (a data-modifying ``WITH`` that updates the row and appends
its events), so a crash leaves the old row or the new one. The store is synchronous, as
the SQLite one: the dispatcher records a finished run with no ``await`` between its
result file and its row. The heartbeat and the wake-ups are asynchronous.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from runner.core.clock import iso, utc_now
from runner.core.errors import StoreError
from runner.core.ids import new_run_id
from runner.core.states import IN_FLIGHT, Mode, RunState, check_mode_change
from runner.state.moves import (
    CLAIMABLE,
    check_changes,
    check_steps,
    claim_plan,
    move_values,
    run_from_row,
    stale,
)
from runner.state.pgbase import COLS as _COLS
from runner.state.pgbase import SELECT_RUNS as _SELECT_RUNS
from runner.state.pgbase import Cursor, steps_values
from runner.state.pgruns import LedgerRuns
from runner.state.records import (
    InstanceRecord,
    ModeRecord,
    RunChange,
    RunRecord,
    Settlement,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from runner.core.redaction import Redactor
    from runner.defs.tasks import Task

_IN_FLIGHT = [s.value for s in IN_FLIGHT]


class PostgresStore(LedgerRuns):
    """The ledger at ``url``; one object per process (or per test).

    ``role`` (``service``, ``run --once``) joins the fleet: the process gets an instance
    row whose heartbeats renew the leases of the runs it claims, and which
    :meth:`close` removes, handing its unfinished runs to the others at once. A store
    opened without a role (``omni migrate``, tests) reads and writes but claims nothing
    for long: its claims' leases run out after ``lease_seconds``. With ``read_only``
    (``omni status``, ``tasks``, ``show``, ``--dry-run``) it reads an up-to-date ledger
    and can change nothing.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_transition: Callable[[RunChange], None] | None = None,
        redactor: Redactor | None = None,
        role: str | None = None,
        lease_seconds: float = 30.0,
        read_only: bool = False,
    ) -> None:
        if read_only and role is not None:
            raise ValueError("a read-only store cannot join the fleet (it holds no runs)")
        self.lease_seconds = lease_seconds
        self.instance_id: str | None = None
        super().__init__(
            url,
            clock=clock,
            on_transition=on_transition,
            redactor=redactor,
            read_only=read_only,
        )
        if role is not None:
            try:
                self._join(role)
            except BaseException:
                super().close()
                raise

    def close(self) -> None:
        """Leave the fleet (this instance's runs in flight are others' to settle at once)
        and close the connection; safe to call twice."""
        with self._lock:
            try:
                if self.instance_id is not None and not self._conn.closed:
                    self._leave()
            finally:
                super().close()

    # -- moves ----------------------------------------------------------------------

    def _move(
        self,
        cur: Cursor,
        record: RunRecord,
        steps: Sequence[tuple[RunState, str]],
        changes: dict[str, Any] | None = None,
        *,
        skip_locked: bool = False,
    ) -> RunRecord | None:
        """The one checked path of every run state change: one statement that updates
        the row (only while it still has ``record``'s state and attempt) and appends an
        event a step. ``None`` when the row did not match (or, with ``skip_locked``,
        another transaction holds it)."""
        new = check_steps(record, steps)
        now = self._now()
        steps = [(state, self._redact(detail)) for state, detail in steps]
        values = move_values(changes or {}, new, now, self._redact)
        sets = [f"{name} = %s" for name in values]
        params: list[Any] = list(values.values())
        if new in IN_FLIGHT:
            sets.append("lease_owner = %s, lease_until = clock_timestamp() + %s * interval '1s'")
            params += [self.instance_id, self.lease_seconds]
        match = "run_id = %s AND state = %s AND attempt = %s"
        target = (record.run_id, record.state.value, record.attempt)
        if skip_locked:
            match = f"run_id = (SELECT run_id FROM runs WHERE {match} FOR UPDATE SKIP LOCKED)"
        steps_sql, step_params = steps_values(record.state, steps)
        row = cur.execute(
            f"WITH moved AS (UPDATE runs SET {', '.join(sets)} WHERE {match}"
            f" RETURNING {_COLS}), logged AS (INSERT INTO events"
            " (run_id, at, from_state, to_state, detail)"
            " SELECT moved.run_id, %s, s.f, s.t, s.d FROM moved,"
            f" (VALUES {steps_sql}) AS s(n, f, t, d) ORDER BY s.n)"
            f" SELECT {_COLS} FROM moved",
            (*params, *target, now, *step_params),
        ).fetchone()
        if row is None:
            return None
        moved = run_from_row(row)
        before: RunState | None = record.state
        for state, detail in steps:
            self._note(moved, before, state, detail)
            before = state
        return moved

    def _stale(self, cur: Cursor, record: RunRecord) -> StoreError:
        """The error for a move whose record no longer matches the row."""
        found = cur.execute(
            "SELECT state, attempt FROM runs WHERE run_id = %s", (record.run_id,)
        ).fetchone()
        if found is None:
            return StoreError(f"{self.where}: no run {record.run_id}")
        return stale(self.where, record, found[0], found[1])

    # -- tasks and runs -------------------------------------------------------------

    def upsert_tasks(self, tasks: Sequence[Task]) -> None:
        """Record task files as last loaded, all in one statement (a pass over thousands
        of tasks: one round trip, one commit; five array parameters, whatever the count);
        a row that would not change is not rewritten (its ``updated_at`` says when it last
        changed). A task id given twice: the last one wins; rows are taken in id order."""
        rows = {
            # Plain strings, as the SQLite store: 10,000s of them.
            task.id: (
                os.path.abspath(task.path),
                task.task_hash,
                task.spec.schedule,
                int(task.spec.enabled),
            )
            for task in tasks
        }
        if not rows:
            return
        # Rows are locked in the order given: in one order (by id) for every instance, two
        # instances upserting the same tasks at once wait for each other, never deadlock.
        ids = sorted(rows)
        paths, hashes, schedules, enabled = zip(*(rows[i] for i in ids), strict=True)
        with self._write() as cur:
            cur.execute(
                "INSERT INTO tasks (id, path, task_hash, schedule, enabled, updated_at)"
                " SELECT t.id, t.path, t.task_hash, t.schedule, t.enabled, %s FROM"
                " unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[])"
                " AS t(id, path, task_hash, schedule, enabled)"
                " ON CONFLICT (id) DO UPDATE SET path = EXCLUDED.path,"
                " task_hash = EXCLUDED.task_hash, schedule = EXCLUDED.schedule,"
                " enabled = EXCLUDED.enabled, updated_at = EXCLUDED.updated_at"
                " WHERE (tasks.path, tasks.task_hash, tasks.schedule, tasks.enabled)"
                " IS DISTINCT FROM (EXCLUDED.path, EXCLUDED.task_hash, EXCLUDED.schedule,"
                " EXCLUDED.enabled)",
                (
                    self._now(),
                    ids,
                    list(paths),
                    list(hashes),
                    list(schedules),
                    list(enabled),
                ),
            )

    def claim(
        self,
        run: str | RunRecord,
        *,
        executor: str | None = None,
        tool: str | None = None,
        detail: str = "",
    ) -> RunRecord | None:
        """Move an idle or waiting run to dispatching (on to executing with
        ``executor``), holding a lease; ``None`` if it is not claimable, no longer
        matches the caller's record, or another instance is claiming it right now."""
        record = run if isinstance(run, RunRecord) else self.get_run(run)
        if record is None or record.state not in CLAIMABLE:
            return None
        plan = claim_plan(record, self._now(), executor=executor, tool=tool, detail=detail)
        with self._write() as cur:
            return self._move(cur, record, plan.steps, plan.changes, skip_locked=True)

    def transition(
        self, run: str | RunRecord, new: RunState, *, detail: str = "", **changes: Any
    ) -> RunRecord:
        """Move a run to ``new`` (checked against the table), setting any column in
        ``changes``; with a :class:`RunRecord` the move applies only while the row still
        has its state and attempt (:class:`StaleRunError` otherwise)."""
        check_changes(changes)
        with self._write() as cur:
            record = run if isinstance(run, RunRecord) else self._get(cur, run)
            if record is None:
                raise StoreError(f"{self.where}: no run {run}")
            moved = self._move(cur, record, [(RunState(new), detail)], changes)
            if moved is None:
                raise self._stale(cur, record)
            return moved

    @staticmethod
    def _get(cur: Cursor, run_id: str) -> RunRecord | None:
        row = cur.execute(f"{_SELECT_RUNS} WHERE run_id = %s", (run_id,)).fetchone()
        return None if row is None else run_from_row(row)

    def set_note(self, run_id: str, note: str) -> None:
        """Set a run's ``note`` without a state change."""
        with self._write() as cur:
            cur.execute(
                "UPDATE runs SET note = %s, updated_at = %s WHERE run_id = %s",
                (self._redact(note), self._now(), run_id),
            )

    def delete_runs(self, run_ids: list[str]) -> int:
        """Delete runs and (by cascade) their events; returns how many runs went."""
        with self._write() as cur:
            return cur.execute("DELETE FROM runs WHERE run_id = ANY(%s)", (run_ids,)).rowcount

    # -- crash recovery -------------------------------------------------------------

    def settle_in_flight(
        self, decide: Callable[[RunRecord], Settlement]
    ) -> tuple[list[RunRecord], list[RunRecord]]:
        """In one transaction, move every in-flight run whose lease expired (its instance
        died, or left) the way ``decide`` says; runs another instance is settling are
        skipped. Returns the moved runs, and the waiting runs, in creation order."""
        moved: list[RunRecord] = []
        with self._write(transaction=True) as cur:
            rows = cur.execute(
                f"{_SELECT_RUNS} WHERE state = ANY(%s)"
                " AND (lease_until IS NULL OR lease_until < clock_timestamp())"
                " ORDER BY seq FOR UPDATE SKIP LOCKED",
                (_IN_FLIGHT,),
            ).fetchall()
            for record in map(run_from_row, rows):
                settlement = decide(record)
                done = self._move(cur, record, settlement.steps, settlement.changes)
                if done is not None:
                    moved.append(done)
            waiting = cur.execute(f"{_SELECT_RUNS} WHERE state = 'waiting' ORDER BY seq").fetchall()
        return moved, [run_from_row(row) for row in waiting]

    # -- the fleet: instances, heartbeats and leases --------------------------------

    def _join(self, role: str) -> None:
        instance = new_run_id(utc_now())
        with self._write() as cur:
            cur.execute(
                "INSERT INTO instances (id, host, pid, role, lease_seconds, started_at,"
                " heartbeat_at) VALUES (%s, %s, %s, %s, %s, clock_timestamp(),"
                " clock_timestamp())",
                (instance, socket.gethostname(), os.getpid(), role, self.lease_seconds),
            )
        self.instance_id = instance

    def _leave(self) -> None:
        with self._write(transaction=True) as cur:
            cur.execute(
                "UPDATE runs SET lease_until = clock_timestamp()"
                " WHERE lease_owner = %s AND state = ANY(%s)",
                (self.instance_id, _IN_FLIGHT),
            )
            cur.execute("DELETE FROM instances WHERE id = %s", (self.instance_id,))
        self.instance_id = None

    def instances(self) -> list[InstanceRecord]:
        """Every instance with a row, oldest first, with its runs in flight."""
        rows = self._read(
            "SELECT i.id, i.host, i.pid, i.role, i.started_at, i.heartbeat_at,"
            " i.heartbeat_at + i.lease_seconds * interval '1s' > clock_timestamp() AS live,"
            " (SELECT COUNT(*) FROM runs r WHERE r.lease_owner = i.id"
            "  AND r.state = ANY(%s)) AS in_flight"
            " FROM instances i ORDER BY i.started_at, i.id",
            (_IN_FLIGHT,),
        )
        return [
            InstanceRecord(
                instance_id=row["id"],
                host=row["host"],
                pid=row["pid"],
                role=row["role"],
                started_at=iso(row["started_at"]),
                heartbeat_at=iso(row["heartbeat_at"]),
                runs_in_flight=row["in_flight"],
                live=row["live"],
            )
            for row in rows
        ]

    # -- modes, rate limits, metadata -----------------------------------------------------

    def set_mode(self, new: Mode, why: str) -> ModeRecord:
        """Change the mode (checked against the table); the same mode is a no-op."""
        new = Mode(new)
        why = self._redact(why)
        with self._write(transaction=True) as cur:
            cur.execute("LOCK TABLE modes IN SHARE ROW EXCLUSIVE MODE")
            row = cur.execute("SELECT to_mode, at, why FROM modes ORDER BY id DESC LIMIT 1")
            found = row.fetchone()
            current = (
                ModeRecord(mode=Mode.NORMAL, since=None, why="")
                if found is None
                else ModeRecord(mode=Mode(found[0]), since=found[1], why=found[2])
            )
            if new is current.mode:
                return current
            check_mode_change(current.mode, new)
            now = self._now()
            cur.execute(
                "INSERT INTO modes (at, from_mode, to_mode, why) VALUES (%s, %s, %s, %s)",
                (now, current.mode.value, new.value, why),
            )
        return ModeRecord(mode=new, since=now, why=why)

    def set_rate_limit(self, model: str, until_iso: str, why: str) -> None:
        """Remember that ``model`` is rate-limited until ``until_iso`` (the later wins)."""
        with self._write() as cur:
            cur.execute(
                "INSERT INTO rate_limits (model, until, why, at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (model) DO UPDATE SET until = EXCLUDED.until, why = EXCLUDED.why,"
                " at = EXCLUDED.at WHERE EXCLUDED.until > rate_limits.until",
                (model, until_iso, self._redact(why), self._now()),
            )

    def meta_set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any earlier one."""
        with self._write() as cur:
            cur.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (key, value),
            )
