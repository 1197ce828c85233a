"""Creating runs on the PostgreSQL ledger: one, or a pass's new runs in one transaction.

A run is unique per (task, slot) for a schedule and per (task, content) for a one-off:
a partial unique index on ``run_key`` that only runs still holding their key
(:data:`runner.state.moves.HOLDS_KEY`) enter, so two instances that plan the same slot
get one run, whichever inserted first. :class:`LedgerRuns` is
:class:`runner.state.postgres.PostgresStore`'s part that inserts them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg

from runner.core.errors import StoreError
from runner.core.ids import new_run_id
from runner.core.states import RunState
from runner.state.moves import HOLDS_KEY, run_from_row, unique_key
from runner.state.pgbase import COLS as _COLS
from runner.state.pgbase import SELECT_RUNS as _SELECT_RUNS
from runner.state.pgbase import LedgerConnection

if TYPE_CHECKING:
    from collections.abc import Sequence

    from runner.state.pgbase import Cursor
    from runner.state.records import NewRun, RunRecord

# The partial unique index's predicate (pgschema's runs_key), for ON CONFLICT.
_KEYED = f"run_key IS NOT NULL AND {HOLDS_KEY}"
# A new idle run and its "created" event in one statement; a run with a key another run
# holds is not inserted (no row back). A run without a key (NULL) never conflicts.
_INSERT_RUN = (
    "WITH made AS (INSERT INTO runs (run_id, task_id, task_hash, slot, state,"
    " attempt, max_attempts, created_at, updated_at, run_key)"
    " VALUES (%s, %s, %s, %s, 'idle', 0, %s, %s, %s, %s)"
    f" ON CONFLICT (task_id, run_key) WHERE {_KEYED} DO NOTHING"
    f" RETURNING {_COLS}), logged AS (INSERT INTO events"
    " (run_id, at, from_state, to_state, detail)"
    " SELECT run_id, %s, NULL, 'idle', 'created' FROM made)"
    f" SELECT {_COLS} FROM made"
)
#: The advisory lock a pass's run creation holds for its transaction: two instances
#: inserting the same keys in other orders (checkouts that differ, explicit ids) would
#: each wait on a key the other inserted first (a deadlock); one at a time, the second
#: finds the first's runs. A single ``create_run`` inserts one key and needs none.
CREATE_RUNS_LOCK = 0x6F6D6E69  # "omni"


class LedgerRuns(LedgerConnection):  # pylint: disable=abstract-method  # the store's
    """The ledger's run creation (:meth:`create_run`, :meth:`create_runs`)."""

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
        """A new idle run (attempt 0), after every existing run in ``seq``.

        With ``unique`` the run takes its key (slot, or content for a one-off); when a
        run already serves that key (not failed with every attempt spent), that run is
        returned instead: whichever instance inserted first decides."""
        run_id = run_id or new_run_id(self._clock())
        key = unique_key(task_hash, slot) if unique else None
        for _ in range(3):  # the run found may fail for good just before it is read
            params = _insert_params(
                run_id, task_id, task_hash, slot, max_attempts, key, self._now()
            )
            created = self._insert_run(run_id, params)
            if created is not None or key is None:
                break
            found = self._read_runs(
                f"WHERE task_id = %s AND run_key = %s AND {_KEYED}", (task_id, key)
            )
            if found:
                return found[0]
        if created is None:
            raise StoreError(f"{self.where}: cannot create a run of {task_id}: its key is busy")
        return created

    def create_runs(self, new: Sequence[NewRun]) -> list[RunRecord]:
        """As :meth:`create_run` for each, in order, all in one transaction (one
        instance's at a time: :data:`CREATE_RUNS_LOCK`): the rows go in one
        ``executemany`` (one round trip), then a run whose key another run holds
        (inserted earlier, or earlier in ``new``) is looked up, as :meth:`create_run`
        does."""
        if not new:
            return []
        now = self._now()
        rows = [
            (
                new_run_id(self._clock()),
                one,
                unique_key(one.task_hash, one.slot) if one.unique else None,
            )
            for one in new
        ]
        with self._write(transaction=True) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_RUNS_LOCK,))
            try:
                cur.executemany(
                    _INSERT_RUN,
                    [
                        _insert_params(r, n.task_id, n.task_hash, n.slot, n.max_attempts, key, now)
                        for r, n, key in rows
                    ],
                    returning=True,
                )
                made: list[RunRecord | None] = []
                while True:
                    row = cur.fetchone()
                    made.append(None if row is None else run_from_row(row))
                    if not cur.nextset():
                        break
            except psycopg.errors.UniqueViolation:
                raise StoreError(f"{self.where}: a new run's id already exists") from None
            created = [
                found or self._holder(cur, run_id, one, key, now)
                for found, (run_id, one, key) in zip(made, rows, strict=True)
            ]
            for run, found in zip(created, made, strict=True):
                if found is not None:
                    self._note(run, None, RunState.IDLE, "created")
        return created

    def _holder(
        self, cur: Cursor, run_id: str, new: NewRun, key: str | None, now: str
    ) -> RunRecord:
        """The run that holds ``new``'s key (its insert did nothing), in the caller's
        transaction; should it fail for good meanwhile, ``new`` is inserted again."""
        for _ in range(3):  # the run found may fail for good just before it is read
            found = cur.execute(
                f"{_SELECT_RUNS} WHERE task_id = %s AND run_key = %s AND {_KEYED}",
                (new.task_id, key),
            ).fetchone()
            if found is not None:
                return run_from_row(found)
            created = self._insert_on(
                cur,
                _insert_params(
                    run_id, new.task_id, new.task_hash, new.slot, new.max_attempts, key, now
                ),
            )
            if created is not None:
                return created
        raise StoreError(f"{self.where}: cannot create a run of {new.task_id}: its key is busy")

    def _insert_run(self, run_id: str, params: tuple[object, ...]) -> RunRecord | None:
        """:meth:`_insert_on` in a transaction of its own; a taken ``run_id`` is a
        :class:`StoreError`."""
        with self._write() as cur:
            try:
                return self._insert_on(cur, params)
            except psycopg.errors.UniqueViolation:
                raise StoreError(f"{self.where}: run {run_id} already exists") from None

    def _insert_on(self, cur: Cursor, params: tuple[object, ...]) -> RunRecord | None:
        """One run inserted in ``cur``'s transaction with its "created" event; ``None``
        when another run holds its key."""
        row = cur.execute(_INSERT_RUN, params).fetchone()
        created = None if row is None else run_from_row(row)
        if created is not None:
            self._note(created, None, RunState.IDLE, "created")
        return created


def _insert_params(  # pylint: disable=too-many-arguments
    run_id: str,
    task_id: str,
    task_hash: str,
    slot: str | None,
    max_attempts: int,
    key: str | None,
    now: str,
) -> tuple[object, ...]:
    """:data:`_INSERT_RUN`'s parameters for one new run created ``now``."""
    return (run_id, task_id, task_hash, slot, max_attempts, now, now, key, now)
