"""One runner process as an instance of a shared PostgreSQL ledger, in the background.

While :meth:`Fleet.running` is open:

* a heartbeat thread, on its own connection, touches the instance's row every third of
  the lease and renews the leases of every run the instance holds in flight. A thread,
  not the event loop: planning a large batch of task files keeps the loop busy for
  seconds, and a lease must not run out on a live instance because of that. An
  instance whose heartbeats stop (killed, or cut off from the database) loses its runs
  to the others once a lease has passed;
* on the event loop, on an asynchronous connection, a sweep every third of the lease:
  runs whose lease expired are settled as crash recovery settles them
  (:func:`runner.state.recovery.settlement`: completed when their result file is there,
  else back to idle, or failed without attempts left), on whichever instance gets there
  first; instances dead for two leases with nothing left in flight are forgotten;
* between sweeps it ``LISTEN``\\ s: a run that becomes idle anywhere (created, retried,
  released by a sweep) wakes it through ``on_work``.

Each of its connections must open within a heartbeat's interval (libpq's floor, 2 s, at
least; a ``connect_timeout`` in the URL wins): a connection slower than that has missed
a beat anyway, and an unreachable host (a dropped route, a full listen queue) then fails
the attempt instead of holding it, and with it the instance's shutdown, for the
system's TCP timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import psycopg

from runner.core.errors import StoreError
from runner.core.states import IN_FLIGHT
from runner.state.pgbase import connect_timeout
from runner.state.pgschema import WORK_CHANNEL
from runner.state.recovery import settlement

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from runner.state.postgres import PostgresStore
    from runner.state.resultcheck import ResultCheck

log = logging.getLogger(__name__)

_IN_FLIGHT = [s.value for s in IN_FLIGHT]
#: Notifications arriving this close together wake the instance once.
_GATHER = 0.05
#: A burst of notifications (a batch of runs created) wakes it at most this often.
_WAKE_EVERY = 0.25
#: The longest a wait for notifications lasts, so a stop is noticed soon.
_POLL = 0.5


class Fleet:
    """Heartbeats, lease renewal, sweeps and wake-ups for one joined store."""

    def __init__(
        self,
        store: PostgresStore,
        results_root: Path,
        check: Callable[[], ResultCheck],
        *,
        on_work: Callable[[], object] | None = None,
    ) -> None:
        if store.instance_id is None:
            raise ValueError("a fleet needs a store opened with a role (an instance)")
        self._store = store
        self._results = results_root
        self._check = check
        self._on_work = on_work
        self._every = store.lease_seconds / 3
        self._timeout = connect_timeout(store.url, self._every)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Keep this instance alive (and awake) while the block runs."""
        heart = _Heartbeat(self._store, self._every, self._timeout)
        try:
            conn = await self._connect()
        except psycopg.errors.ConnectionTimeout as exc:
            raise StoreError(
                f"{self._store.where}: cannot connect to listen for work: no answer within"
                f" {self._timeout} s"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self._store.where}: cannot connect to listen") from exc
        heart.start()
        stop = asyncio.Event()
        job = asyncio.create_task(self._loop(conn, stop), name="fleet sweeps")
        try:
            yield
        finally:
            stop.set()
            try:
                await job
            finally:
                heart.stop()

    async def _connect(self) -> psycopg.AsyncConnection[object]:
        conn = await psycopg.AsyncConnection.connect(
            self._store.url,
            autocommit=True,
            application_name="omni fleet",
            connect_timeout=self._timeout,
        )
        if self._on_work is not None:
            await conn.execute(f"LISTEN {WORK_CHANNEL}")
        return conn

    async def _loop(self, conn: psycopg.AsyncConnection[object], stop: asyncio.Event) -> None:
        next_sweep = 0.0
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_sweep:
                        self._sweep()
                        next_sweep = time.monotonic() + self._every
                    wait = min(_POLL, max(0.0, next_sweep - time.monotonic()))
                    if self._on_work is None:
                        await _sleep_unless(stop, wait)
                    elif await _notified(conn, wait):
                        await _notified(conn, _GATHER)  # let a burst arrive whole
                        self._on_work()
                        await _sleep_unless(stop, _WAKE_EVERY)  # notifications queue up
                except (psycopg.Error, OSError, StoreError) as exc:
                    # The ledger is unreachable: keep trying.
                    log.warning("listening on %s failed: %s", self._store.where, exc)
                    await _sleep_unless(stop, min(self._every, 1.0))
                    conn = await self._reconnect(conn)
        finally:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _reconnect(
        self, conn: psycopg.AsyncConnection[object]
    ) -> psycopg.AsyncConnection[object]:
        """A fresh connection for the loop (the old one closed), or the old one to retry."""
        try:
            fresh = await self._connect()
        except (psycopg.Error, OSError):
            return conn
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.close()
        return fresh

    def _sweep(self) -> None:
        """Settle the runs whose lease expired (a dead instance's)."""
        check = self._check()  # result files are checked as of now
        moved, _ = self._store.settle_in_flight(lambda run: settlement(run, self._results, check))
        if moved:
            log.info(
                "settled %d run(s) of instance(s) whose lease expired: %s",
                len(moved),
                ", ".join(f"{r.task_id} {r.run_id} -> {r.state}" for r in moved),
            )


class _Heartbeat:
    """A thread that keeps the instance's row and its runs' leases fresh."""

    def __init__(self, store: PostgresStore, every: float, timeout: int) -> None:
        self._store = store
        self._every = every
        self._timeout = timeout
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="omni heartbeat", daemon=True)

    def start(self) -> None:
        """Beat once now (so a failure shows at once), then every ``every`` seconds."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (the instance's row and leases stay until the store closes)."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        conn: psycopg.Connection[object] | None = None
        while True:
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        self._store.url,
                        autocommit=True,
                        application_name="omni heartbeat",
                        connect_timeout=self._timeout,
                    )
                self._beat(conn)
            except (psycopg.Error, OSError) as exc:
                # The ledger is unreachable: keep trying; the leases run out meanwhile.
                log.warning("heartbeat to %s failed: %s", self._store.where, exc)
                if conn is not None:
                    with contextlib.suppress(psycopg.Error, OSError):
                        conn.close()
                conn = None
            if self._stopping.wait(self._every):
                break
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                conn.close()

    def _beat(self, conn: psycopg.Connection[object]) -> None:
        """Touch this instance's row (again, if it was forgotten as dead), renew the
        leases of its runs in flight, forget long-dead instances; each statement
        commits on its own (no row lock is held longer than one statement)."""
        store = self._store
        touched = conn.execute(
            "UPDATE instances SET heartbeat_at = clock_timestamp() WHERE id = %s",
            (store.instance_id,),
        )
        if touched.rowcount == 0:
            conn.execute(
                "INSERT INTO instances (id, host, pid, role, lease_seconds, started_at,"
                " heartbeat_at) VALUES (%s, %s, %s, 'rejoined', %s, clock_timestamp(),"
                " clock_timestamp()) ON CONFLICT (id) DO NOTHING",
                (store.instance_id, socket.gethostname(), os.getpid(), store.lease_seconds),
            )
        conn.execute(
            "UPDATE runs SET lease_until = clock_timestamp() + %s * interval '1s'"
            " WHERE lease_owner = %s AND state = ANY(%s)",
            (store.lease_seconds, store.instance_id, _IN_FLIGHT),
        )
        conn.execute(
            "DELETE FROM instances i WHERE i.heartbeat_at + 2 * i.lease_seconds"
            " * interval '1s' < clock_timestamp() AND NOT EXISTS (SELECT 1 FROM runs r"
            " WHERE r.lease_owner = i.id AND r.state = ANY(%s))",
            (_IN_FLIGHT,),
        )


async def _notified(conn: psycopg.AsyncConnection[object], within: float) -> bool:
    """True if a notification arrived within ``within`` seconds."""
    async for _ in conn.notifies(timeout=within, stop_after=1):
        return True
    return False


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
