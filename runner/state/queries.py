"""The reads every state backend answers the same way, in SQL both speak.

:class:`StoreQueries` holds them once for the SQLite store (:mod:`runner.state.store`)
and the PostgreSQL ledger (:mod:`runner.state.postgres`): each backend gives it two
primitives, :meth:`~StoreQueries._query` (rows as dicts) and
:meth:`~StoreQueries._query_runs` (run records), taking SQL with ``?`` placeholders. A
new read added here is on both backends at once. Two pass-wide reads
(:meth:`~StoreQueries.task_runs`, :meth:`~StoreQueries.newest_runs`) are each
backend's own single query; the ones here, task by task, are their reference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from runner.core.states import Mode, RunState
from runner.state.moves import OPEN
from runner.state.records import ModeRecord, TaskRuns

if TYPE_CHECKING:
    from collections.abc import Sequence

    from runner.defs.tasks import Task
    from runner.state.records import RunRecord

_OPEN_MARKS = ", ".join("?" * len(OPEN))
_UNFINISHED = (RunState.IDLE.value, RunState.WAITING.value, RunState.FAILED.value)


class StoreQueries(ABC):
    """Reads of tasks, runs, events, modes, spend, rate limits and metadata."""

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of ``sql`` (``?`` placeholders) as column -> value."""

    @abstractmethod
    def _query_runs(self, where: str, params: Sequence[Any] = ()) -> list[RunRecord]:
        """The runs ``SELECT <run columns> FROM runs <where>`` finds (``?`` placeholders)."""

    # -- runs -----------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run's current row, or ``None``."""
        found = self._query_runs("WHERE run_id = ?", (run_id,))
        return found[0] if found else None

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
        return self._query_runs(sql, params)

    def runs_by_id_prefix(self, prefix: str, limit: int = 10) -> list[RunRecord]:
        """Runs whose id starts with ``prefix`` (ids are upper-case), newest first."""
        text = prefix.upper()
        return self._query_runs(
            "WHERE substr(run_id, 1, ?) = ? ORDER BY seq DESC LIMIT ?", (len(text), text, limit)
        )

    def unfinished_runs(self) -> list[RunRecord]:
        """Runs that have not started and may still: idle, waiting, and failed ones with
        attempts left (a retry), in creation order."""
        return self._query_runs(
            "WHERE state IN (?, ?) OR (state = ? AND attempt < max_attempts) ORDER BY seq",
            _UNFINISHED,
        )

    def counts_by_state(self) -> dict[RunState, int]:
        """How many runs are in each state; every state is present."""
        counts = dict.fromkeys(RunState, 0)
        for row in self._query("SELECT state, COUNT(*) AS n FROM runs GROUP BY state"):
            counts[RunState(row["state"])] = int(row["n"])
        return counts

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """A run's state changes, oldest first: id, run_id, at, from_state, to_state, detail."""
        return self._query(
            "SELECT id, run_id, at, from_state, to_state, detail FROM events"
            " WHERE run_id = ? ORDER BY id",
            (run_id,),
        )

    def open_run(self, task_id: str, task_hash: str, slot: str | None = None) -> RunRecord | None:
        """The newest run of this task content (and slot, when given) that may still
        make progress: not completed, and not failed with its attempts spent."""
        slot_sql, params = _task_filter(task_id, task_hash, slot)
        found = self._query_runs(
            f"WHERE {slot_sql} AND (state IN ({_OPEN_MARKS})"
            " OR (state = ? AND attempt < max_attempts)) ORDER BY seq DESC LIMIT 1",
            (*params, *(s.value for s in OPEN), RunState.FAILED.value),
        )
        return found[0] if found else None

    def has_completed(self, task_id: str, task_hash: str, slot: str | None = None) -> bool:
        """True if a run of this task content (and slot, when given) completed."""
        slot_sql, params = _task_filter(task_id, task_hash, slot)
        rows = self._query(
            f"SELECT 1 AS found FROM runs WHERE {slot_sql} AND state = ? LIMIT 1",
            (*params, RunState.COMPLETED.value),
        )
        return bool(rows)

    def last_finished_slot(self, task_id: str) -> str | None:
        """The latest ``slot`` a *finished* run of this task served (completed or failed,
        any content); an unfinished run does not count, so ``run --once`` takes it up
        again instead of skipping its slot."""
        rows = self._query(
            "SELECT MAX(slot) AS slot FROM runs WHERE task_id = ? AND slot IS NOT NULL"
            " AND state IN (?, ?)",
            (task_id, RunState.COMPLETED.value, RunState.FAILED.value),
        )
        slot = rows[0]["slot"]
        return None if slot is None else str(slot)

    # -- tasks, modes, spend, rate limits, metadata ---------------------------------

    def task_runs(self, tasks: Sequence[Task]) -> dict[str, TaskRuns]:
        """What each task's finished runs say for due-ness (:class:`TaskRuns`, by task
        id): :meth:`has_completed` and :meth:`last_finished_slot` for a whole pass at
        once. Both backends answer in one query of their own; this, task by task, is
        the reference their answers are tested against."""
        found = {}
        for task in tasks:
            failed = self._query(
                "SELECT 1 AS found FROM runs WHERE task_id = ? AND task_hash = ? AND state = ?"
                " AND attempt >= max_attempts AND COALESCE(result_path, '') != '' LIMIT 1",
                (task.id, task.task_hash, RunState.FAILED.value),
            )
            scheduled = task.spec.schedule is not None
            found[task.id] = TaskRuns(
                completed=self.has_completed(task.id, task.task_hash),
                failed=bool(failed),
                last_slot=self.last_finished_slot(task.id) if scheduled else None,
            )
        return found

    def newest_runs(self, task_ids: Sequence[str]) -> dict[str, RunRecord]:
        """Each of ``task_ids``' newest run (by creation), by task id; tasks without a run
        are left out. Both backends answer in one query of their own; this, task by
        task, is the reference their answers are tested against."""
        newest = {}
        for task_id in task_ids:
            found = self.runs(task_id=task_id, limit=1)
            if found:
                newest[task_id] = found[0]
        return newest

    def task_paths(self) -> dict[str, str]:
        """Each recorded task's file, as last loaded (task id -> absolute path)."""
        return {row["id"]: row["path"] for row in self._query("SELECT id, path FROM tasks")}

    def mode(self) -> ModeRecord:
        """The current mode; ``normal`` with ``since=None`` when it never changed."""
        rows = self._query("SELECT to_mode, at, why FROM modes ORDER BY id DESC LIMIT 1")
        if not rows:
            return ModeRecord(mode=Mode.NORMAL, since=None, why="")
        return ModeRecord(mode=Mode(rows[0]["to_mode"]), since=rows[0]["at"], why=rows[0]["why"])

    def mode_history(self, limit: int = 50) -> list[dict[str, Any]]:
        """Mode changes, newest first: id, at, from_mode, to_mode, why."""
        return self._query(
            "SELECT id, at, from_mode, to_mode, why FROM modes ORDER BY id DESC LIMIT ?", (limit,)
        )

    def spend_since(self, moment_iso: str) -> float:
        """Total ``cost_usd`` of runs finished at or after ``moment_iso`` (an ``iso()``)."""
        rows = self._query(
            "SELECT COALESCE(SUM(cost_usd), 0) AS spent FROM runs WHERE finished_at >= ?",
            (moment_iso,),
        )
        return float(rows[0]["spent"])

    def run_ids_since(self, prefix: str) -> set[str]:
        """The ids of the runs created at or after the time the run id prefix ``prefix``
        stands for (:func:`runner.core.ids.time_prefix`): what the store knows of the
        result files named at or after it."""
        rows = self._query("SELECT run_id FROM runs WHERE run_id >= ?", (prefix,))
        return {row["run_id"] for row in rows}

    def finished_runs(self, task_id: str) -> dict[str, RunState]:
        """The state of each finished run of ``task_id`` (completed, or failed with every
        attempt used), by run id."""
        rows = self._query(
            "SELECT run_id, state FROM runs WHERE task_id = ? AND (state = ?"
            " OR (state = ? AND attempt >= max_attempts))",
            (task_id, RunState.COMPLETED.value, RunState.FAILED.value),
        )
        return {row["run_id"]: RunState(row["state"]) for row in rows}

    def rate_limits(self, now_iso: str) -> dict[str, tuple[str, str]]:
        """Models rate-limited after ``now_iso``: model -> (until, why)."""
        rows = self._query("SELECT model, until, why FROM rate_limits WHERE until > ?", (now_iso,))
        return {r["model"]: (r["until"], r["why"]) for r in rows}

    def meta_get(self, key: str) -> str | None:
        """A stored value (e.g. the git source's last processed commit), or ``None``."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None


def _task_filter(task_id: str, task_hash: str, slot: str | None) -> tuple[str, list[Any]]:
    sql, params = "task_id = ? AND task_hash = ?", [task_id, task_hash]
    if slot is not None:
        sql += " AND slot = ?"
        params.append(slot)
    return sql, params
