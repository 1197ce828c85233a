"""Service mode (``omni run``): sources and schedules feed the dispatcher until a signal.

The pieces, each given its dependencies:

* the sources (:mod:`runner.planning.sources`: the watched tasks folder, an optional git source)
  report task files that changed or went away;
* :class:`~runner.app.intake.Intake` loads them into the :class:`TaskRegistry` (one task
  an id, one id a file): one-off tasks run once per content, scheduled ones get an
  APScheduler job (:mod:`runner.planning.schedule`) and, when a slot was missed or a run
  left unfinished, an immediate catch-up fire;
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
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from runner.app.adoption import Adopter
from runner.app.assembly import dispatching
from runner.app.intake import Intake, Planner
from runner.app.logs import LogFormat, configure_logging, log_run_change
from runner.app.runs import Runs
from runner.app.signals import STOP_SIGNALS
from runner.core.clock import utc_now
from runner.core.errors import OmniError, ServiceError
from runner.defs.environment import ResolvedPaths, redactor_for
from runner.dispatch.faults import FaultHandling, Resumer
from runner.planning.gitsource import GitSource
from runner.planning.schedule import Firing, TaskScheduler
from runner.planning.sources import FolderSource, TaskRegistry
from runner.state.backend import fleet, location, open_store, runner_lock
from runner.state.recovery import resume
from runner.state.resultcheck import ResultCheck

if TYPE_CHECKING:
    from datetime import datetime

    from runner.app.signals import EarlySignals
    from runner.defs.config import Config
    from runner.state.interface import StateStore
    from runner.state.records import ResumeReport, RunRecord

log = logging.getLogger(__name__)

Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


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
