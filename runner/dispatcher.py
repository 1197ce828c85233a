"""Claim a run, ask the router, execute it on its executor, record the outcome.

Order of writes for every finished run: result file first, then the row. A run whose
result file exists therefore counts as done even if the process died before the row
(see ``Store.resume``); a cancellation (shutdown) after the executor answered still
writes both before it takes effect.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from runner.config import Config
from runner.errors import ExecutorError, ExecutorTimeoutError, OmniError, ToolError
from runner.results import Redactor, RunResult, iso, truncate, utc_now, write_result
from runner.router import choose_executor
from runner.states import Mode, RunState
from runner.store import RunRecord, Store
from runner.tasks import Task


class ToolCaller(Protocol):
    """What the dispatcher needs of an executor pool."""

    def names(self) -> list[str]:
        """Configured executor names."""

    async def call_tool(
        self,
        executor: str,
        tool: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the MCP read timeout, not ours
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Call one tool; returns an outcome with ``text``, ``structured``, ``is_error``."""


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


class _Failure(Exception):
    """An attempt that failed; ``retry`` says whether another attempt could help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class Dispatcher:
    """Runs claimed runs on executors with bounded concurrency, retries and timeouts."""

    def __init__(
        self,
        *,
        store: Store,
        pool: ToolCaller,
        config: Config,
        results_root: Path,
        redactor: Redactor,
        clock: Callable[[], datetime] = utc_now,
        on_finished: Callable[[Finished], None] | None = None,
    ) -> None:
        self._store = store
        self._pool = pool
        self._config = config
        self._results = results_root
        self._redactor = redactor
        self._clock = clock
        self._on_finished = on_finished
        self._limit = asyncio.Semaphore(config.dispatch.concurrency)

    async def run_all(self, items: Iterable[tuple[Task, RunRecord]]) -> list[Finished]:
        """Run every item, ``dispatch.concurrency`` at a time; order of results = input."""
        async with asyncio.TaskGroup() as group:
            jobs = [group.create_task(self._limited(task, run)) for task, run in items]
        return [job.result() for job in jobs]

    async def _limited(self, task: Task, run: RunRecord) -> Finished:
        finished = await self.run(task, run)
        if self._on_finished is not None:
            self._on_finished(finished)
        return finished

    async def run(self, task: Task, run: RunRecord) -> Finished:
        """Take one run through claim -> execute -> record, retrying while attempts last.

        A concurrency slot is held from the claim until the executor answers; recording
        happens after the slot is freed, so the next run's call overlaps this run's
        bookkeeping (the result files are written on a worker thread).
        """
        while True:
            async with self._limit:
                claimed = self._store.claim(run.run_id)
                if claimed is None:
                    current = self._store.get_run(run.run_id) or run
                    return Finished(task, current, None, "claimed elsewhere")
                attempt = await self._attempt(task, claimed)
            if isinstance(attempt, _Failure):
                run = self._store.transition(
                    claimed.run_id, RunState.IDLE, detail=f"retry {claimed.attempt + 1}"
                )
                continue
            return await self._record(attempt)

    async def _attempt(self, task: Task, run: RunRecord) -> _Outcome | _Failure:
        """One attempt; a returned :class:`_Failure` has been recorded and is retryable."""
        route = choose_executor(task.spec, self._config.router, self._pool.names())
        tool = task.spec.tool or ""
        if not route.configured:
            configured = ", ".join(sorted(self._pool.names()))
            error = (
                f"executor {route.executor!r} ({route.reason}) is not configured; "
                f"configured: {configured}"
            )
            return _Outcome(task, run, RunState.FAILED, error=error, executor=route.executor)
        run = self._store.transition(
            run.run_id, RunState.EXECUTING, executor=route.executor, tool=tool,
            detail=f"{route.executor}.{tool} ({route.reason})",
        )  # fmt: skip
        started = time.perf_counter()
        try:
            output = await self._call(task, run, route.executor)
        except _Failure as failure:
            if failure.retry and run.attempt < run.max_attempts:
                self._store.transition(
                    run.run_id, RunState.FAILED, error=str(failure), detail="attempt failed"
                )
                return failure
            return _Outcome(task, run, RunState.FAILED, error=str(failure), started=started)
        except asyncio.CancelledError:
            # Shutdown: hand the run back so the next start resumes it.
            self._store.transition(run.run_id, RunState.IDLE, detail="interrupted by shutdown")
            raise
        return _Outcome(task, run, RunState.COMPLETED, output=output, started=started)

    async def _record(self, outcome: _Outcome) -> Finished:
        """Write the result files (worker thread), then the row.

        The outcome is final once the executor answered, so a cancellation while the
        files are written still waits for them and records the row before giving way.
        """
        result = self._result(outcome)
        writing = asyncio.ensure_future(
            asyncio.to_thread(write_result, self._results, result, self._redactor)
        )
        try:
            path = await asyncio.shield(writing)
        except asyncio.CancelledError:
            self._row(outcome, result, await writing)
            raise
        return self._row(outcome, result, path)

    async def _call(self, task: Task, run: RunRecord, executor: str) -> Any:
        spec = task.spec
        meta = {"run_id": run.run_id, "task_id": task.id, "attempt": run.attempt}
        try:
            async with asyncio.timeout(spec.timeout):
                outcome = await self._pool.call_tool(
                    executor, spec.tool or "", spec.args, timeout=spec.timeout, meta=meta
                )
        except TimeoutError:
            raise _Failure(
                f"timed out after {spec.timeout:g} s (task timeout)", retry=True
            ) from None
        except ToolError as exc:
            raise _Failure(str(exc), retry=False) from None
        except ExecutorTimeoutError as exc:
            raise _Failure(str(exc), retry=True) from None
        except ExecutorError as exc:
            raise _Failure(str(exc), retry=True) from None
        except OmniError as exc:
            raise _Failure(str(exc), retry=False) from None
        if outcome.is_error:
            raise _Failure(
                f"executor {executor!r}, tool {spec.tool!r} reported an error: "
                f"{self._cap(outcome.text)}",
                retry=True,
            )
        if outcome.structured is not None:
            return self._cap_data(outcome.structured)
        return self._cap(outcome.text)

    def _cap(self, text: str) -> str:
        return truncate(text, self._config.dispatch.output_limit_bytes)

    def _cap_data(self, data: Any) -> Any:
        limit = self._config.dispatch.output_limit_bytes
        text = json.dumps(data, ensure_ascii=False)
        return data if len(text.encode()) <= limit else truncate(text, limit)

    def _result(self, outcome: _Outcome) -> RunResult:
        now = self._clock()
        run, started = outcome.run, outcome.started
        return RunResult(
            task_id=outcome.task.id,
            run_id=run.run_id,
            task_hash=run.task_hash,
            slot=run.slot,
            state=outcome.state,
            attempt=run.attempt,
            executor=outcome.executor or run.executor,
            tool=outcome.task.spec.tool,
            mode=Mode.NORMAL,
            started_at=run.started_at or iso(now),
            finished_at=iso(now),
            duration_s=round(time.perf_counter() - started, 4) if started is not None else 0.0,
            output=outcome.output,
            error=None if outcome.error is None else self._redactor.text(outcome.error),
        )

    def _row(self, outcome: _Outcome, result: RunResult, path: Path) -> Finished:
        run = outcome.run
        if run.state is RunState.DISPATCHING and outcome.state is RunState.COMPLETED:
            run = self._store.transition(run.run_id, RunState.EXECUTING)
        final = self._store.transition(
            run.run_id,
            outcome.state,
            error=result.error,
            result_path=str(path),
            executor=result.executor,
            detail=result.error or "ok",
        )
        return Finished(outcome.task, final, path)
