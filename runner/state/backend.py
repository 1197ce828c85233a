"""The factory that opens the state backend in force, and what only a ledger has.

Two backends keep the same records through the same state machine, behind one
interface (:class:`runner.state.interface.StateStore`):

* SQLite (:class:`runner.state.store.Store`, the default): a file beside the project,
  one runner at a time (:class:`runner.state.statelock.StateLock`);
* PostgreSQL (:class:`runner.state.postgres.PostgresStore`): one ledger for services and
  ``run --once`` shards on several machines, chosen by ``state: {url: postgresql://…}``
  in the config or ``OMNI_STATE_URL``. psycopg is imported only then.

Callers type against :class:`StateStore` and open it with :func:`open_store`; a ledger's
fleet (heartbeats, sweeps, wake-ups, live instances) is reached through :func:`fleet`
and :func:`fleet_members`, which are no-ops on SQLite.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING

from runner.core.clock import utc_now
from runner.core.dsn import shown
from runner.state.statelock import StateLock
from runner.state.store import Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from datetime import datetime
    from pathlib import Path

    from runner.core.redaction import Redactor
    from runner.defs.environment import ResolvedPaths
    from runner.state.interface import StateStore
    from runner.state.records import InstanceRecord, RunChange
    from runner.state.resultcheck import ResultCheck


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
    read_only: bool = False,
) -> StateStore:
    """The store ``paths`` names: PostgreSQL for a ``state_url``, else the SQLite file;
    both pass the free text they write (errors, notes, details) through ``redactor``.
    ``read_only`` (the commands that only look) migrates nothing and can write nothing.

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
            read_only=read_only,
        )
    return Store(
        paths.state,
        clock=clock,
        on_transition=on_transition,
        redactor=redactor,
        read_only=read_only,
    )


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
