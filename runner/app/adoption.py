"""Work from the shared ledger: idle runs this service did not plan, started here.

On a PostgreSQL ledger every instance plans, and any may find a run idle that it never
started: one another instance created, or one a dead instance held until its lease ran
out and a sweep gave it back. When the ledger wakes the service (a run became idle
anywhere) the :class:`Adopter` starts each such run whose task this service has loaded
with the same content; the claim decides which instance runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from runner.core.states import RunState

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from runner.defs.tasks import Task
    from runner.state.interface import StateStore
    from runner.state.records import RunRecord


class _Runs(Protocol):
    def running(self, run_id: str) -> bool:
        """True while this service works on the run."""

    def start(self, task: Task, run: RunRecord) -> asyncio.Task[object]:
        """Start working on the run."""


class _Known(Protocol):
    def get(self, task_id: str) -> Task | None:
        """The loaded task with this id."""


class Adopter:
    """Starts the idle runs of loaded tasks that nothing here works on yet."""

    def __init__(
        self,
        *,
        store: StateStore,
        tasks: _Known,
        runs: _Runs,
        waits: Callable[[Task], str | None],
    ) -> None:
        self._store = store
        self._tasks = tasks
        self._runs = runs
        self._waits = waits
        self.stopped = False
        """Set at shutdown: nothing more is started."""

    def adopt(self) -> int:
        """Start every idle run of a loaded, enabled task with the same content that may
        run now; how many started."""
        if self.stopped:
            return 0
        started = 0
        for run in self._store.runs(state=RunState.IDLE, newest_first=False):
            task = self._tasks.get(run.task_id)
            if (
                task is None
                or task.task_hash != run.task_hash
                or not task.spec.enabled
                or self._runs.running(run.run_id)
                or self._waits(task) is not None
            ):
                continue
            self._runs.start(task, run)
            started += 1
        return started
