"""The runs service mode started: each on the dispatcher, one at a time per task, and
at shutdown the grace they get before the rest are cancelled back to idle."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING

from runner.core.errors import OmniError
from runner.core.states import RunState

if TYPE_CHECKING:
    from runner.defs.tasks import Task
    from runner.dispatch.dispatcher import Dispatcher
    from runner.dispatch.outcome import Finished
    from runner.state.interface import StateStore
    from runner.state.records import RunRecord

log = logging.getLogger("runner.app.service")  # the service's log lines, as before the split


class Runs:
    """The runs the service started, on the dispatcher, one at a time per task."""

    def __init__(self, dispatcher: Dispatcher, store: StateStore) -> None:
        self._dispatcher = dispatcher
        self._store = store
        self._active: dict[asyncio.Task[Finished | None], str] = {}  # -> run id
        self._jobs: dict[str, asyncio.Task[Finished | None]] = {}  # run id ->
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._active)

    def running(self, run_id: str) -> bool:
        """True while a job for ``run_id`` is started and not done."""
        return run_id in self._jobs

    def start(self, task: Task, run: RunRecord) -> asyncio.Task[Finished | None]:
        """Start taking ``run`` through the dispatcher (the job already on it, if any);
        the task runs even if the caller is cancelled, until :meth:`drain` cancels it."""
        if (started := self._jobs.get(run.run_id)) is not None:
            return started
        job = asyncio.create_task(self._one(task, run), name=f"run {task.id} {run.run_id}")
        self._active[job] = run.run_id
        self._jobs[run.run_id] = job
        job.add_done_callback(self._forget)
        return job

    def _forget(self, job: asyncio.Task[Finished | None]) -> None:
        del self._jobs[self._active.pop(job)]

    async def _one(self, task: Task, run: RunRecord) -> Finished | None:
        self._users[task.id] += 1
        lock = self._locks.setdefault(task.id, asyncio.Lock())
        try:
            async with lock:
                return await self._dispatcher.run(task, run)
        except OmniError as exc:
            log.error("run %s %s: %s", task.id, run.run_id, exc)
        except Exception:  # pylint: disable=broad-exception-caught  # one run must not stop all
            log.exception("run %s %s: unexpected error", task.id, run.run_id)
        finally:
            self._users[task.id] -= 1
            if not self._users[task.id]:
                del self._users[task.id]
                del self._locks[task.id]
        return None

    async def drain(self, grace: float, hurry: asyncio.Event) -> int:
        """Cancel the runs not yet claimed (still idle: queued for a slot or for their
        task's previous run); wait up to ``grace`` seconds (or until ``hurry``) for the
        others, then cancel the rest (back to idle). Returns how many were cancelled."""
        queued = [job for job, run_id in self._active.items() if self._unclaimed(run_id)]
        for job in queued:  # no await since the check: none of them can claim meanwhile
            job.cancel()
        await asyncio.gather(*queued, return_exceptions=True)

        async def all_done() -> None:
            while self._active:
                await asyncio.wait(set(self._active))

        waiters = {asyncio.ensure_future(all_done()), asyncio.ensure_future(hurry.wait())}
        await asyncio.wait(waiters, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        left = list(self._active)
        for job in left:
            job.cancel()
        await asyncio.gather(*left, *waiters, return_exceptions=True)
        return len(queued) + len(left)

    def _unclaimed(self, run_id: str) -> bool:
        run = self._store.get_run(run_id)
        return run is not None and run.state in {RunState.IDLE, RunState.WAITING}
