"""Dispatch overhead: tool tasks through the runner vs a bare ``mcp`` SDK loop.

Same run, same kind of warm server (each side has its own connection), serial and at
concurrency 8, for the built-in executor's ``echo`` and for ``mcp-server-git``'s
``git_status``. The runner side does everything a real run does: claim, route, call,
result file (.json + .md), rows and events in SQLite (WAL).

    uv run python bench/dispatch.py [--tasks 1000] [--git-tasks 300] [--rounds 10]

Prints one JSON object. Bars (DESIGN §6, issue 3): overhead <= 0.5 ms a task over the
bare loop, serial and concurrent; against mcp-server-git, runner throughput >= 0.8x.

``file_create_us`` is what creating one result file costs on the results' file system,
at the start and after each server's runs. On an ext4 without a journal (this
project's CI machines) it rises from ~35 us to ~500 us for a few minutes after many
files were deleted (the kernel skips recently deleted inodes one by one): run the bench
on a machine that has not just run the test suite, or the figures measure the disk, not
the runner. ``git status`` creates and deletes ``index.lock`` on every call, so the
mcp-server-git runs raise it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bare import Timer, bare_loop

from runner.core.files import atomic_write
from runner.core.redaction import Redactor
from runner.defs.config import Config, McpServer
from runner.defs.tasks import Task, TaskSpec, task_hash
from runner.dispatch.dispatcher import Dispatcher
from runner.reach.executors import ExecutorPool, builtin_server
from runner.state.store import Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def make_tasks(first: int, end: int, executor: str, tool: str, args: dict[str, Any]) -> list[Task]:
    """In-memory tasks ``t<first>`` .. ``t<end - 1>`` (the loader is benched by
    bench/validate.py)."""
    tasks = []
    for i in range(first, end):
        spec = TaskSpec(id=f"t{i}", executor=executor, tool=tool, args={**args})
        tasks.append(Task(f"t{i}", Path(f"t{i}.yaml"), spec, task_hash(spec, f"t{i}")))
    return tasks


@asynccontextmanager
async def runner_loop(
    server: McpServer, tool: str, args: dict[str, Any], conc: int, work: Path
) -> AsyncIterator[Timer]:
    """Tool tasks (each a new task id) through the dispatcher on a warm pool."""
    config = Config.model_validate({"dispatch": {"concurrency": conc}})
    made = 0
    async with ExecutorPool({"bench": server}, workspace=work) as pool:
        for _ in range(20):  # warm up: the server is started and its tools cached
            await pool.call_tool("bench", tool, args)
        with Store(work / f"state-{tool}-{conc}.db") as store:
            dispatcher = Dispatcher(
                store=store,
                pool=pool,
                config=config,
                results_root=work / f"results-{tool}-{conc}",
                redactor=Redactor(["sk-bench-secret"]),
            )

            async def run(n: int) -> float:
                nonlocal made
                tasks = make_tasks(made, made + n, "bench", tool, args)
                made += n
                items = [(t, store.create_run(t.id, t.task_hash, max_attempts=1)) for t in tasks]
                start = time.perf_counter()
                finished = await dispatcher.run_all(items)
                elapsed = time.perf_counter() - start
                if failed := [f for f in finished if f.run.state != "completed"]:
                    raise SystemExit(f"{len(failed)} runs failed, e.g. {failed[0].run.error}")
                return elapsed

            yield run


def file_create_us(folder: Path, count: int = 200) -> float:
    """Median microseconds to create one small file (temp file + rename) in ``folder``."""
    folder.mkdir()
    times = []
    for i in range(count):
        start = time.perf_counter()
        atomic_write(folder / f"{i}.json", "{}\n")
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e6, 1)


async def compare(
    name: str, server: McpServer, tool: str, args: dict[str, Any], n: int, work: Path, rounds: int
) -> dict[str, Any]:
    """Serial and concurrency-8 figures for one server, runner vs bare, in ms a task.

    Both sides stay warm and take turns, ``n / rounds`` calls (or tasks) a turn; the
    medians of the turns are compared, so a noisy second on a small machine hits one
    turn of each side, not a whole side.
    """
    out: dict[str, Any] = {"server": name, "tool": tool, "tasks": n, "rounds": rounds}
    chunk = n // rounds
    for conc in (1, 8):
        bares, ours = [], []
        async with (
            bare_loop(server.command or "", server.args, server.env, tool, args, conc) as bare,
            runner_loop(server, tool, args, conc, work) as runner,
        ):
            for _ in range(rounds):
                bares.append(await bare(chunk) / chunk)
                ours.append(await runner(chunk) / chunk)
        bare_s, runner_s = statistics.median(bares), statistics.median(ours)
        out["serial" if conc == 1 else "concurrency_8"] = {
            "bare_ms_per_task": round(bare_s * 1000, 3),
            "runner_ms_per_task": round(runner_s * 1000, 3),
            "overhead_ms_per_task": round((runner_s - bare_s) * 1000, 3),
            "throughput_ratio": round(bare_s / runner_s, 3),
            "rounds_ms_per_task": [
                [round(b * 1000, 3), round(o * 1000, 3)] for b, o in zip(bares, ours, strict=True)
            ],
        }
    return out


async def main() -> None:
    """Run both comparisons and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--git-tasks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=10, help="turns a side; medians")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report: dict[str, Any] = {
            "python": platform.python_version(),
            "machine": {"cores": os.cpu_count()},
            "bars": {"overhead_ms_per_task": 0.5, "git_throughput_ratio": 0.8},
            "file_create_us": {"start": file_create_us(work / "probe-start")},
            "results": [],
        }
        echo = await compare(
            "builtin",
            builtin_server(work),
            "echo",
            {"text": "hello"},
            opts.tasks,
            work,
            opts.rounds,
        )
        report["results"].append(echo)
        report["file_create_us"]["after_builtin"] = file_create_us(work / "probe-builtin")
        git_cmd = shutil.which("mcp-server-git") or str(
            Path(sys.executable).parent / "mcp-server-git"
        )
        repo = work / "repo"
        repo.mkdir()
        await asyncio.to_thread(subprocess.run, ["git", "init", "-q", str(repo)], check=True)
        git = McpServer(command=git_cmd, args=["--repository", str(repo)])
        report["results"].append(
            await compare(
                "mcp-server-git",
                git,
                "git_status",
                {"repo_path": str(repo)},
                opts.git_tasks,
                work,
                opts.rounds,
            )
        )
        report["file_create_us"]["after_git"] = file_create_us(work / "probe-git")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
