"""Claim a run, ask the router, execute it on its executor, record the outcome.

Order of writes for every finished run: result file first, then the row. A run whose
result file exists therefore counts as done even if the process died before the row
(see ``Store.resume``); a cancellation (shutdown) after the executor answered still
writes both before it takes effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from runner.core.clock import iso, utc_now
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
from runner.dispatch.budget import SpendGuard
from runner.reach.llm import GatewayOutcome, Via
from runner.state.results import RunResult, write_result
from runner.state.spend import DailySpend

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from datetime import datetime
    from pathlib import Path

    from runner.core.redaction import Redactor
    from runner.defs.config import Config
    from runner.defs.tasks import Task
    from runner.state.backend import StateStore
    from runner.state.records import RunRecord

log = logging.getLogger(__name__)

#: Loop passes a finished run gives the next run's request before it records (measured:
#: 3 reach the pipe on the stdio transport; one more as margin).
_PASSES_BEFORE_RECORDING = 4


class ToolCaller(AgentPool, Protocol):
    """What the dispatcher needs of an executor pool: the agent's needs, plus names."""

    def names(self) -> list[str]:
        """Configured executor names."""


@dataclass(frozen=True, slots=True)
class Finished:
    """A run the dispatcher is done with: its final row and result file (if any)."""

    task: Task
    run: RunRecord
    result_path: Path | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How an attempt ended, before it is recorded."""

    task: Task
    run: RunRecord
    state: RunState
    output: Any = None
    error: str | None = None
    executor: str | None = None
    started: float | None = None
    transcript: Transcript | None = None
    """A prompt run's record (model, tier, usage, turns, tool calls); None for tool runs."""
    note: str | None = None
    """Why a run waits (brainstem mode)."""


@dataclass(frozen=True, slots=True)
class _Retry:
    """An attempt that failed and was recorded ``failed``; the run has attempts left."""

    failed: RunRecord


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
    ) -> None:
        self._store = store
        self._agent = agent
        self._mode_of = mode_of
        """The system mode now (``runner.dispatch.faults``), for result files; None: normal."""
        self._pool = pool
        self._config = config
        self._results = results_root
        self._redactor = redactor
        self._clock = clock
        self._on_finished = on_finished
        self._limit = asyncio.Semaphore(config.dispatch.concurrency)
        self._spend = DailySpend(store, results_root, config.limits.result_file_bytes)

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
        except (StaleRunError, IllegalTransitionError) as exc:  # this run, not the database
            finished = self._crashed(task, run, exc)
        except StoreError:
            raise
        except Exception as exc:  # pylint: disable=broad-exception-caught  # one run, not the pass
            finished = self._crashed(task, run, exc)
        if self._on_finished is not None:
            self._on_finished(finished)
        return finished

    def _crashed(self, task: Task, run: RunRecord, exc: Exception) -> Finished:
        """A run that raised what no rule expects (a bug, or its row moved by another
        process): end it ``failed`` with the error in one line, unless it already ended,
        so that no run is left in flight and the pass goes on."""
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
        while True:
            async with self._limit:
                route = choose_executor(task.spec, self._config.router, self._pool.names())
                claimed = self._claim(task, run, route)
                if claimed is None:
                    current = self._store.get_run(run.run_id) or run
                    return Finished(task, current, None, "claimed elsewhere")
                attempt = await self._attempt(task, claimed, route)
            if isinstance(attempt, _Retry):
                run = self._store.transition(
                    attempt.failed, RunState.IDLE, detail=f"retry {claimed.attempt + 1}"
                )
                continue
            try:
                await _after_pending_sends()
            except asyncio.CancelledError:
                self._record(attempt)  # the executor answered: its outcome is final
                raise
            return self._record(attempt)

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

    async def _attempt(self, task: Task, run: RunRecord, route: Route) -> _Outcome | _Retry:
        """One attempt of a claimed run (executing on its route's executor, unless that
        is not configured). Every error is classified here, by its ``retryable``: a
        returned :class:`_Retry` has been recorded ``failed`` and the run has attempts
        left."""
        if not route.configured:
            configured = ", ".join(sorted(self._pool.names()))
            error = (
                f"executor {route.executor!r} ({route.reason}) is not configured; "
                f"configured: {configured}"
            )
            return _Outcome(task, run, RunState.FAILED, error=error, executor=route.executor)
        started = time.perf_counter()
        transcript = Transcript() if task.is_prompt else None
        try:
            output = await self._call(task, run, route.executor, transcript)
        except CloudsDownError as exc:
            return _Outcome(
                task,
                run,
                RunState.WAITING,
                started=started,
                transcript=transcript,
                note=str(exc),
                executor=route.executor,
            )
        except OmniError as exc:
            error = self._redactor.text(str(exc))
            if exc.retryable and run.attempt < run.max_attempts:
                failed = self._store.transition(
                    run,
                    RunState.FAILED,
                    error=error,
                    detail="attempt failed",
                    **_spent(run, transcript),
                )
                self._count_spend(transcript)
                return _Retry(failed)
            return _Outcome(
                task, run, RunState.FAILED, error=error, started=started, transcript=transcript
            )
        except asyncio.CancelledError:
            # Shutdown: hand the run back so the next start resumes it (unless another
            # instance took it over meanwhile: its lease ran out).
            with contextlib.suppress(StaleRunError):
                self._store.transition(run, RunState.IDLE, detail="interrupted by shutdown")
            raise
        return _Outcome(
            task, run, RunState.COMPLETED, output=output, started=started, transcript=transcript
        )

    def _record(self, outcome: _Outcome) -> Finished:
        """Write the result files, then the row (no await: nothing interrupts it).

        When the files cannot be written (a name too long, a full disk, a read-only
        folder) the run ends ``failed`` with the reason in one line, and neither file
        is left behind."""
        result = self._result(outcome)
        try:
            path = write_result(self._results, result, self._redactor)
        except OSError as exc:
            error = f"result file not written: {exc.strerror or type(exc).__name__}"
            log.error("run %s %s: %s", outcome.task.id, outcome.run.run_id, error)
            failed = _Outcome(
                outcome.task,
                outcome.run,
                RunState.FAILED,
                error=error,
                executor=outcome.executor,
                transcript=outcome.transcript,
            )
            self._count_spend(outcome.transcript)
            return self._row(failed, self._result(failed), None)
        self._count_spend(outcome.transcript)
        return self._row(outcome, result, path)

    def _count_spend(self, transcript: Transcript | None) -> None:
        """Add an attempt's model cost to today's running total."""
        if transcript is not None:
            self._spend.add(transcript.cost_usd, self._clock())

    async def _call(
        self, task: Task, run: RunRecord, executor: str, transcript: Transcript | None = None
    ) -> Any:
        spec = task.spec
        meta = {"run_id": run.run_id, "task_id": task.id, "attempt": run.attempt}
        if transcript is not None:
            return await self._prompt(task, executor, meta, transcript)
        try:
            async with asyncio.timeout(spec.timeout):
                outcome = await self._pool.call_tool(
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
        self, task: Task, executor: str, meta: dict[str, Any], transcript: Transcript
    ) -> str:
        """A prompt task: the agent loop (or the executor's agent tool), under the timeout."""
        if self._agent is None:
            raise AgentError("prompt tasks need a model client; none was given")
        config = self._config
        choice = choose_model(task.spec, config.router, model_list_names(config))
        spend = SpendGuard(config.router.budget, self._spend.today(self._clock()))
        try:
            async with asyncio.timeout(task.spec.timeout):
                return await self._agent.run(
                    task, executor, choice=choice, spend=spend, transcript=transcript, meta=meta
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

    def _result(self, outcome: _Outcome) -> RunResult:
        now = self._clock()
        run, started = outcome.run, outcome.started
        prompt: dict[str, Any] = {}
        mode = self._mode_of() if self._mode_of is not None else Mode.NORMAL
        if (transcript := outcome.transcript) is not None:
            # Extra result fields beside DESIGN's (the model allows them): `agent`, `note`.
            prompt = {
                "model": transcript.model,
                "tier": transcript.tier,
                "usage": transcript.usage(),
                "agent": transcript.as_dict(),
            }
            mode = _prompt_mode(outcome, transcript, mode)
        if outcome.note is not None:
            prompt["note"] = outcome.note
        return RunResult(
            task_id=outcome.task.id,
            run_id=run.run_id,
            task_hash=run.task_hash,
            slot=run.slot,
            state=outcome.state,
            attempt=run.attempt,
            executor=outcome.executor or run.executor,
            tool=outcome.task.spec.tool or (transcript.agent_tool if transcript else None),
            mode=mode,
            started_at=run.started_at or iso(now),
            finished_at=iso(now),
            duration_s=round(time.perf_counter() - started, 4) if started is not None else 0.0,
            output=outcome.output,
            error=None if outcome.error is None else self._redactor.text(outcome.error),
            **prompt,
        )

    def _row(self, outcome: _Outcome, result: RunResult, path: Path | None) -> Finished:
        run = outcome.run
        final = self._store.transition(
            run,
            outcome.state,
            error=result.error,
            result_path=None if path is None else str(path),
            executor=result.executor,
            detail=result.error or outcome.note or _fallbacks(outcome.transcript) or "ok",
            **_model_fields(result, run),
            **({"note": outcome.note} if outcome.note is not None else {}),
        )
        return Finished(outcome.task, final, path)


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


def _prompt_mode(outcome: _Outcome, transcript: Transcript, now: Mode) -> Mode:
    """The mode a prompt run's model calls were made in: brainstem while it waits,
    degraded when its last answer came from the direct API, normal from the gateway,
    else (no model call: an agent tool) the mode now."""
    if outcome.state is RunState.WAITING:
        return Mode.BRAINSTEM
    answered = [c for c in transcript.model_calls if c.outcome is GatewayOutcome.OK]
    if not answered:
        return now
    return Mode.DEGRADED if answered[-1].via is Via.DIRECT else Mode.NORMAL


def _spent(run: RunRecord, transcript: Transcript | None) -> dict[str, Any]:
    """``cost_usd`` for the row: earlier attempts' spend plus this attempt's, so the daily
    cap counts a retried run's every attempt (the result file has the last one's)."""
    if transcript is None or transcript.cost_usd is None:
        return {}
    return {"cost_usd": (run.cost_usd or 0.0) + transcript.cost_usd}


def _model_fields(result: RunResult, run: RunRecord) -> dict[str, Any]:
    """The row's model columns for a prompt run (none for a tool run)."""
    if result.model is None and result.usage.cost_usd is None:
        return {}
    cost = result.usage.cost_usd
    if cost is not None:
        cost += run.cost_usd or 0.0
    return {"model": result.model, "tier": result.tier, "cost_usd": cost}


def _fallbacks(transcript: Transcript | None) -> str:
    """The fallback steps a prompt run took, for its event row ("" when none)."""
    if transcript is None:
        return ""
    failed = [f"{c.model} ({c.tier}) {c.outcome}" for c in transcript.model_calls if c.detail]
    if not failed:
        return ""
    return f"ok; fell back past {', '.join(failed)}; answered by {transcript.model}"
