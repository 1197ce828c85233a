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
from typing import TYPE_CHECKING

from runner.app.assembly import dispatching
from runner.core.errors import GitOpsError, TaskFileError
from runner.core.states import Mode, RunState
from runner.defs.config import BUILTIN, Config, ResolvedPaths
from runner.defs.routing import waits_for_model
from runner.defs.tasks import Task, load_tasks
from runner.dispatch.dispatcher import Dispatcher, Finished
from runner.dispatch.faults import FaultHandling, repair_waits
from runner.planning.dueness import (
    Due,
    DueRule,
    clock_from,
    decide,
    history_from_results,
    history_from_store,
)
from runner.state.results import iso, utc_now
from runner.state.statelock import StateLock
from runner.state.store import ResumeReport, RunRecord, Store

if TYPE_CHECKING:
    from runner.gitops.workspace import GitWorkspace, Prepared, Published


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
    published: Published | None = None
    """What ``--commit`` / ``--push`` did, when asked."""
    git_error: str | None = None
    """Why ``--commit`` / ``--push`` failed (the result files are on disk)."""

    @property
    def failed(self) -> list[Finished]:
        """Runs that ended failed."""
        return [f for f in self.finished if f.run.state is RunState.FAILED]

    @property
    def exit_code(self) -> int:
        """0 when all went well or had to wait; 1 when a run failed, a file was invalid,
        or the results could not be committed or pushed."""
        return 1 if self.failed or self.problems or self.git_error else 0


@dataclass(frozen=True, slots=True)
class OnceOptions:
    """What the user asked ``run --once`` for."""

    task_id: str | None = None
    force: bool = False
    shard: Shard | None = None
    commit: bool = False
    """Commit the results on the current branch (``--commit``)."""
    push: str | None = None
    """Commit the results on this branch and push it to ``origin`` (``--push BRANCH``)."""


def plan(
    tasks: list[Task],
    store: Store,
    options: OnceOptions,
    rule: DueRule | None = None,
    *,
    waits_for: Callable[[Task], str | None] | None = None,
) -> tuple[list[tuple[Task, RunRecord]], list[Skipped]]:
    """Decide which tasks run now (due-ness from the store and the result files, see
    ``runner.planning.dueness``; without ``rule``, from the store alone as of now); create (or
    reuse) their run rows. A task for which ``waits_for`` gives a reason (a prompt task
    with no model configured) stays idle."""
    rule = rule or DueRule(now=utc_now(), results=None)
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
        slot = None  # a forced run serves no slot: it is an extra run
        if not options.force:
            history = history_from_store(store, task).merge(
                history_from_results(rule.results, task.id)
            )
            decision = decide(task, history, rule)
            if decision.verdict is not Due.RUN:
                done = {Due.DONE: RunState.COMPLETED, Due.FAILED: RunState.FAILED}.get(
                    decision.verdict
                )
                skipped.append(Skipped(task.id, decision.reason, done))
                continue
            slot = iso(decision.slot) if decision.slot is not None else None
        run = None if options.force else store.open_run(task.id, task.task_hash, slot)
        if run is None:
            run = store.create_run(
                task.id, task.task_hash, max_attempts=task.spec.retries + 1, slot=slot
            )
        elif run.state is RunState.FAILED:
            run = store.transition(run.run_id, RunState.IDLE, detail="retry on next run --once")
        if waits_for is not None and (reason := waits_for(task)) is not None:
            if run.note != reason:
                store.set_note(run.run_id, reason)
            skipped.append(Skipped(task.id, reason, RunState.IDLE))
            continue
        runnable.append((task, run))
    return runnable, skipped


async def run_once(
    config: Config,
    paths: ResolvedPaths,
    options: OnceOptions,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] | None = None,
    on_planned: Callable[[int], None] | None = None,
    on_finished: Callable[[Finished], None] | None = None,
) -> OnceReport:
    """Run every runnable task once and return what happened; with ``options.commit``
    or ``options.push``, commit (and push) the results too (``runner.gitops.workspace``).

    Raises :class:`GitOpsError` before running anything when the repository cannot
    take a commit at all; a failed commit or push after the runs is ``git_error``.
    """
    env = os.environ if environ is None else environ
    clock = clock or clock_from(env)
    git: tuple[GitWorkspace, Prepared] | None = None
    if options.commit or options.push:
        # gitpython loads only when asked for.
        from runner.gitops.workspace import GitWorkspace  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

        workspace = GitWorkspace.open(
            Path.cwd(), results=paths.results, state=paths.state, environ=env
        )
        git = (workspace, workspace.prepare(options.push, push=options.push is not None))
    report = await _run_tasks(
        config, paths, options, env=env, clock=clock,
        on_planned=on_planned, on_finished=on_finished,
    )  # fmt: skip
    if git is not None:
        try:
            report.published = git[0].publish(git[1], commit_message(report))
        except GitOpsError as exc:
            report.git_error = str(exc)
    return report


def commit_message(report: OnceReport) -> str:
    """The commit message for a run's results: a summary line, then one line a run."""
    done = sum(1 for f in report.finished if f.run.state is RunState.COMPLETED)
    lines = [f"omni: {len(report.finished)} run(s), {done} completed, {len(report.failed)} failed"]
    if report.finished:
        lines.append("")
        lines += [f"- {f.task.id}: {f.run.state}" for f in report.finished]
    return "\n".join(lines) + "\n"


async def _run_tasks(
    config: Config,
    paths: ResolvedPaths,
    options: OnceOptions,
    *,
    env: Mapping[str, str],
    clock: Callable[[], datetime],
    on_planned: Callable[[int], None] | None,
    on_finished: Callable[[Finished], None] | None,
) -> OnceReport:
    loaded = load_tasks(paths.tasks, config.limits.task_file_bytes)
    report = OnceReport(problems=loaded.problems)
    if options.task_id is not None and all(t.id != options.task_id for t in loaded.tasks):
        report.skipped.append(Skipped(options.task_id, "no valid task has this id"))
        return report
    with StateLock(paths.state, "run --once"), Store(paths.state, clock=clock) as store:
        report.resumed = store.resume(paths.results)
        rule = DueRule(
            now=clock(),
            results=paths.results,
            timezone=config.schedule.timezone,
            misfire_grace=config.schedule.misfire_grace,
        )
        configured = {BUILTIN, *config.mcp_servers}
        runnable, report.skipped = plan(
            loaded.tasks, store, options, rule,
            waits_for=lambda task: repair_waits(task, config, configured)
            or waits_for_model(task.spec, config, configured),
        )  # fmt: skip
        runnable.sort(key=lambda item: item[1].seq)  # waiting runs resume in their order
        if on_planned is not None:
            on_planned(len(runnable))
        if not runnable:
            return report
        async with dispatching(
            config, paths, store, environ=env, clock=clock, on_finished=on_finished
        ) as machinery:
            machinery.faults.watching()  # probes every check_interval while not normal
            report.finished = await _resuming(machinery.dispatcher, runnable, machinery.faults)
    return report


async def _resuming(
    dispatcher: Dispatcher, runnable: list[tuple[Task, RunRecord]], faults: FaultHandling
) -> list[Finished]:
    """Run everything; then, while a cloud answers again, the runs that went waiting
    (brainstem) once more, in their original order."""
    finished = await dispatcher.run_all(runnable)
    while faults.mode() is not Mode.BRAINSTEM:
        waiting = [(i, f) for i, f in enumerate(finished) if f.run.state is RunState.WAITING]
        if not waiting:
            break
        again = await dispatcher.run_all([(f.task, f.run) for _, f in waiting])
        for (i, _), done in zip(waiting, again, strict=True):
            finished[i] = done
        if all(f.run.state is RunState.WAITING for f in again):
            break
    return finished
