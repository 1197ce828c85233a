"""``omni run --once``: load, resume leftovers, pick what is runnable, dispatch, report.

Kept apart from ``cli.py`` (which only parses and prints) and from ``service.py``
(the long-running mode) so both the CLI and tests call one function.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from runner.config import Config, ResolvedPaths, secret_env_values
from runner.dispatcher import Dispatcher, Finished
from runner.errors import TaskFileError
from runner.executors import ExecutorPool
from runner.results import Redactor, utc_now
from runner.states import RunState
from runner.store import ResumeReport, RunRecord, Store
from runner.tasks import Task, load_tasks


@dataclass(frozen=True, slots=True)
class Shard:
    """``--shard K/N``: this job runs the tasks whose id hashes to K - 1 modulo N."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``K/N`` (1 <= K <= N); raises ``ValueError`` with a clear message."""
        try:
            k, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard wants K/N like 2/5, got {text!r}") from None
        if n < 1 or not 1 <= k <= n:
            raise ValueError(f"--shard {text}: K must be in 1..N and N >= 1")
        return cls(k, n)

    def owns(self, task_id: str) -> bool:
        """True when ``task_id`` belongs to this shard."""
        digest = int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big")
        return digest % self.count == self.index - 1


@dataclass(frozen=True, slots=True)
class Skipped:
    """A task that did not run this time, and why (in words for a person)."""

    task_id: str
    reason: str
    state: RunState | None = None


@dataclass(slots=True)
class OnceReport:
    """Everything ``run --once`` did, for the summary table and ``--json``."""

    problems: list[TaskFileError] = field(default_factory=list)
    resumed: ResumeReport | None = None
    finished: list[Finished] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def failed(self) -> list[Finished]:
        """Runs that ended failed."""
        return [f for f in self.finished if f.run.state is RunState.FAILED]

    @property
    def exit_code(self) -> int:
        """0 when all went well or had to wait; 1 when a run failed or a file was invalid."""
        return 1 if self.failed or self.problems else 0


@dataclass(frozen=True, slots=True)
class OnceOptions:
    """What the user asked ``run --once`` for."""

    task_id: str | None = None
    force: bool = False
    shard: Shard | None = None


def plan(
    tasks: list[Task], store: Store, options: OnceOptions
) -> tuple[list[tuple[Task, RunRecord]], list[Skipped]]:
    """Decide which tasks run now; create (or reuse) their run rows."""
    runnable: list[tuple[Task, RunRecord]] = []
    skipped: list[Skipped] = []
    for task in tasks:
        if options.task_id is not None and task.id != options.task_id:
            continue
        if options.shard is not None and not options.shard.owns(task.id):
            continue
        store.upsert_task(task)
        if not task.spec.enabled and not options.force:
            skipped.append(Skipped(task.id, "disabled (enabled: false)"))
            continue
        if task.spec.schedule is not None and not options.force:
            skipped.append(
                Skipped(task.id, f"scheduled ({task.spec.schedule}): runs in `omni run`")
            )
            continue
        if not options.force and store.has_completed(task.id, task.task_hash):
            skipped.append(
                Skipped(task.id, "already completed for this content", RunState.COMPLETED)
            )
            continue
        run = None if options.force else store.open_run(task.id, task.task_hash)
        if run is None:
            run = store.create_run(task.id, task.task_hash, max_attempts=task.spec.retries + 1)
        elif run.state is RunState.FAILED:
            run = store.transition(run.run_id, RunState.IDLE, detail="retry on next run --once")
        if task.is_prompt:
            skipped.append(
                Skipped(
                    task.id,
                    "prompt task: waits (idle) until prompt tasks are supported (coming next)",
                    RunState.IDLE,
                )
            )
            continue
        runnable.append((task, run))
    return runnable, skipped


async def run_once(
    config: Config,
    paths: ResolvedPaths,
    options: OnceOptions,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = utc_now,
    on_planned: Callable[[int], None] | None = None,
    on_finished: Callable[[Finished], None] | None = None,
) -> OnceReport:
    """Run every runnable task once and return what happened."""
    env = os.environ if environ is None else environ
    loaded = load_tasks(paths.tasks, config.limits.task_file_bytes)
    report = OnceReport(problems=loaded.problems)
    if options.task_id is not None and all(t.id != options.task_id for t in loaded.tasks):
        report.skipped.append(Skipped(options.task_id, "no valid task has this id"))
        return report
    with Store(paths.state, clock=clock) as store:
        report.resumed = store.resume(paths.results)
        runnable, report.skipped = plan(loaded.tasks, store, options)
        if on_planned is not None:
            on_planned(len(runnable))
        if not runnable:
            return report
        redactor = Redactor([*config.secret_values(), *secret_env_values(env)])
        workspace = Path(config.workspace) if config.workspace else Path.cwd()
        async with ExecutorPool(config.mcp_servers, workspace=workspace, environ=env) as pool:
            dispatcher = Dispatcher(
                store=store,
                pool=pool,
                config=config,
                results_root=paths.results,
                redactor=redactor,
                clock=clock,
                on_finished=on_finished,
            )
            report.finished = await dispatcher.run_all(runnable)
    return report
