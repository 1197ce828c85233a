"""Bench: reading the result files a CI run starts from, every one checked (issue 13).

Writes ``--tasks`` tasks with ``--files`` result files each (real ``write_result``
output: a scheduled task's completed runs, a few cents each) into a temporary folder,
then times, median of 5:

- ``history_us_per_task``: ``history_for`` for each task with nothing known from a
  state database (due-ness from files, as a CI machine decides: the runtime path, which
  reads a task's files newest first and stops at the first that settles its verdict);
- ``spend_ms``: ``spent_today`` over the whole folder (today's spend from files);
- ``check_us_per_file``: every file of every task read through ``ResultCheck``, divided
  by the files (what one checked read costs).

Prints one JSON object.

    uv run python bench/results.py [--tasks 2000] [--files 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runner.core.clock import iso
from runner.core.ids import new_run_id
from runner.core.redaction import Redactor
from runner.core.states import RunState
from runner.defs.tasks import Task, TaskSpec
from runner.planning.dueness import DueRule, History, history_for
from runner.state.resultcheck import ResultCheck
from runner.state.results import RunResult, write_result
from runner.state.spend import spent_today

NOW = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)


def populate(root: Path, tasks: int, files: int) -> None:
    """``files`` hourly runs of each of ``tasks`` tasks, the newest at 09:00 today."""
    redactor = Redactor([])
    for i in range(tasks):
        for k in range(files):
            at = NOW.replace(minute=0) - timedelta(hours=k + 1)
            result = RunResult(
                task_id=f"bench/task-{i}",
                run_id=new_run_id(at),
                task_hash="0123456789abcdef",
                slot=iso(at),
                state=RunState.COMPLETED,
                attempt=1,
                executor="builtin",
                tool="echo",
                started_at=iso(at),
                finished_at=iso(at + timedelta(seconds=1)),
                duration_s=1.0,
                output=f"output of run {k} of task {i}",
                usage={"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.01},
            )
            write_result(root, result, redactor)


def median_s(work: object, rounds: int = 5) -> float:
    """The median wall time of calling ``work`` ``rounds`` times."""
    assert callable(work)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Measure and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--files", type=int, default=5)
    args = parser.parse_args()
    check = ResultCheck(NOW)
    spec = TaskSpec(tool="echo", schedule="every 1h")
    with tempfile.TemporaryDirectory(prefix="omni-bench-results-") as tmp:
        root = Path(tmp)
        populate(root, args.tasks, args.files)
        rule = DueRule(now=NOW, results=root)
        tasks = [
            Task(f"bench/task-{i}", Path(f"tasks/bench/task-{i}.yaml"), spec, "0123456789abcdef")
            for i in range(args.tasks)
        ]
        history = median_s(lambda: [history_for(task, History(), rule) for task in tasks])
        checked = median_s(lambda: [list(check.scan(root / task.id, root)) for task in tasks])
        spend = median_s(lambda: spent_today(None, root, NOW, check.max_bytes))
    per_task = history / args.tasks
    print(
        json.dumps(
            {
                "date": datetime.now(UTC).date().isoformat(),
                "machine": f"{platform.system()}, Python {platform.python_version()}",
                "tasks": args.tasks,
                "files_per_task": args.files,
                "history_us_per_task": round(per_task * 1e6, 1),
                "check_us_per_file": round(checked * 1e6 / (args.tasks * args.files), 1),
                "spend_ms": round(spend * 1e3, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
