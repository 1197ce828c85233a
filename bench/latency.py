"""Bench: file dropped -> result file written, service mode (DESIGN §6 bar: p95 <= 300 ms).

Starts ``python -m runner run`` (default config: ``settle_ms`` 100) on a temporary
project, warms the built-in executor with a few drops, then drops task files one after
another by write-then-rename (written as a hidden temp file, renamed into ``tasks/``)
and times each from the rename until its ``results/<task-id>/<run-id>.json`` exists.
Then it leaves the service idle and measures its CPU use and memory (the service
process and the built-in executor it started), stops it with SIGTERM and checks the
exit code. Prints one JSON object.

With ``--tasks N`` the tasks folder first holds N scheduled tool tasks (issue 16: service
mode at 10,000 scheduled tasks) and the state they would have after an earlier service
run: the tasks' rows, each task's latest slot served (its run row and result file).
Mostly daily cron jobs spread over the day's minutes (several fire every minute at 10k),
some hourly cron jobs, and ``every N`` jobs of 30-119 minutes, some in other time zones.
Then, besides the drops: the time from start to ready (every task loaded and scheduled)
with the CPU seconds it took, and an idle window long enough to hold scheduled fires and
a periodic rescan (``service.rescan_interval``, 60 s: ``--idle`` defaults to 70 s),
with the scheduled runs it saw finish.

    uv run python bench/latency.py [--drops 200] [--idle 10] [--tasks 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runner.core.clock import iso
from runner.core.ids import new_run_id
from runner.core.redaction import Redactor
from runner.core.states import RunState
from runner.defs.tasks import Task, load_tasks
from runner.planning.cron import fire_times
from runner.state.results import RunResult, write_result
from runner.state.store import Store

BAR_P95_MS = 300.0
BAR_IDLE_CPU_PERCENT = 1.0
_ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
_RUN_COLUMNS = (
    "run_id, task_id, task_hash, slot, state, attempt, max_attempts, executor, tool,"
    " created_at, updated_at, started_at, finished_at, result_path, seq"
)
_TICKS = os.sysconf("SC_CLK_TCK")


def task_text(i: int) -> str:
    """A tool task for the built-in executor."""
    return f"tool: echo\nargs: {{text: 'drop {i}'}}\ndescription: latency drop {i}\n"


def scheduled_text(i: int) -> str:
    """Scheduled task ``i``: 1 in 50 hourly cron, 1 in 50 ``every 30-119m``, the rest
    daily cron spread over the day's minutes; every seventh in another time zone."""
    minute = (i * 7) % 1440  # a different minute of the day for each of 1,440 in a row
    if i % 50 == 0:
        schedule = f"{minute % 60} * * * *"
    elif i % 50 == 1:
        schedule = f"every {30 + i % 90}m"
    else:
        schedule = f"{minute % 60} {minute // 60} * * *"
    zone = f"timezone: {_ZONES[i % len(_ZONES)]}\n" if i % 7 == 0 else ""
    return (
        f"description: scheduled task {i}\ntool: echo\nargs: {{text: 'scheduled {i}'}}\n"
        f'schedule: "{schedule}"\n{zone}'
    )


def fill(root: Path, count: int, now: datetime) -> int:
    """``count`` scheduled tasks (a thousand a subfolder) with the state an earlier service
    run left: the tasks' rows, and each task's latest slot at ``now`` served (a completed
    run row and its result file). Returns the scheduled runs the rows hold."""
    tasks = root / "tasks"
    for i in range(count):
        sub = tasks / f"s{i // 1000}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"t{i}.yaml").write_text(scheduled_text(i), encoding="utf-8")
    loaded = load_tasks(tasks).tasks
    state = root / ".omni" / "state.db"
    store = Store(state)
    try:
        store.upsert_tasks(loaded)
    finally:
        store.close()
    redactor, rows = Redactor([]), []
    for task in loaded:
        slot = fire_times(task.spec.schedule or "", task.spec.timezone or "UTC").latest_at(now)
        if slot is not None:
            rows.append((*served(root / "results", task, slot, redactor), len(rows) + 1))
    with sqlite3.connect(state) as conn:
        marks = ", ".join("?" * len(_RUN_COLUMNS.split(",")))
        conn.executemany(f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({marks})", rows)
    return len(rows)


def served(results: Path, task: Task, slot: datetime, redactor: Redactor) -> tuple[object, ...]:
    """Write the result file of ``task``'s completed run for ``slot``; its run row (less
    ``seq``)."""
    at = slot + timedelta(seconds=1)
    run_id, stamp = new_run_id(at), iso(at)
    result = RunResult(
        task_id=task.id,
        run_id=run_id,
        task_hash=task.task_hash,
        slot=iso(slot),
        state=RunState.COMPLETED,
        attempt=1,
        executor="builtin",
        tool="echo",
        started_at=stamp,
        finished_at=iso(at + timedelta(milliseconds=5)),
        duration_s=0.005,
        output=task.id,
    )
    path = write_result(results, result, redactor)
    run = (run_id, task.id, task.task_hash, iso(slot), "completed", 1, 1, "builtin", "echo")
    return (*run, stamp, stamp, stamp, stamp, str(path))


def drop_and_time(tasks: Path, results: Path, name: str, text: str, timeout: float) -> float:
    """Write-then-rename one task file; seconds until its result file exists."""
    tmp = tasks / f".{name}.yaml.tmp"
    tmp.write_text(text, encoding="utf-8")
    folder = results / name
    start = time.perf_counter()
    os.replace(tmp, tasks / f"{name}.yaml")
    while time.perf_counter() - start < timeout:
        if folder.is_dir() and any(
            entry.name.endswith(".json") and not entry.name.startswith(".")
            for entry in os.scandir(folder)
        ):
            return time.perf_counter() - start
        time.sleep(0.0005)
    raise SystemExit(f"no result for {name} within {timeout} s")


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text(encoding="ascii")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of the process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the service logs that it watches the tasks folder."""
    deadline = time.monotonic() + timeout
    while "ready: watching" not in log.read_text(encoding="utf-8", errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the service did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.02)


def scheduled_completions(text: str) -> int:
    """Scheduled runs the service log shows completed."""
    return sum(1 for line in text.splitlines() if " slot " in line and "-> completed" in line)


def measure(root: Path, drops: int, idle: float, scheduled: int) -> dict[str, object]:
    """Run the service on ``root``, take every figure, stop it with SIGTERM."""
    (root / "tasks").mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root)}
    if "PYTHONPATH" in os.environ:  # another checkout measured with this interpreter
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    command = [sys.executable, "-m", "runner", "run"]
    started = time.perf_counter()
    with (
        (root / "service.log").open("wb") as sink,
        subprocess.Popen(command, cwd=root, env=env, stdout=sink, stderr=sink) as proc,
    ):
        try:
            wait_ready(root / "service.log", proc, timeout=60 + scheduled / 50)
            ready = {
                "ready_s": round(time.perf_counter() - started, 2),
                "ready_cpu_s": round(cpu_seconds(proc.pid), 2),
                "ready_rss_mib": rss_mib(proc.pid),
            }
            figures = ready | drive(proc, root, drops, idle)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    return figures | {"exit_code_after_sigterm": code}


def drive(proc: subprocess.Popen[bytes], root: Path, drops: int, idle: float) -> dict[str, object]:
    """Warm up, time ``drops`` drops, then measure ``idle`` seconds of idling."""
    tasks, results, log = root / "tasks", root / "results", root / "service.log"
    for i in range(3):  # warm-up: starts the built-in executor
        drop_and_time(tasks, results, f"warm-{i}", task_text(-i), timeout=30)
    times = []
    for i in range(drops):
        times.append(drop_and_time(tasks, results, f"lat-{i:04}", task_text(i), timeout=10))
        time.sleep(0.01)
    time.sleep(2.0)  # let the last bookkeeping settle
    watched = [proc.pid, *children(proc.pid)]
    before = [cpu_seconds(pid) for pid in watched]
    fired = scheduled_completions(log.read_text(encoding="utf-8", errors="replace"))
    time.sleep(idle)
    idle_cpu = [
        round(100 * (cpu_seconds(pid) - used) / idle, 3)
        for pid, used in zip(watched, before, strict=True)
    ]
    rss = [rss_mib(pid) for pid in watched]
    fired = scheduled_completions(log.read_text(encoding="utf-8", errors="replace")) - fired
    ms = [t * 1000 for t in times]
    return {
        "drops": drops,
        "settle_ms": 100,
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(percentile(ms, 0.95), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
        "bar_p95_ms": BAR_P95_MS,
        "idle_seconds": idle,
        "idle_scheduled_runs": fired,
        "idle_cpu_percent": {"service": idle_cpu[0], "builtin_executor": sum(idle_cpu[1:])},
        "bar_idle_cpu_percent": BAR_IDLE_CPU_PERCENT,
        "rss_mib": {"service": rss[0], "builtin_executor": sum(rss[1:])},
    }


def main() -> None:
    """Measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=200)
    parser.add_argument("--idle", type=float, help="seconds of idle measured (10; 70 with --tasks)")
    parser.add_argument("--tasks", type=int, default=0, help="scheduled tasks filled in first")
    args = parser.parse_args()
    idle = args.idle if args.idle is not None else (70.0 if args.tasks else 10.0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        figures: dict[str, object] = {"scheduled_tasks": args.tasks}
        if args.tasks:
            begun = time.perf_counter()
            figures["served_slots"] = fill(root, args.tasks, datetime.now(UTC))
            figures["filled_s"] = round(time.perf_counter() - begun, 1)
        figures |= measure(root, args.drops, idle, args.tasks)
    figures |= {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
