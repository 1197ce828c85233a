"""Bench: validate 1,000 varied task files (DESIGN §6 bar: at most 1 s).

Generates tool and prompt tasks, some with cron or ``every`` schedules, in nested
folders, into a temporary folder; then times (a) ``load_tasks(dir)`` in-process (median
of 5) and (b) the whole ``python -m runner validate DIR`` command as a subprocess (median
of 3; null while ``runner/__main__.py`` does not exist). Prints one JSON object.

    uv run python bench/validate.py [--files 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.defs.tasks import load_tasks

BAR_S = 1.0
SCHEDULES = [None, None, "every 10m", "every 30s", "every 2h", "0 3 * * *", "*/15 * * * 1-5"]
ZONES = [None, "UTC", "Europe/Berlin", "America/New_York"]


def task_text(i: int) -> str:
    """One valid task file; the kind, schedule and shape vary with ``i``."""
    lines = [f"# generated task {i}", f"description: Bench task number {i} of the batch"]
    if i % 5 == 0:
        lines.append(f"id: explicit/task-{i}")
    if i % 2 == 0:
        lines += [
            "executor: git",
            "tool: git_log",
            "args:",
            "  repo_path: .",
            f"  max_count: {i % 20 + 1}",
            "  options: {oneline: true, paths: [src, docs]}",
        ]
    else:
        lines += [
            "kind: coding" if i % 3 else "kind: general",
            "prompt: |",
            f"  Read the log and write a summary of change {i}.",
            "  Keep it short; list the files touched.",
            "tools: [Read, Write]",
            "max_turns: 5",
        ]
    schedule = SCHEDULES[i % len(SCHEDULES)]
    if schedule is not None:
        lines.append(f'schedule: "{schedule}"')
        zone = ZONES[i % len(ZONES)]
        if zone is not None and not schedule.startswith("every"):
            lines.append(f"timezone: {zone}")
    lines += [f"timeout: {60 + i % 300}", f"retries: {i % 3}", f"enabled: {i % 7 != 0}".lower()]
    return "\n".join(lines) + "\n"


def generate(root: Path, count: int) -> None:
    """``count`` task files under ``root``, spread over nested folders."""
    for i in range(count):
        folder = root / f"team{i % 4}" / f"area{i % 10}"
        if i % 3 == 0:
            folder = folder / "deep"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".yml" if i % 11 == 0 else ".yaml"
        (folder / f"task-{i}{suffix}").write_text(task_text(i), encoding="utf-8")


def time_load(root: Path, count: int, rounds: int = 5) -> float:
    """Median seconds of ``load_tasks(root)``; every file must load."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = load_tasks(root)
        times.append(time.perf_counter() - start)
        if result.problems or len(result.tasks) != count:
            raise SystemExit(f"bench files did not all load: {result.problems[:3]}")
    return statistics.median(times)


#: The executors and the model the generated tasks use (validate checks the names; it
#: starts none; a prompt task with no model to run on would be a problem).
CONFIG = """\
model_list:
  - {model_name: small, litellm_params: {model: openai/small}}
mcp_servers:
  git: {command: mcp-server-git}
  claude_code: {command: claude, args: [mcp, serve]}
  openclaw: {url: 'ws://127.0.0.1:18789'}
"""


def time_cli(root: Path, rounds: int = 3) -> float | None:
    """Median seconds of ``python -m runner validate ROOT``, or None without a CLI."""
    env = {**os.environ, "OMNI_CONFIG": "", "OMNI_TASKS": str(root)}
    times = []
    with tempfile.TemporaryDirectory() as here:  # config.yaml: the executors above
        (Path(here) / "config.yaml").write_text(CONFIG, encoding="utf-8")
        for _ in range(rounds):
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "runner", "validate", str(root)],
                cwd=here,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                said = (done.stdout + done.stderr)[-500:]
                print(f"validate exited {done.returncode}: {said}", file=sys.stderr)
                return None
    return statistics.median(times)


def main() -> None:
    """Generate, time, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    count = parser.parse_args().files
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tasks"
        generate(root, count)
        load_s = time_load(root, count)
        cli_s = time_cli(root)
    print(
        json.dumps(
            {
                "files": count,
                "load_tasks_s": round(load_s, 3),
                "cli_s": None if cli_s is None else round(cli_s, 3),
                "bar_s": BAR_S,
                "python": platform.python_version(),
                "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
            }
        )
    )


if __name__ == "__main__":
    main()
