"""``omni run --once``: load, resume leftovers, pick what is runnable, dispatch, report.

Kept apart from ``cli.py`` (which only parses and prints) and from ``service.py``
(the long-running mode) so both the CLI and tests call one function.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runner.app.passes import due_rule, load_pass, waits_for
from runner.core.errors import GitOpsError, TaskFileError
from runner.core.states import Mode, RunState
from runner.defs.environment import redactor_for
from runner.planning.dueness import (
    clock_from,
)
from runner.planning.plan import Selection, Skipped, close_orphans, orphans, plan
from runner.state.backend import fleet, open_store, runner_lock
from runner.state.recovery import resume
from runner.state.resultcheck import ResultCheck

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime

    from runner.app.publish import Publication, PublishReport
    from runner.core.redaction import Redactor
    from runner.defs.config import Config
    from runner.defs.environment import ResolvedPaths
    from runner.defs.tasks import Task
    from runner.dispatch.dispatcher import Dispatcher
    from runner.dispatch.faults import FaultHandling
    from runner.dispatch.outcome import Finished
    from runner.state.records import ResumeReport, RunRecord


@dataclass(slots=True, repr=False)
class OnceReport:
    """Everything ``run --once`` did, for the summary table and ``--json``."""

    problems: list[TaskFileError] = field(default_factory=list)
    resumed: ResumeReport | None = None
    finished: list[Finished] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    published: PublishReport | None = None
    """What ``--commit`` / ``--push`` did (``omni publish``'s steps), when asked."""
    git_error: str | None = None
    """Why ``--commit`` / ``--push`` failed (the result files are on disk)."""
    closed: list[RunRecord] = field(default_factory=list)
    """Unfinished runs of tasks whose file is gone, closed ``skipped`` by this pass."""
    ignored: list[Path] = field(default_factory=list)
    """Files in the tasks folder that look meant as task files but are not read."""

    def __repr__(self) -> str:
        # Counts, not contents: asyncio formats the finished main task (its result
        # included) when ``asyncio.run`` puts SIGINT's handler back, and a repr of every
        # run and task of a 2,000-task pass took 0.14 s there.
        return (
            f"OnceReport(problems={len(self.problems)}, finished={len(self.finished)},"
            f" skipped={len(self.skipped)}, closed={len(self.closed)},"
            f" ignored={len(self.ignored)}, exit_code={self.exit_code})"
        )

    @property
    def failed(self) -> list[Finished]:
        """Runs that ended failed."""
        return [f for f in self.finished if f.run.state is RunState.FAILED]

    @property
    def exit_code(self) -> int:
        """0 when all went well or had to wait; 1 when a run failed, a file was invalid,
        or the results could not be committed or pushed."""
        refused = self.published is not None and self.published.exit_code != 0
        return 1 if self.failed or self.problems or self.git_error or refused else 0


@dataclass(frozen=True, slots=True)
class OnceOptions(Selection):
    """What the user asked ``run --once`` for: which tasks, and what to do with the results."""

    commit: bool = False
    """Commit the results on the current branch (``--commit``)."""
    push: str | None = None
    """Commit the results on this branch and push it to ``origin`` (``--push BRANCH``)."""
    results_from: str | None = None
    """Before running, copy the result files this ref holds and the disk lacks
    (``--results-from origin/omni/results``: the memory of what ran, without a push)."""


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
    publication: Publication | None = None
    if options.commit or options.push or options.results_from:
        # gitpython loads only when asked for.
        from runner.app.publish import Publication, PublishOptions  # noqa: PLC0415 # pylint: disable=import-outside-toplevel
        from runner.gitops.workspace import GitWorkspace  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

        if options.results_from:
            GitWorkspace.open(
                Path.cwd(),
                results=paths.results,
                environ=env,
                check=ResultCheck(clock(), config.limits.result_file_bytes),
            ).restore(options.results_from)
        if options.commit or options.push:
            wanted = PublishOptions(branch=options.push, push=options.push is not None)
            publication = Publication(config, paths, wanted, environ=env, now=clock())
            publication.prepare()
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
    if publication is not None:
        try:
            report.published = publication.finish(redactor.text(commit_message(report)))
        except GitOpsError as exc:
            report.git_error = str(exc)
        else:
            report.git_error = "; ".join(report.published.errors) or None
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
    loaded = load_pass(config, paths, options.task_id, remember=True)
    report = OnceReport(problems=loaded.problems, ignored=loaded.ignored)
    if options.task_id is not None and all(t.id != options.task_id for t in loaded.tasks):
        return report  # its file is invalid: the problems say why
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
        rule = due_rule(config, paths.results, clock())
        report.resumed = resume(store, paths.results, rule.check())
        report.closed = close_orphans(orphans(loaded.tasks, store), store)
        runnable, report.skipped = plan(
            loaded.tasks,
            store,
            options,
            rule,
            waits_for=waits_for(config),
        )
        runnable.sort(key=lambda item: item[1].seq)  # waiting runs resume in their order
        if not runnable:
            if on_planned is not None:
                on_planned(0)
            return report
        # The executors' machinery (the MCP SDK) loads only when something runs.
        from runner.app.assembly import dispatching  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

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
            faults = machinery.faults
            # A mode left by an earlier process is probed before any run, not trusted.
            await faults.monitor.checked()
            if faults.mode() is Mode.BRAINSTEM:
                runnable = _still_waiting(runnable, faults.monitor.record().why, report)
            if on_planned is not None:
                on_planned(len(runnable))
            faults.watching()  # probes every check_interval while not normal
            report.finished = await _resuming(machinery.dispatcher, runnable, faults)
    return report


def _still_waiting(
    runnable: list[tuple[Task, RunRecord]], why: str, report: OnceReport
) -> list[tuple[Task, RunRecord]]:
    """In brainstem mode (the probe found no model answering), the runs already waiting
    stay waiting, untouched; the rest run (tool tasks go on, new prompt runs wait)."""
    keep = []
    for task, run in runnable:
        if run.state is RunState.WAITING:
            note = f"waits: brainstem mode ({why}); resumes when a model answers"
            report.skipped.append(Skipped(task.id, note, RunState.WAITING))
        else:
            keep.append((task, run))
    return keep


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
