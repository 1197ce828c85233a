"""The service's intake: task files that changed or went away -> the registry of tasks
-> one-off runs and schedule jobs.

:class:`Intake` loads changed files into the :class:`~runner.planning.sources.TaskRegistry`
(one task an id, one id a file). One-off tasks go through :func:`runner.planning.plan.plan`,
the rule ``run --once`` uses (once per content); scheduled ones get an APScheduler job
(:mod:`runner.planning.schedule`) and, when a slot was missed or a run left unfinished, an
immediate catch-up fire. A batch (the start over the whole tasks folder, a git pull) is
taken in as one: one store transaction for its task rows, one store read for its
catch-ups, one look of APScheduler at its jobs. :class:`Planner` is due-ness at the
clock's now.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import TYPE_CHECKING

from runner.app.passes import due_rule, waits_for
from runner.core.errors import InvalidTaskFile, OmniError, TaskFileError
from runner.core.states import RunState
from runner.defs.tasks import Task, load_task_file
from runner.planning.dueness import Due, DueRule, decide, history_for, history_from_runs
from runner.planning.jobs import Plan, plan_of, save_plans
from runner.planning.plan import Selection, close_orphans, orphans_of, plan
from runner.planning.schedule import LIVE_GRACE
from runner.planning.sources import ChangeKind, SourceChange

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from pathlib import Path

    from runner.app.runs import Runs
    from runner.defs.config import Config
    from runner.planning.schedule import TaskScheduler
    from runner.planning.sources import TaskRegistry
    from runner.state.interface import StateStore
    from runner.state.records import RunRecord

log = logging.getLogger("runner.app.service")  # the service's lines, one logger name

#: A batch of more changed task files than this logs one summary line, not a line a task.
QUIET_BATCH = 50


class Planner:
    """Due-ness for the service: :func:`runner.planning.plan.plan` (the ``run --once`` rule) at
    the clock's now; the result files count too where ``results`` is given."""

    def __init__(
        self, config: Config, store: StateStore, results: Path, clock: Callable[[], datetime]
    ) -> None:
        self._config = config
        self._store = store
        self._results = results
        self._clock = clock
        self.waits = waits_for(config)
        """Why a task cannot run at all yet (a prompt task with no model, a repair task
        without its executor), or None."""

    def rule(self, *, with_results: bool, live: bool = False) -> DueRule:
        """The rule now. A live fire is on time by construction: ``misfire_grace``
        bounds catch-ups after downtime, not a fire a few milliseconds late."""
        rule = due_rule(self._config, self._results if with_results else None, self._clock())
        if live:
            rule = dataclasses.replace(rule, misfire_grace=max(rule.misfire_grace, LIVE_GRACE))
        return rule

    def plan(
        self, tasks: list[Task], rule: DueRule, *, quiet: bool = False
    ) -> list[tuple[Task, RunRecord]]:
        """Plan ``tasks`` (creating or reusing their runs); log why the others wait."""
        runnable, skipped = plan(tasks, self._store, Selection(), rule, waits_for=self.waits)
        for item in skipped:
            done = quiet or item.state is RunState.COMPLETED
            log.log(
                logging.DEBUG if done else logging.INFO, "task %s: %s", item.task_id, item.reason
            )
        return runnable

    def due_now(self, task: Task) -> list[tuple[Task, RunRecord]]:
        """A live fire's plan: from the store alone, which holds every run the service
        made (a scheduled task's result files grow with every slot)."""
        return self.plan([task], self.rule(with_results=False, live=True), quiet=True)

    def catch_ups(self, tasks: list[Task]) -> set[str]:
        """The ids of the newly (re)scheduled ``tasks`` due now (a slot missed within the
        grace, or the latest slot's run left unfinished): the store read once for all of
        them, a task's result files only when the store does not show its latest slot
        served (:func:`runner.planning.dueness.history_for`)."""
        if not tasks:
            return set()
        rule = self.rule(with_results=True)
        known = self._store.task_runs(tasks)
        return {
            task.id
            for task in tasks
            if decide(
                task, history_for(task, history_from_runs(known.get(task.id), task), rule), rule
            ).verdict
            is Due.RUN
        }


class Intake:  # pylint: disable=too-many-instance-attributes  # the wiring of one intake
    """Source changes -> registered tasks -> one-off runs and schedule jobs."""

    def __init__(
        self,
        *,
        config: Config,
        store: StateStore,
        registry: TaskRegistry,
        scheduler: TaskScheduler,
        planner: Planner,
        runs: Runs,
    ) -> None:
        self._store = store
        self._registry = registry
        self._scheduler = scheduler
        self._planner = planner
        self._runs = runs
        self._max_bytes = config.limits.task_file_bytes
        self._timezone = config.schedule.timezone
        self._closed = False

    def close(self) -> None:
        """Take no more changes (shutdown)."""
        self._closed = True

    def apply(self, changes: list[SourceChange]) -> None:
        """Removals first (a rename is a removal and an addition), then new content: the
        one-offs planned together, the scheduled tasks recorded and checked for catch-ups
        together (one store transaction and one read for a batch, however large)."""
        if self._closed:
            return
        version = self._scheduler.version
        gone: dict[str, str] = {}
        for change in changes:
            if change.kind is ChangeKind.REMOVED:
                task_id = self._registry.id_at(change.path)
                if task_id is not None:
                    self._forget(task_id, f"{change.path} is gone")
                    gone[task_id] = f"task file {change.path} is gone"
        loud = sum(change.kind is ChangeKind.CHANGED for change in changes) <= QUIET_BATCH
        fresh = [
            task
            for change in changes
            if change.kind is ChangeKind.CHANGED
            and (task := self._load(change, loud=loud)) is not None
        ]
        one_offs = [task for task in fresh if task.spec.schedule is None]
        scheduled = [task for task in fresh if task.spec.schedule is not None]
        self._take_in(one_offs, self._start_one_offs)
        self._take_in(scheduled, functools.partial(self._schedule, loud=loud))
        if not loud:
            log.info(
                "tasks: %d loaded or changed (%d one-off, %d scheduled; %d jobs in all)",
                len(fresh),
                len(one_offs),
                len(scheduled),
                len(self._scheduler.plans()),
            )
        if self._scheduler.version != version:
            save_plans(self._store, self._scheduler.plans())
        self._close_runs_of_gone(gone)

    def _take_in(self, tasks: list[Task], how: Callable[[list[Task]], None]) -> None:
        """``how(tasks)``; when the store fails them (e.g. the database busy), they are
        forgotten, to be taken in again when their files change."""
        if not tasks:
            return
        try:
            how(tasks)
        except OmniError as exc:
            for task in tasks:
                log.error(
                    "task %s: not taken in: %s (edit or touch the file to retry)", task.id, exc
                )
                self._registry.drop(task.id)

    def _close_runs_of_gone(self, gone: dict[str, str]) -> None:
        """Close ``skipped`` the unfinished runs of tasks whose file went away (and did
        not come back in the same batch, as a rename would); a run in flight finishes."""
        for task_id, reason in gone.items():
            if self._registry.get(task_id) is not None:
                continue
            try:
                for run in close_orphans(orphans_of(task_id, reason, self._store), self._store):
                    log.info("run %s %s: closed skipped (%s)", task_id, run.run_id, reason)
            except OmniError as exc:  # e.g. the database busy: the next start closes them
                log.error("task %s: its unfinished runs stay open: %s", task_id, exc)

    def _load(self, change: SourceChange, *, loud: bool) -> Task | None:
        """The task in a changed file if it is new or its content changed, else None."""
        try:
            task = load_task_file(change.path, change.root, self._max_bytes)
        except InvalidTaskFile as exc:
            kept = self._registry.id_at(change.path)
            note = f" (task {kept!r} keeps its last valid version)" if kept else ""
            for problem in exc.problems:
                log.error("invalid task file: %s%s", problem.render(), note)
            return None
        earlier_id = self._registry.id_at(task.path)
        if earlier_id is not None and earlier_id != task.id:
            self._forget(earlier_id, f"{task.path} now says id {task.id!r}")
        owner = self._registry.get(task.id)
        if owner is not None and owner.path != task.path:
            if owner.path.exists():
                problem = TaskFileError(
                    str(task.path), 1, "id", f"id {task.id!r} is already used by {owner.path}"
                )
                log.error("invalid task file: %s", problem.render())
                return None
            self._forget(task.id, f"moved from {owner.path} to {task.path}")
            owner = None
        self._registry.put(task)
        if owner is not None and owner.task_hash == task.task_hash:
            return None  # touched, re-saved or re-formatted: same content
        what = f"schedule {task.spec.schedule!r}" if task.spec.schedule else "one-off"
        verb = "changed" if owner is not None else "loaded"
        log.log(_level(loud), "task %s: %s from %s (%s)", task.id, verb, task.path, what)
        return task

    def _forget(self, task_id: str, why: str) -> None:
        self._registry.drop(task_id)
        unscheduled = "; unscheduled" if self._scheduler.remove(task_id) else ""
        log.info("task %s: removed (%s)%s", task_id, why, unscheduled)

    def _start_one_offs(self, tasks: list[Task]) -> None:
        for task in tasks:
            if self._scheduler.remove(task.id):
                log.info("task %s: unscheduled (no schedule any more)", task.id)
        for planned, run in self._planner.plan(tasks, self._planner.rule(with_results=True)):
            self._runs.start(planned, run)

    def _schedule(self, tasks: list[Task], *, loud: bool) -> None:
        """Record the tasks, then (re)schedule those whose plan changed, firing at once
        the ones a catch-up is due for."""
        self._store.upsert_tasks(tasks)
        changed: list[tuple[Task, Plan]] = []
        for task in tasks:
            plan_ = plan_of(task, self._timezone)
            waits = self._planner.waits(task)
            if plan_ is None or waits is not None:
                if self._scheduler.remove(task.id):
                    log.info("task %s: unscheduled (%s)", task.id, waits or "enabled: false")
                elif waits is not None:
                    log.info("task %s: not scheduled: %s", task.id, waits)
            elif not self._scheduler.has(plan_):
                changed.append((task, plan_))
        due = self._planner.catch_ups([task for task, _ in changed])
        with self._scheduler.batch():
            for task, plan_ in changed:
                self._scheduler.set(plan_)
                if task.id in due:
                    self._scheduler.fire_now(task.id)
                fires = (
                    "now (catching up)" if task.id in due else self._scheduler.next_fire(task.id)
                )
                log.log(
                    _level(loud),
                    "task %s: scheduled %r (%s); fires %s",
                    task.id,
                    plan_.schedule,
                    plan_.timezone,
                    fires,
                )


def _level(loud: bool) -> int:
    """A task's own intake lines: INFO in a small batch, DEBUG in a large one (start-up
    over 10,000 files), which gets one INFO summary instead."""
    return logging.INFO if loud else logging.DEBUG
