"""Service mode (``omni run``): sources and schedules feed the dispatcher until a signal.

The pieces, each given its dependencies:

* the sources (:mod:`runner.planning.sources`: the watched tasks folder, an optional git source)
  report task files that changed or went away;
* :class:`Intake` loads them into the :class:`TaskRegistry` (one task an id, one id a
  file). One-off tasks go through :func:`runner.planning.plan.plan`, the rule ``run --once``
  uses (once per content); scheduled ones get an APScheduler job
  (:mod:`runner.planning.schedule`) and, when a slot was missed or a run left unfinished, an
  immediate catch-up fire;
* :class:`Firing` is what a job does: serve the due slot through :class:`Runs`;
* :class:`~runner.app.runs.Runs` runs each run on the dispatcher, one at a time per task,
  and at shutdown gives them ``service.shutdown_grace`` to finish before cancelling the
  rest back to idle (the dispatcher records that).

Background work (the sources, the fault monitor, the resumer of waiting runs) is a
list of coroutines given the service's stopping event; if one fails, the service stops
with exit code 1. Every run state change is one log line (:mod:`runner.app.logs`;
``--log-format json`` for machines).

A stop signal is honoured at any moment: the entry point notes SIGTERM and SIGINT from
the process's first moment (:mod:`runner.app.signals`), :func:`serve` takes them over,
and a stop that comes before or during start-up ends the service as soon as what was
started can be closed again (exit 0).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from runner.app.adoption import Adopter
from runner.app.assembly import dispatching
from runner.app.logs import LogFormat, configure_logging, log_run_change
from runner.app.passes import due_rule, waits_for
from runner.app.runs import Runs
from runner.app.signals import STOP_SIGNALS
from runner.core.clock import utc_now
from runner.core.errors import InvalidTaskFile, OmniError, ServiceError, TaskFileError
from runner.core.states import RunState
from runner.defs.environment import ResolvedPaths, redactor_for
from runner.defs.tasks import Task, load_task_file
from runner.dispatch.faults import FaultHandling, Resumer
from runner.planning.dueness import Due, DueRule, decide, history_for, history_from_runs
from runner.planning.gitsource import GitSource
from runner.planning.jobs import Plan, plan_of, save_plans
from runner.planning.plan import Selection, close_orphans, orphans_of, plan
from runner.planning.schedule import LIVE_GRACE, Firing, TaskScheduler
from runner.planning.sources import ChangeKind, FolderSource, SourceChange, TaskRegistry
from runner.state.backend import fleet, location, open_store, runner_lock
from runner.state.recovery import resume
from runner.state.resultcheck import ResultCheck

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from runner.app.signals import EarlySignals
    from runner.defs.config import Config
    from runner.state.interface import StateStore
    from runner.state.records import ResumeReport, RunRecord

log = logging.getLogger(__name__)

#: A batch of more changed task files than this logs one summary line, not a line a task.
QUIET_BATCH = 50

Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


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


class Service:  # pylint: disable=too-many-instance-attributes  # the service's wiring
    """``omni run``: watch, schedule and dispatch until :meth:`stop`."""

    def __init__(
        self,
        config: Config,
        paths: ResolvedPaths,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._config = config
        self._paths = paths
        self._env = dict(os.environ if environ is None else environ)
        self._clock = clock
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._exit = 0
        self.ready = asyncio.Event()
        """Set once the tasks folder is watched and its files are loaded."""

    def stop(self, reason: str = "asked to stop") -> None:
        """Begin a clean shutdown; a second call cancels running tasks at once."""
        if self._stop.is_set():
            log.warning("%s again: cancelling running tasks now", reason)
            self._hurry.set()
            return
        log.info("%s: shutting down", reason)
        self._stop.set()

    async def run(self) -> int:
        """Serve until :meth:`stop`; 0 after a clean shutdown, 1 if a part failed. A stop
        before start-up starts nothing; one during start-up shuts down what started."""
        if self._stop.is_set():
            log.info("stopped before start-up")
            return self._exit
        tasks = self._paths.tasks
        if tasks.exists() and not tasks.is_dir():
            raise ServiceError(f"{tasks}: service mode watches a folder; this is a file")
        tasks.mkdir(parents=True, exist_ok=True)
        config, env = self._config, self._env
        redactor = redactor_for(config, env)
        with (
            runner_lock(self._paths, "service"),
            open_store(
                self._paths,
                clock=self._clock,
                on_transition=log_run_change,
                redactor=redactor,
                role="service",
                lease_seconds=config.state.lease_seconds,
            ) as store,
        ):
            check = self._check()
            _report_resume(resume(store, self._paths.results, check))
            async with dispatching(
                config, self._paths, store, environ=env, redactor=redactor, clock=self._clock
            ) as machinery:
                runs = Runs(machinery.dispatcher, store)
                await self._serve(store, runs, machinery.faults)
        return self._exit

    async def _serve(self, store: StateStore, runs: Runs, faults: FaultHandling) -> None:
        config = self._config
        registry = TaskRegistry()
        planner = Planner(config, store, self._paths.results, self._clock)
        firing = Firing(
            lookup=registry.get,
            due=planner.due_now,
            start=runs.start,
            timezone=config.schedule.timezone,
        )
        scheduler = TaskScheduler(fire=firing.fire, misfire_grace=config.schedule.misfire_grace)
        intake = Intake(
            config=config,
            store=store,
            registry=registry,
            scheduler=scheduler,
            planner=planner,
            runs=runs,
        )
        stopping = asyncio.Event()
        scheduler.start()

        def resume_waiting(run: RunRecord) -> bool:
            task = registry.get(run.task_id)
            if runs.running(run.run_id) or task is None or task.task_hash != run.task_hash:
                return False
            runs.start(task, run)
            return True

        resumer = Resumer(
            store=store,
            monitor=faults.monitor,
            start=resume_waiting,
            interval=config.fault_handler.check_interval,
        )
        background: list[asyncio.Task[None]] = []
        for name, work in [
            *self._sources(store, intake),
            ("fault monitor", faults.monitor.watch),
            ("waiting runs", resumer.run),
        ]:
            job = asyncio.create_task(work(stopping), name=name)
            job.add_done_callback(self._background_done)
            background.append(job)
        adopter = Adopter(store=store, tasks=registry, runs=runs, waits=planner.waits)
        # The fleet's heartbeats go on until the last run is drained.
        async with fleet(store, self._paths.results, self._check, on_work=adopter.adopt):
            try:
                await self._stop.wait()
            finally:
                adopter.stopped = True
                intake.close()
                firing.stopped = True
                scheduler.pause()
                stopping.set()
                grace = self._config.service.shutdown_grace
                log.info(
                    "intake stopped; runs not yet started stay idle, running ones get %g s", grace
                )
                await asyncio.gather(*background, return_exceptions=True)
                cancelled = await runs.drain(grace, self._hurry)
                scheduler.shutdown()
                log.info("stopped; %d unfinished run(s) left idle for the next start", cancelled)

    def _sources(self, store: StateStore, intake: Intake) -> list[tuple[str, Background]]:
        service = self._config.service
        folder = FolderSource(
            self._paths.tasks,
            on_changes=intake.apply,
            settle_ms=service.settle_ms,
            rescan_interval=service.rescan_interval,
            on_started=self._started,
        )
        sources: list[tuple[str, Background]] = [("tasks folder", folder.run)]
        if self._config.sources.git is not None:
            git = GitSource(
                self._config.sources.git,
                clone_dir=self._paths.state.parent / "git-source",
                store=store,
                on_changes=intake.apply,
                environ=self._env,
            )
            sources.append(("git source", git.run))
        return sources

    def _check(self) -> ResultCheck:
        """Result files are checked as of now."""
        return ResultCheck(self._clock(), self._config.limits.result_file_bytes)

    def _started(self) -> None:
        log.info("ready: watching %s (state %s)", self._paths.tasks, location(self._paths))
        self.ready.set()

    def _background_done(self, job: asyncio.Task[None]) -> None:
        if job.cancelled() or job.exception() is None:
            return
        log.error("%s failed; stopping the service", job.get_name(), exc_info=job.exception())
        self._exit = 1
        self._stop.set()


def _report_resume(report: ResumeReport) -> None:
    if report.to_idle or report.to_failed or report.to_completed:
        log.info(
            "resumed after an interrupted run: %d completed (result file found), "
            "%d to retry, %d failed (no attempts left)",
            len(report.to_completed),
            len(report.to_idle),
            len(report.to_failed),
        )


def serve(
    config: Config,
    paths: ResolvedPaths,
    *,
    log_format: LogFormat = LogFormat.TEXT,
    environ: Mapping[str, str] | None = None,
    early: EarlySignals | None = None,
    verbose: bool = False,
) -> int:
    """``omni run``: log setup, signal handlers, the service; returns the exit code.

    ``early`` holds the stop signals noted since the process started; they are taken
    over here (one that already arrived stops the service at once), and noted again
    once the service is done, so a late one cannot kill the process on its way out.
    """
    env = dict(os.environ if environ is None else environ)
    configure_logging(log_format, redactor_for(config, env), verbose=verbose)
    return asyncio.run(_until_signal(Service(config, paths, environ=env), early))


async def _until_signal(service: Service, early: EarlySignals | None) -> int:
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, service.stop, f"received {sig.name}")
    if early is not None and early.received:
        service.stop(f"received {early.received[0].name} while starting")
    try:
        return await service.run()
    except OmniError as exc:
        log.error("%s", exc)
        return 1
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        if early is not None:
            early.install()
