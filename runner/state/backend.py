"""The state store's one interface, and the factory that opens the backend in force.

Two backends keep the same records through the same state machine:

* SQLite (:class:`runner.state.store.Store`, the default): a file beside the project,
  one runner at a time (:class:`runner.state.statelock.StateLock`);
* PostgreSQL (:class:`runner.state.postgres.PostgresStore`): one ledger for services and
  ``run --once`` shards on several machines, chosen by ``state: {url: postgresql://…}``
  in the config or ``OMNI_STATE_URL``. psycopg is imported only then.

Callers type against :class:`StateStore` and open it with :func:`open_store`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol, Self

from runner.core.clock import utc_now
from runner.core.dsn import shown
from runner.state.statelock import StateLock
from runner.state.store import Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from datetime import datetime
    from pathlib import Path

    from runner.core.redaction import Redactor
    from runner.core.states import Mode, RunState
    from runner.defs.config import ResolvedPaths
    from runner.defs.tasks import Task
    from runner.state.records import (
        InstanceRecord,
        ModeRecord,
        RunChange,
        RunRecord,
        Settlement,
    )
    from runner.state.resultcheck import ResultCheck


class StateStore(Protocol):  # pylint: disable=too-many-public-methods  # the store's API
    """What every backend offers; see :class:`runner.state.store.Store` for each rule."""

    def close(self) -> None:
        """Close the store (safe to call twice)."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def upsert_task(self, task: Task) -> None:
        """Record a task file as last loaded."""

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
        """A new idle run, or with ``unique`` the run that already serves its key."""

    def claim(
        self,
        run: str | RunRecord,
        *,
        executor: str | None = None,
        tool: str | None = None,
        detail: str = "",
    ) -> RunRecord | None:
        """Move an idle or waiting run to dispatching (or executing), or ``None``."""

    def transition(
        self, run: str | RunRecord, new: RunState, *, detail: str = "", **changes: Any
    ) -> RunRecord:
        """Move a run to ``new``, checked against the table."""

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run's current row, or ``None``."""

    def runs(
        self,
        *,
        state: RunState | None = None,
        task_id: str | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[RunRecord]:
        """Runs in creation order, optionally filtered."""

    def counts_by_state(self) -> dict[RunState, int]:
        """How many runs are in each state."""

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """A run's state changes, oldest first."""

    def open_run(self, task_id: str, task_hash: str, slot: str | None = None) -> RunRecord | None:
        """The newest run of this content (and slot) that may still make progress."""

    def has_completed(self, task_id: str, task_hash: str, slot: str | None = None) -> bool:
        """True if a run of this content (and slot) completed."""

    def last_finished_slot(self, task_id: str) -> str | None:
        """The latest slot a finished run of this task served."""

    def set_note(self, run_id: str, note: str) -> None:
        """Set a run's note without a state change."""

    def delete_runs(self, run_ids: list[str]) -> int:
        """Delete runs and their events; how many went."""

    def settle_in_flight(
        self, decide: Callable[[RunRecord], Settlement]
    ) -> tuple[list[RunRecord], list[RunRecord]]:
        """Settle the runs a dead runner left in flight; the moved and the waiting runs."""

    def mode(self) -> ModeRecord:
        """The current mode."""

    def set_mode(self, new: Mode, why: str) -> ModeRecord:
        """Change the mode, checked against the table."""

    def mode_history(self, limit: int = 50) -> list[dict[str, Any]]:
        """Mode changes, newest first."""

    def spend_since(self, moment_iso: str) -> float:
        """Total cost of runs finished since ``moment_iso``."""

    def meta_get(self, key: str) -> str | None:
        """A stored value, or ``None``."""

    def meta_set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``."""


def location(paths: ResolvedPaths) -> str:
    """Where the state lives, fit to show: the SQLite file, or the URL without password."""
    return shown(paths.state_url) if paths.state_url else str(paths.state)


def exists(paths: ResolvedPaths) -> bool:
    """Whether there is state to read (a ledger URL always counts)."""
    return paths.state_url is not None or paths.state.exists()


def open_store(
    paths: ResolvedPaths,
    *,
    clock: Callable[[], datetime] = utc_now,
    on_transition: Callable[[RunChange], None] | None = None,
    redactor: Redactor | None = None,
    role: str | None = None,
    lease_seconds: float = 30.0,
) -> StateStore:
    """The store ``paths`` names: PostgreSQL for a ``state_url``, else the SQLite file;
    both pass the free text they write (errors, notes, details) through ``redactor``.

    ``role`` (``service``, ``run --once``) makes a PostgreSQL store join the fleet (an
    instance row, leases of ``lease_seconds``); SQLite has no fleet and ignores both.
    """
    if paths.state_url:
        # psycopg loads only for a ledger URL.
        from runner.state.postgres import PostgresStore  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

        return PostgresStore(
            paths.state_url,
            clock=clock,
            on_transition=on_transition,
            redactor=redactor,
            role=role,
            lease_seconds=lease_seconds,
        )
    return Store(paths.state, clock=clock, on_transition=on_transition, redactor=redactor)


def runner_lock(paths: ResolvedPaths, who: str) -> AbstractContextManager[object]:
    """One runner a SQLite file (:class:`StateLock`); a PostgreSQL ledger takes many, its
    leases and unique keys keep them apart."""
    if paths.state_url:
        return nullcontext()
    return StateLock(paths.state, who)


@asynccontextmanager
async def fleet(
    store: StateStore,
    results_root: Path,
    check: Callable[[], ResultCheck],
    *,
    on_work: Callable[[], object] | None = None,
) -> AsyncIterator[None]:
    """While the block runs, a PostgreSQL store's instance heartbeats (renewing the
    leases of its runs), settles dead instances' runs by their result files (read
    through ``check()``), and calls ``on_work`` when a run becomes idle anywhere
    (:mod:`runner.state.fleet`). Nothing for SQLite."""
    if isinstance(store, Store):
        yield
        return
    from runner.state.fleet import Fleet  # noqa: PLC0415 # pylint: disable=import-outside-toplevel
    from runner.state.postgres import PostgresStore  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

    assert isinstance(store, PostgresStore)
    async with Fleet(store, results_root, check, on_work=on_work).running():
        yield


def fleet_members(store: StateStore) -> list[InstanceRecord]:
    """The instances sharing a PostgreSQL ledger (none for SQLite)."""
    if isinstance(store, Store):
        return []
    from runner.state.postgres import PostgresStore  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

    assert isinstance(store, PostgresStore)
    return store.instances()
