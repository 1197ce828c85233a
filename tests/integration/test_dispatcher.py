"""The dispatcher on the built-in executor: what a shutdown at the worst moment leaves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from runner.core.clock import utc_now
from runner.core.redaction import Redactor
from runner.defs.config import BUILTIN, Config
from runner.defs.tasks import Task, TaskSpec, task_hash
from runner.dispatch.dispatcher import Dispatcher
from runner.reach.executors import ExecutorPool
from runner.state.resultcheck import ResultCheck
from runner.state.store import Store

if TYPE_CHECKING:
    from runner.reach.tools import ToolOutcome

pytestmark = pytest.mark.integration


class CancelledOnAnswer(ExecutorPool):
    """The real pool; the caller's task is cancelled the moment the executor answers,
    as a shutdown landing between the answer and the record would."""

    async def call_tool(self, *args: Any, **kwargs: Any) -> ToolOutcome:
        outcome = await super().call_tool(*args, **kwargs)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return outcome


async def test_a_shutdown_after_the_executor_answered_still_records_the_run(
    tmp_path: Path,
) -> None:
    spec = TaskSpec(id="hello", executor=BUILTIN, tool="echo", args={"text": "hi"})
    task = Task("hello", tmp_path / "hello.yaml", spec, task_hash(spec, "hello"))
    results = tmp_path / "results"
    async with CancelledOnAnswer({}, workspace=tmp_path) as pool:
        with Store(tmp_path / "state.db") as store:
            run = store.create_run(task.id, task.task_hash, max_attempts=3)
            dispatcher = Dispatcher(
                store=store,
                pool=pool,
                config=Config(),
                results_root=results,
                redactor=Redactor([]),
            )
            with pytest.raises(asyncio.CancelledError):
                await asyncio.create_task(dispatcher.run(task, run))
            row = store.get_run(run.run_id)
    assert row is not None
    assert (row.state, row.attempt) == ("completed", 1)
    assert row.result_path == str(results / "hello" / f"{run.run_id}.json")
    written = ResultCheck(utc_now()).read(Path(row.result_path), results)
    assert written is not None
    assert (written.state, written.output, written.attempt) == ("completed", "hi", 1)
