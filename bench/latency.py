"""Bench: file dropped -> result file written, service mode (DESIGN §6 bar: p95 <= 300 ms).

Starts ``python -m runner run`` (default config: ``settle_ms`` 100) on a temporary
project, warms the built-in executor with a few drops, then drops task files one after
another by write-then-rename (written as a hidden temp file, renamed into ``tasks/``)
and times each from the rename until its ``results/<task-id>/<run-id>.json`` exists.
Then it leaves the service idle and measures its CPU use and memory (the service
process and the built-in executor it started), stops it with SIGTERM and checks the
exit code. Prints one JSON object.

    uv run python bench/latency.py [--drops 200] [--idle 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BAR_P95_MS = 300.0
_TICKS = os.sysconf("SC_CLK_TCK")


def task_text(i: int) -> str:
    """A tool task for the built-in executor."""
    return f"tool: echo\nargs: {{text: 'drop {i}'}}\ndescription: latency drop {i}\n"


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


def wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the service logs that it watches the tasks folder."""
    deadline = time.monotonic() + timeout
    while "ready: watching" not in log.read_text(encoding="utf-8", errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the service did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.02)


def measure(root: Path, drops: int, idle: float) -> dict[str, object]:
    """Run the service on ``root``, take every figure, stop it with SIGTERM."""
    (root / "tasks").mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root)}
    command = [sys.executable, "-m", "runner", "run"]
    with (
        (root / "service.log").open("wb") as sink,
        subprocess.Popen(command, cwd=root, env=env, stdout=sink, stderr=sink) as proc,
    ):
        try:
            figures = drive(proc, root, drops, idle)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    return figures | {"exit_code_after_sigterm": code}


def drive(proc: subprocess.Popen[bytes], root: Path, drops: int, idle: float) -> dict[str, object]:
    """Warm up, time ``drops`` drops, then measure ``idle`` seconds of idling."""
    tasks, results = root / "tasks", root / "results"
    wait_ready(root / "service.log", proc)
    for i in range(3):  # warm-up: starts the built-in executor
        drop_and_time(tasks, results, f"warm-{i}", task_text(-i), timeout=30)
    times = []
    for i in range(drops):
        times.append(drop_and_time(tasks, results, f"lat-{i:04}", task_text(i), timeout=10))
        time.sleep(0.01)
    time.sleep(2.0)  # let the last bookkeeping settle
    watched = [proc.pid, *children(proc.pid)]
    before = [cpu_seconds(pid) for pid in watched]
    time.sleep(idle)
    idle_cpu = [
        round(100 * (cpu_seconds(pid) - used) / idle, 3)
        for pid, used in zip(watched, before, strict=True)
    ]
    rss = [rss_mib(pid) for pid in watched]
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
        "idle_cpu_percent": {"service": idle_cpu[0], "builtin_executor": sum(idle_cpu[1:])},
        "rss_mib": {"service": rss[0], "builtin_executor": sum(rss[1:])},
    }


def main() -> None:
    """Measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=200)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(Path(tmp), args.drops, args.idle)
    figures |= {
        "python": platform.python_version(),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
