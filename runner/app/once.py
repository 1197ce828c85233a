"""``omni run --once``: load, resume leftovers, pick what is runnable, dispatch, report.

Kept apart from ``cli.py`` (which only parses and prints) and from ``service.py``
(the long-running mode) so both the CLI and tests call one function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runner.app.assembly import dispatching
from runner.core.errors import GitOpsError, TaskFileError
from runner.core.states import Mode, RunState
from runner.defs.config import BUILTIN, Config, ResolvedPaths, redactor_for
from runner.defs.routing import waits_for_model
from runner.defs.tasks import Task, load_tasks
from runner.dispatch.repairs import repair_waits
from runner.planning.dueness import (
    DueRule,
    clock_from,
)
from runner.planning.plan import Selection, Skipped, plan
from runner.state.backend import fleet, open_store, runner_lock
from runner.state.recovery import resume
from runner.state.resultcheck import ResultCheck

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime

    from runner.core.redaction import Redactor
    from runner.dispatch.dispatcher import Dispatcher, Finished
    from runner.dispatch.faults import FaultHandling
    from runner.gitops.workspace import GitWorkspace, Prepared, Published
    from runner.state.records import ResumeReport, RunRecord


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
class OnceOptions(Selection):
    """What the user asked ``run --once`` for: which tasks, and what to do with the results."""

    commit: bool = False
    """Commit the results on the current branch (``--commit``)."""
    push: str | None = None
    """Commit the results on this branch and push it to ``origin`` (``--push BRANCH``)."""


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
    redactor = redactor_for(config, env)
    git: tuple[GitWorkspace, Prepared] | None = None
    if options.commit or options.push:
        # gitpython loads only when asked for.
        from runner.gitops.workspace import GitWorkspace  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

        workspace = GitWorkspace.open(
            Path.cwd(),
            results=paths.results,
            state=paths.state,
            environ=env,
            check=ResultCheck(clock(), config.limits.result_file_bytes),
        )
        git = (workspace, workspace.prepare(options.push, push=options.push is not None))
    report = await _run_tasks(
        config,
        paths,
        options,
        env=env,
        redactor=redactor,
        clock=clock,
        on_planned=on_planned,
        on_finished=on_finished,
    )
    if git is not None:
        try:
            report.published = git[0].publish(git[1], redactor.text(commit_message(report)))
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
    redactor: Redactor,
    clock: Callable[[], datetime],
    on_planned: Callable[[int], None] | None,
    on_finished: Callable[[Finished], None] | None,
) -> OnceReport:
    loaded = load_tasks(paths.tasks, config.limits.task_file_bytes)
    report = OnceReport(problems=loaded.problems)
    if options.task_id is not None and all(t.id != options.task_id for t in loaded.tasks):
        report.skipped.append(Skipped(options.task_id, "no valid task has this id"))
        return report
    with (
        runner_lock(paths, "run --once"),
        open_store(
            paths,
            clock=clock,
            redactor=redactor,
            role="run --once",
            lease_seconds=config.state.lease_seconds,
        ) as store,
    ):
        rule = DueRule(
            now=clock(),
            results=paths.results,
            timezone=config.schedule.timezone,
            misfire_grace=config.schedule.misfire_grace,
            result_bytes=config.limits.result_file_bytes,
        )
        report.resumed = resume(store, paths.results, rule.check())
        configured = {BUILTIN, *config.mcp_servers}
        runnable, report.skipped = plan(
            loaded.tasks,
            store,
            options,
            rule,
            waits_for=lambda task: (
                repair_waits(task, config, configured)
                or waits_for_model(task.spec, config, configured)
            ),
        )
        runnable.sort(key=lambda item: item[1].seq)  # waiting runs resume in their order
        if on_planned is not None:
            on_planned(len(runnable))
        if not runnable:
            return report
        async with (
            fleet(  # a ledger's leases stay ours while we run
                store,
                paths.results,
                lambda: ResultCheck(clock(), config.limits.result_file_bytes),
            ),
            dispatching(
                config,
                paths,
                store,
                environ=env,
                redactor=redactor,
                clock=clock,
                on_finished=on_finished,
            ) as machinery,
        ):
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
