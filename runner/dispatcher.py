"""Claim a run, ask the router, execute it on its executor, record the outcome.

Order of writes for every finished run: result file first, then the row. A run whose
result file exists therefore counted as done even if the process died before the row
(see ``Store.resume``). Between the executor's answer and the row there is no ``await``,
so a cancellation (shutdown) cannot split the two writes.
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
        async with self._limit:
            finished = await self.run(task, run)
        if self._on_finished is not None:
            self._on_finished(finished)
        return finished

    async def run(self, task: Task, run: RunRecord) -> Finished:
        """Take one run through claim -> execute -> record, retrying while attempts last."""
        while True:
            claimed = self._store.claim(run.run_id)
            if claimed is None:
                current = self._store.get_run(run.run_id) or run
                return Finished(task, current, None, "claimed elsewhere")
            finished = await self._attempt(task, claimed)
            if finished is not None:
                return finished
            run = self._store.transition(
                claimed.run_id, RunState.IDLE, detail=f"retry {claimed.attempt + 1}"
            )

    async def _attempt(self, task: Task, run: RunRecord) -> Finished | None:
        """One attempt; ``None`` means it failed and should be retried."""
        route = choose_executor(task.spec, self._config.router, self._pool.names())
        tool = task.spec.tool or ""
        if not route.configured:
            configured = ", ".join(sorted(self._pool.names()))
            error = (
                f"executor {route.executor!r} ({route.reason}) is not configured; "
                f"configured: {configured}"
            )
            return self._finish(task, run, RunState.FAILED, error=error, executor=route.executor)
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
                return None
            return self._finish(task, run, RunState.FAILED, error=str(failure), started=started)
        except asyncio.CancelledError:
            # Shutdown: hand the run back so the next start resumes it.
            self._store.transition(run.run_id, RunState.IDLE, detail="interrupted by shutdown")
            raise
        return self._finish(task, run, RunState.COMPLETED, output=output, started=started)

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

    def _finish(
        self,
        task: Task,
        run: RunRecord,
        state: RunState,
        *,
        output: Any = None,
        error: str | None = None,
        executor: str | None = None,
        started: float | None = None,
    ) -> Finished:
        """Write the result file, then the row; no ``await`` in here (see module doc)."""
        now = self._clock()
        if error is not None:
            error = self._redactor.text(error)
        result = RunResult(
            task_id=task.id,
            run_id=run.run_id,
            task_hash=run.task_hash,
            slot=run.slot,
            state=state,
            attempt=run.attempt,
            executor=executor or run.executor,
            tool=task.spec.tool,
            mode=Mode.NORMAL,
            started_at=run.started_at or iso(now),
            finished_at=iso(now),
            duration_s=round(time.perf_counter() - started, 4) if started is not None else 0.0,
            output=output,
            error=error,
        )
        path = write_result(self._results, result, self._redactor)
        if run.state is RunState.DISPATCHING and state is RunState.COMPLETED:
            run = self._store.transition(run.run_id, RunState.EXECUTING)
        final = self._store.transition(
            run.run_id,
            state,
            error=error,
            result_path=str(path),
            executor=result.executor,
            detail=error or "ok",
        )
        return Finished(task, final, path)
