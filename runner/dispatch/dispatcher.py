"""Claim a run, ask the router, execute it on its executor, hand the outcome to the
recorder (``runner.dispatch.recording``).

A failed attempt with attempts left is retried after a backoff (``runner.dispatch.
backoff``: exponential with jitter, capped, at least the far end's ``Retry-After``); the
result file keeps every earlier attempt's error (``attempts``), so the first cause is
never lost behind a later one. A cancellation (shutdown) after the executor answered
still records the outcome before it takes effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from runner.core.clock import utc_now
from runner.core.errors import (
    AgentError,
    CloudsDownError,
    IllegalTransitionError,
    OmniError,
    StaleRunError,
    StoreError,
    TaskTimeoutError,
    ToolReportedError,
)
from runner.core.states import IN_FLIGHT, Mode, RunState
from runner.core.text import one_line, truncate
from runner.defs.routing import Route, choose_executor, choose_model, model_list_names
from runner.dispatch.agent import Agent, AgentPool, Transcript
from runner.dispatch.backoff import Backoff
from runner.dispatch.budget import SpendGuard
from runner.dispatch.isolation import Isolated
from runner.dispatch.outcome import Finished, Outcome, Retry
from runner.dispatch.recording import Recorder, spent_fields

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from datetime import datetime
    from pathlib import Path

    from runner.core.redaction import Redactor
    from runner.defs.config import Config
    from runner.defs.tasks import Task
    from runner.dispatch.isolation import RunSpaces
    from runner.state.interface import StateStore
    from runner.state.records import RunRecord

log = logging.getLogger(__name__)

#: Loop passes a finished run gives the next run's request before it records (measured:
#: 3 reach the pipe on the stdio transport; one more as margin).
_PASSES_BEFORE_RECORDING = 4


class ToolCaller(AgentPool, Protocol):
    """What the dispatcher needs of an executor pool: the agent's needs, plus names."""

    def names(self) -> list[str]:
        """Configured executor names."""


class Dispatcher:  # pylint: disable=too-many-instance-attributes  # its collaborators
    """Runs claimed runs on executors with bounded concurrency, retries and timeouts."""

    def __init__(
        self,
        *,
        store: StateStore,
        pool: ToolCaller,
        config: Config,
        results_root: Path,
        redactor: Redactor,
        clock: Callable[[], datetime] = utc_now,
        on_finished: Callable[[Finished], None] | None = None,
        agent: Agent | None = None,
        mode_of: Callable[[], Mode] | None = None,
        backoff: Backoff | None = None,
        spaces: RunSpaces | None = None,
    ) -> None:
        """``spaces``: gives model-driven runs their own workspace and executors; without
        it they run on ``pool`` like tool tasks (tests of the loop alone)."""
        self._store = store
        self._backoff = backoff or Backoff.of(config.dispatch)
        self._agent = agent
        self._spaces = spaces
        self._pool = pool
        self._config = config
        self._redactor = redactor
        self._clock = clock
        self._on_finished = on_finished
        self._limit = asyncio.Semaphore(config.dispatch.concurrency)
        self._recorder = Recorder(
            store=store,
            results_root=results_root,
            redactor=redactor,
            clock=clock,
            mode_of=mode_of,
            result_file_bytes=config.limits.result_file_bytes,
        )

    async def run_all(self, items: Iterable[tuple[Task, RunRecord]]) -> list[Finished]:
        """Run every item, ``dispatch.concurrency`` at a time; order of results = input.

        One run's failure, of any kind, ends that run ``failed`` and the others go on;
        only a state database that cannot be used (:class:`StoreError`) ends the pass,
        raised as itself (not in an ``ExceptionGroup``).
        """
        try:
            async with asyncio.TaskGroup() as group:
                jobs = [group.create_task(self._limited(task, run)) for task, run in items]
        except* StoreError as broken:
            raise broken.exceptions[0] from None
        return [job.result() for job in jobs]

    async def _limited(self, task: Task, run: RunRecord) -> Finished:
        try:
            finished = await self.run(task, run)
        except StaleRunError as exc:  # another process moved the row: the run is its now
            finished = self._moved_elsewhere(task, run, exc)
        except IllegalTransitionError as exc:  # this run, not the database
            finished = self._crashed(task, run, exc)
        except StoreError:
            raise
        except Exception as exc:  # pylint: disable=broad-exception-caught  # one run, not the pass
            finished = self._crashed(task, run, exc)
        if self._on_finished is not None:
            self._on_finished(finished)
        return finished

    def _moved_elsewhere(self, task: Task, run: RunRecord, exc: StaleRunError) -> Finished:
        """A run whose row another process moved meanwhile (a lease that ran out on a
        shared ledger, then another instance's claim): the row is left as that process
        made it; failing it here would end someone else's attempt."""
        reason = self._redactor.text(one_line(f"{type(exc).__name__}: {exc}"))
        log.warning("run %s %s: %s; left to the process that moved it", task.id, run.run_id, reason)
        return Finished(task, self._store.get_run(run.run_id) or run, None, reason)

    def _crashed(self, task: Task, run: RunRecord, exc: Exception) -> Finished:
        """A run that raised what no rule expects (a bug): end it ``failed`` with the
        error in one line, unless it already ended, so that no run is left in flight
        and the pass goes on."""
        reason = self._redactor.text(one_line(f"{type(exc).__name__}: {exc}"))
        log.error("run %s %s: %s", task.id, run.run_id, reason)
        log.debug("run %s %s: unexpected error", task.id, run.run_id, exc_info=exc)
        current = self._store.get_run(run.run_id) or run
        if current.state in {RunState.IDLE, RunState.WAITING}:
            current = self._store.claim(current) or current
        if current.state in IN_FLIGHT:
            current = self._store.transition(current, RunState.FAILED, error=reason, detail=reason)
        return Finished(task, current, None, reason)

    async def run(self, task: Task, run: RunRecord) -> Finished:
        """Take one run through claim -> execute -> record, retrying while attempts last.

        A concurrency slot is held from the claim until the executor answers; recording
        happens after the slot is freed, so the next run's call overlaps this run's
        bookkeeping.
        """
        earlier: list[dict[str, Any]] = []
        while True:
            async with self._limit:
                route = choose_executor(task.spec, self._config.router, self._pool.names())
                claimed = self._claim(task, run, route)
                if claimed is None:
                    current = self._store.get_run(run.run_id) or run
                    return Finished(task, current, None, "claimed elsewhere")
                attempt = await self._attempt(task, claimed, route)
            if isinstance(attempt, Retry):
                earlier.append({"attempt": attempt.attempt, "error": attempt.error})
                wait = self._backoff.delay(attempt.attempt, attempt.retry_after)
                run = self._store.transition(
                    attempt.failed,
                    RunState.IDLE,
                    detail=f"retry {claimed.attempt + 1} in {wait:.1f} s",
                )
                await asyncio.sleep(wait)  # idle meanwhile: a shutdown leaves it for the next start
                continue
            if earlier:
                attempt = dataclasses.replace(attempt, earlier=tuple(earlier))
            try:
                await _after_pending_sends()
            except asyncio.CancelledError:
                self._recorder.record(attempt)  # the executor answered: its outcome is final
                raise
            return self._recorder.record(attempt)

    def _claim(self, task: Task, run: RunRecord, route: Route) -> RunRecord | None:
        """Claim the run, straight on to executing when its executor is configured."""
        if not route.configured:
            return self._store.claim(run)
        tool = task.spec.tool or ""
        return self._store.claim(
            run,
            executor=route.executor,
            tool=tool,
            detail=f"{route.executor}.{tool} ({route.reason})",
        )

    async def _attempt(self, task: Task, run: RunRecord, route: Route) -> Outcome | Retry:
        """One attempt of a claimed run (executing on its route's executor, unless that
        is not configured). Every error is classified here, by its ``retryable``: a
        returned :class:`Retry` has been recorded ``failed`` and the run has attempts
        left."""
        if not route.configured:
            configured = ", ".join(sorted(self._pool.names()))
            error = (
                f"executor {route.executor!r} ({route.reason}) is not configured; "
                f"configured: {configured}"
            )
            return Outcome(task, run, RunState.FAILED, error=error, executor=route.executor)
        started = time.perf_counter()
        transcript = Transcript() if task.is_prompt else None
        isolated = Isolated() if task.is_model_driven and self._spaces is not None else None
        try:
            output = await self._isolated(task, run, route.executor, transcript, isolated)
        except CloudsDownError as exc:
            return Outcome(
                task,
                run,
                RunState.WAITING,
                started=started,
                transcript=transcript,
                note=str(exc),
                executor=route.executor,
                isolated=isolated,
            )
        except OmniError as exc:
            error = self._redactor.text(str(exc))
            wait = getattr(exc, "retry_after", None)
            if exc.retryable and run.attempt < run.max_attempts and self._backoff.helps(wait):
                failed = self._store.transition(
                    run,
                    RunState.FAILED,
                    error=error,
                    detail="attempt failed",
                    **spent_fields(run, transcript),
                )
                self._recorder.count_spend(transcript)
                return Retry(failed, run.attempt, error, wait)
            return Outcome(
                task,
                run,
                RunState.FAILED,
                error=error,
                started=started,
                transcript=transcript,
                isolated=isolated,
            )
        except asyncio.CancelledError:
            # Shutdown: hand the run back so the next start resumes it (unless another
            # instance took it over meanwhile: its lease ran out).
            with contextlib.suppress(StaleRunError):
                self._store.transition(run, RunState.IDLE, detail="interrupted by shutdown")
            raise
        return Outcome(
            task,
            run,
            RunState.COMPLETED,
            output=output,
            started=started,
            transcript=transcript,
            isolated=isolated,
        )

    async def _isolated(
        self,
        task: Task,
        run: RunRecord,
        executor: str,
        transcript: Transcript | None,
        isolated: Isolated | None,
    ) -> Any:
        """The call, in the run's own workspace and pool when it is model-driven."""
        if isolated is None or self._spaces is None:
            return await self._call(task, run, executor, transcript, self._pool)
        async with self._spaces.open(task, executor, isolated, self._pool) as pool:
            return await self._call(task, run, executor, transcript, pool)

    async def _call(
        self,
        task: Task,
        run: RunRecord,
        executor: str,
        transcript: Transcript | None,
        pool: AgentPool,
    ) -> Any:
        spec = task.spec
        meta = {"run_id": run.run_id, "task_id": task.id, "attempt": run.attempt}
        if transcript is not None:
            return await self._prompt(task, executor, meta, transcript, pool)
        try:
            async with asyncio.timeout(spec.timeout):
                outcome = await pool.call_tool(
                    executor, spec.tool or "", spec.args, timeout=spec.timeout, meta=meta
                )
        except TimeoutError:
            raise TaskTimeoutError(f"timed out after {spec.timeout:g} s (task timeout)") from None
        if outcome.is_error:
            raise ToolReportedError(
                executor, f"reported an error: {self._cap(outcome.text)}", spec.tool
            )
        if outcome.structured is not None:
            return self._cap_data(outcome.structured)
        return self._cap(outcome.text)

    async def _prompt(
        self,
        task: Task,
        executor: str,
        meta: dict[str, Any],
        transcript: Transcript,
        pool: AgentPool,
    ) -> str:
        """A prompt task: the agent loop (or the executor's agent tool), under the timeout."""
        if self._agent is None:
            raise AgentError("prompt tasks need a model client; none was given")
        config = self._config
        choice = choose_model(task.spec, config.router, model_list_names(config))
        spend = SpendGuard(config.router.budget, self._recorder.spend.today(self._clock()))
        try:
            async with asyncio.timeout(task.spec.timeout):
                return await self._agent.run(
                    task,
                    executor,
                    choice=choice,
                    spend=spend,
                    transcript=transcript,
                    meta=meta,
                    pool=pool,
                )
        except TimeoutError:
            raise TaskTimeoutError(
                f"timed out after {task.spec.timeout:g} s (task timeout) in turn "
                f"{transcript.turns + 1}"
            ) from None

    def _cap(self, text: str) -> str:
        return truncate(text, self._config.dispatch.output_limit_bytes)

    def _cap_data(self, data: Any) -> Any:
        limit = self._config.dispatch.output_limit_bytes
        text = json.dumps(data, ensure_ascii=False)
        return data if len(text.encode()) <= limit else truncate(text, limit)


async def _after_pending_sends() -> None:
    """Yield a few loop passes, so the run that took the freed slot sends its request
    before this run is recorded.

    Its claim runs on the next pass; the MCP SDK hands the request to the transport's
    writer task through an anyio memory stream (a checkpoint, then a wake-up), which
    writes it on the third. Recording (result files, row) after that lets the executor
    work on the next call meanwhile; recording first would add the whole bookkeeping
    cost to every serial task (bench/README.md, dispatch).
    """
    for _ in range(_PASSES_BEFORE_RECORDING):
        await asyncio.sleep(0)
