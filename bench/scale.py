"""Bench: repositories with thousands of tasks (issue 16).

For each combination of a task count (``--tasks``, default 1k, 10k, 50k) and a number
of result files a task (``--files``, default 1, 20, 100), generates a repository whose
every task already ran (one-off tool tasks whose current content completed; every fifth
task scheduled hourly, ``every 1h`` or ``0 * * * *``, its latest slot served): the
tasks folder, the result files (``<run-id>.json`` and ``.md``, the newest for the
current content or slot, older ones for earlier contents and slots) and a state file
holding the same runs. Then times each command as a whole subprocess of the installed
``omni`` (median of ``--repeat``): wall seconds, CPU seconds (user + system: what
other work on a shared machine disturbs least) and the child's peak RSS:

* ``validate``: every task file and the config;
* ``idle_db``: ``run --once`` with the state file: nothing is due, nothing runs;
* ``idle_files``: ``run --once`` with no state file (a CI machine: the result files
  are the memory);
* ``status`` and ``tasks`` (with the state file);
* ``prune``: ``prune --keep N --dry-run`` with N half the files a task.

Combinations with more than ``--max-files`` result files are left out (generating them
takes long; say ``--max-files 0`` for no cap) and listed under ``left_out``. Ratios
compare each size with the next smaller task count at the same files a task
(linear growth: the ratio of the task counts). The clock is fixed (``OMNI_NOW``).

**Bars** (issue 16): an idle pass over 10,000 tasks at most 1 s with the state file,
at most 2 s from 20 result files a task alone. Prints one JSON object.

    uv run python bench/scale.py [--tasks 1000,10000] [--files 1,20] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import measured

from runner.core.clock import iso
from runner.core.ids import new_run_id
from runner.defs.tasks import load_tasks
from runner.state.store import Store

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
BAR_IDLE_DB_S = 1.0
BAR_IDLE_FILES_S = 2.0
COMMANDS = ("validate", "idle_db", "idle_files", "status", "tasks", "prune")
_RUN_COLUMNS = (
    "run_id, task_id, task_hash, slot, state, attempt, max_attempts, executor, tool,"
    " created_at, updated_at, started_at, finished_at, result_path, seq"
)


def task_text(i: int) -> str:
    """Task ``i``: a one-off ``echo``, or (every fifth) an hourly one."""
    text = f"description: scale task {i}\ntool: echo\nargs: {{text: 'task {i}'}}\n"
    if i % 5 == 0:
        text += 'schedule: "every 1h"\n' if i % 10 == 0 else 'schedule: "0 * * * *"\n'
    return text


def write_tasks(folder: Path, count: int) -> None:
    """``count`` task files, a thousand a subfolder."""
    for i in range(count):
        sub = folder / f"g{i // 1000}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"t{i}.yaml").write_text(task_text(i), encoding="utf-8")


def _result(task_id: str, run_id: str, task_hash: str, slot: str | None, at: datetime) -> str:
    return json.dumps(
        {
            "task_id": task_id,
            "run_id": run_id,
            "task_hash": task_hash,
            "slot": slot,
            "state": "completed",
            "attempt": 1,
            "executor": "builtin",
            "tool": "echo",
            "model": None,
            "tier": None,
            "mode": "normal",
            "started_at": iso(at),
            "finished_at": iso(at + timedelta(milliseconds=5)),
            "duration_s": 0.005,
            "output": task_id,
            "error": None,
            "usage": {"input_tokens": 0, "output_tokens": 0, "cost_usd": None},
        },
        indent=2,
    )


def write_history(  # pylint: disable=too-many-locals  # one row a file
    root: Path, tasks: Path, results: Path, files: int
) -> int:
    """Result files and the state file's rows: ``files`` runs a task, all completed,
    the newest for the task's current content (one-offs) or latest slot (scheduled)."""
    loaded = load_tasks(tasks)
    state = root / ".omni" / "state.db"
    Store(state).close()  # the schema
    rows = []
    hour = NOW.replace(minute=0, second=0, microsecond=0)
    for task in loaded.tasks:
        folder = results.joinpath(*task.id.split("/"))
        folder.mkdir(parents=True)
        scheduled = task.spec.schedule is not None
        for k in range(files):
            slot_time = hour - timedelta(hours=k)
            at = slot_time + timedelta(seconds=1) if scheduled else NOW - timedelta(hours=k + 1)
            slot = iso(slot_time) if scheduled else None
            digest = task.task_hash if scheduled or k == 0 else f"{task.task_hash[:-4]}{k:04d}"
            run_id = new_run_id(at)
            path = folder / f"{run_id}.json"
            path.write_text(_result(task.id, run_id, digest, slot, at) + "\n", encoding="utf-8")
            (folder / f"{run_id}.md").write_text(f"# {task.id}\n\ncompleted\n", encoding="utf-8")
            stamp = iso(at)
            run = (run_id, task.id, digest, slot, "completed", 1, 1, "builtin", "echo")
            rows.append((*run, stamp, stamp, stamp, stamp, str(path), len(rows) + 1))
    with sqlite3.connect(state) as conn:
        marks = ", ".join("?" * len(rows[0]))
        conn.executemany(f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({marks})", rows)
    return len(loaded.tasks)


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float, int, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (MiB), exit code and stdout
    of one run of ``argv``."""
    with tempfile.TemporaryFile() as out:
        figures = measured.launch(argv, env=env, cwd=cwd, stdout=out).finish()
        out.seek(0)
        text = out.read().decode(errors="replace")
    return figures.wall_s, figures.cpu_s, figures.rss_mib, figures.exit_code, text


def omni() -> list[str]:
    """The installed ``omni`` (the console script beside this interpreter)."""
    script = Path(sys.executable).with_name("omni")
    return [str(script)] if script.exists() else [sys.executable, "-m", "runner"]


def measure(  # pylint: disable=too-many-locals  # one list a figure
    root: Path, files: int, repeat: int, pyc: Path
) -> dict[str, dict[str, object]]:
    """Every command on the generated repository at ``root`` (bytecode cached in ``pyc``)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    base |= {"OMNI_NOW": iso(NOW), "COLUMNS": "200", "PYTHONPYCACHEPREFIX": str(pyc)}
    keep = str(max(1, files // 2))
    no_state = root / "no-state" / "state.db"
    argvs = {
        "validate": ["validate"],
        "idle_db": ["run", "--once", "--json"],
        "idle_files": ["run", "--once", "--json", "--state", str(no_state)],
        "status": ["status"],
        "tasks": ["tasks"],
        "prune": ["prune", "--keep", keep, "--dry-run", "--json"],
    }
    figures: dict[str, dict[str, object]] = {}
    warm = not pyc.exists()
    for name in COMMANDS:
        if warm:  # the first combination's first run of each fills the bytecode cache
            timed([*omni(), *argvs[name]], base, root)
        walls, cpus, peaks, codes, ran = [], [], [], set(), set()
        for _ in range(repeat):
            shutil.rmtree(no_state.parent, ignore_errors=True)
            wall, cpu, peak, code, out = timed([*omni(), *argvs[name]], base, root)
            walls.append(wall)
            cpus.append(cpu)
            peaks.append(peak)
            codes.add(code)
            if name.startswith("idle"):
                ran.add(len(json.loads(out).get("runs", [])) if out.strip() else -1)
        entry: dict[str, object] = {
            "s": round(statistics.median(walls), 3),
            "cpu_s": round(statistics.median(cpus), 3),
            "rss_mib": round(max(peaks), 1),
            "exit": sorted(codes),
        }
        if ran:
            entry["ran"] = sorted(ran)  # an idle pass runs nothing: [0]
        figures[name] = entry
    return figures


def main() -> None:
    """Parse the arguments, generate, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="1000,10000,50000")
    parser.add_argument("--files", default="1,20,100")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--max-files", type=int, default=500_000)
    parser.add_argument("--keep", type=Path, help="generate under this folder and keep it")
    parser.add_argument("--generate", nargs=3, help=argparse.SUPPRESS)  # ROOT TASKS FILES
    args = parser.parse_args()
    if args.generate:
        root, count, files = Path(args.generate[0]), *map(int, args.generate[1:])
        write_tasks(root / "tasks", count)
        write_history(root, root / "tasks", root / "results", files)
        return
    counts = [int(x) for x in args.tasks.split(",")]
    per_task = [int(x) for x in args.files.split(",")]
    results: list[dict[str, object]] = []
    left_out = []
    work = args.keep or Path(tempfile.mkdtemp(prefix="omni-scale-"))
    try:
        for files in per_task:
            for count in counts:
                if args.max_files and count * files > args.max_files:
                    left_out.append({"tasks": count, "files_a_task": files})
                    continue
                root = work / f"t{count}-f{files}"
                if not root.exists():
                    start = time.perf_counter()
                    # In a child: a forked child's peak RSS starts from its parent's.
                    subprocess.run(
                        [sys.executable, __file__, "--generate", str(root), str(count), str(files)],
                        check=True,
                    )
                    made = round(time.perf_counter() - start, 1)
                else:
                    made = 0.0
                figures = measure(root, files, args.repeat, work / "pyc")
                results.append(
                    {
                        "tasks": count,
                        "files_a_task": files,
                        "generated_s": made,
                        "load_average": [round(x, 2) for x in os.getloadavg()],
                        "commands": figures,
                    }
                )
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(_report(results, left_out), indent=2))


def _report(results: list[dict[str, object]], left_out: list[dict[str, int]]) -> dict[str, object]:
    ratios = []
    by_key = {(r["files_a_task"], r["tasks"]): r for r in results}
    for (files, count), entry in sorted(by_key.items()):
        smaller = [c for f, c in by_key if f == files and c < count]
        if not smaller:
            continue
        prev = by_key[(files, max(smaller))]
        now_c, prev_c = entry["commands"], prev["commands"]
        assert isinstance(now_c, dict) and isinstance(prev_c, dict)
        ratios.append(
            {
                "files_a_task": files,
                "task_counts": f"{max(smaller)} -> {count}",
                "linear": round(count / max(smaller), 1),
                **{
                    name: round(float(now_c[name]["s"]) / max(float(prev_c[name]["s"]), 1e-9), 2)
                    for name in COMMANDS
                },
            }
        )
    bars = {}
    ten = by_key.get((20, 10_000)), by_key.get((1, 10_000))
    for entry in ten:
        if entry is not None:
            figures = entry["commands"]
            assert isinstance(figures, dict)
            bars[f"idle_db_10k_{entry['files_a_task']}f_s"] = figures["idle_db"]["s"]
            bars[f"idle_files_10k_{entry['files_a_task']}f_s"] = figures["idle_files"]["s"]
    return {
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, {platform.system()}",
        "now": iso(NOW),
        "results": results,
        "ratios": ratios,
        "left_out": left_out,
        "bars": bars | {"idle_db_s": BAR_IDLE_DB_S, "idle_files_20f_s": BAR_IDLE_FILES_S},
    }


if __name__ == "__main__":
    main()
