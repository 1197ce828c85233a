"""The state store's one interface: what every backend offers.

:class:`StateStore` is the type callers hold (planning, dispatch, the app). Its reads
are written once (:class:`runner.state.queries.StoreQueries`; two pass-wide reads are
also each backend's own query); its writes are abstract here and made by each backend
through its one checked move path: SQLite (:class:`runner.state.store.Store`) and
PostgreSQL (:class:`runner.state.postgres.PostgresStore`). A method added here is abstract until
both backends have it: a backend without it cannot even be opened, and the store's
test suite runs every method on both.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Self

from runner.state.queries import StoreQueries

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from runner.core.states import Mode, RunState
    from runner.defs.tasks import Task
    from runner.state.records import ModeRecord, NewRun, RunRecord, Settlement


class StateStore(StoreQueries):
    """Tasks, runs and their events, the system mode, rate limits and free metadata."""

    @abstractmethod
    def close(self) -> None:
        """Close the store (safe to call twice)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def upsert_task(self, task: Task) -> None:
        """Record a task file as last loaded, as :meth:`upsert_tasks` does for one."""
        self.upsert_tasks([task])

    @abstractmethod
    def upsert_tasks(self, tasks: Sequence[Task]) -> None:
        """Record a pass's task files as last loaded (id, absolute path, hash, schedule,
        enabled) in one transaction (thousands of tasks, one commit); a row that would
        not change is not rewritten (its ``updated_at`` says when it last changed)."""

    @abstractmethod
    def create_run(  # pylint: disable=too-many-arguments
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

        With ``unique`` (what planning asks for, but for a forced run) a run of the same
        slot (scheduled) or content (one-off) that still holds that key
        (:data:`runner.state.moves.HOLDS_KEY`) is returned instead: the database decides
        which run serves it, whoever planned it. A ``run_id`` already taken is a
        :class:`StoreError`."""

    @abstractmethod
    def create_runs(self, new: Sequence[NewRun]) -> list[RunRecord]:
        """:meth:`create_run` for each of ``new``, in order, in one transaction (a pass
        creating thousands of runs: one commit); with ``unique``, a run whose key another
        holds (created earlier, or earlier in ``new``) is that other run."""

    @abstractmethod
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
        event ``detail``) in the same transaction. ``run`` is a run id, or the caller's
        :class:`RunRecord`: then the row is not read first, and a record that no longer
        matches it (state and attempt, the fencing token) is not claimable either."""

    @abstractmethod
    def transition(
        self, run: str | RunRecord, new: RunState, *, detail: str = "", **changes: Any
    ) -> RunRecord:
        """Move a run to ``new`` (checked against the table), setting any column in
        ``changes`` (executor, tool, model, tier, mode, note, error, result_path,
        cost_usd, slot); the note is cleared unless ``changes`` sets one.

        ``run`` is a run id, or the :class:`RunRecord` its caller holds: then the row
        is not read first, and the move is refused with :class:`StaleRunError` if the
        row no longer has that record's state and attempt. Raises
        :class:`IllegalTransitionError`, :class:`StoreError` for an unknown run,
        ``TypeError`` for an unknown field."""

    @abstractmethod
    def set_note(self, run_id: str, note: str) -> None:
        """Set a run's ``note`` (why it waits, how a fault ended) without a state change."""

    @abstractmethod
    def delete_runs(self, run_ids: list[str]) -> int:
        """Delete runs and (by cascade) their events; returns how many runs went."""

    @abstractmethod
    def settle_in_flight(
        self, decide: Callable[[RunRecord], Settlement]
    ) -> tuple[list[RunRecord], list[RunRecord]]:
        """In one transaction, move every run a dead runner left dispatching or
        executing the way ``decide`` says (on a ledger: only runs whose lease ran out).
        Returns the moved runs, and the waiting runs, both in creation order."""

    @abstractmethod
    def set_mode(self, new: Mode, why: str) -> ModeRecord:
        """Change the mode (checked against the table); the same mode is a no-op."""

    @abstractmethod
    def set_rate_limit(self, model: str, until_iso: str, why: str) -> None:
        """Remember that ``model`` is rate-limited until ``until_iso`` (the later wins)."""

    @abstractmethod
    def meta_set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any earlier one."""
