"""Bench: what the sandbox adds to a model-driven run on a repository of 1,000 files
(DESIGN §6: at most 300 ms, median).

A model-driven run on the builtin costs, besides what any run costs, its own workspace
(a scratch copy of the tracked files at HEAD, ``runner.reach.scratch``), the start of its
executor under bubblewrap instead of a plain start, the diff of its workspace into a
proposal, and removing the workspace. Alternating rounds measure:

- ``plain``: the built-in executor started the plain way in the repository, until its
  tools are listed (what a run pays without the sandbox);
- ``sandboxed``: scratch + the built-in executor started under bubblewrap in the
  scratch, until its tools are listed + one ``write_file`` + the proposal + removal.

``added`` is the difference of the medians; the parts are reported too. Prints one JSON
object: ``uv run python bench/sandbox.py [--rounds 15] [--files 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.core.pathglob import PathRules
from runner.dispatch.isolation import default_scratch_parent
from runner.reach.executors import ExecutorPool
from runner.reach.sandbox import Confinement, omni_read_paths, probe
from runner.reach.scratch import Scratch

BAR_MS = 300.0
HIDE = PathRules(["tasks", "results", "config.yaml", ".omni"])
PROTECTED = PathRules([".git", ".github", ".omni", "tasks", "results", "config.yaml"])


def make_repository(root: Path, files: int) -> None:
    """A git repository of ``files`` small files in 20 folders, one commit."""
    for i in range(files):
        path = root / f"pkg{i % 20}" / f"module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {i}\n" * 5, encoding="utf-8")
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True)


async def plain(repo: Path) -> float:
    """The builtin started plainly in ``repo``, until its tools are listed."""
    started = time.perf_counter()
    async with ExecutorPool({}, workspace=repo) as pool:
        await pool.list_tools("builtin")
        took = time.perf_counter() - started
    return took


async def sandboxed(repo: Path, bwrap: str, parts: dict[str, list[float]]) -> float:
    """A model-driven run's extra steps, end to end."""
    started = time.perf_counter()
    scratch = Scratch.create(repo, HIDE, parent=default_scratch_parent())
    made = time.perf_counter()
    confinement = Confinement(bwrap, scratch.work, (*scratch.read_only(), *omni_read_paths()))
    async with ExecutorPool({}, workspace=scratch.work, per_run=True, sandbox=confinement) as pool:
        await pool.list_tools("builtin")
        listed = time.perf_counter()
        await pool.call_tool("builtin", "write_file", {"path": "pkg0/new.py", "content": "x\n"})
    closed = time.perf_counter()
    scratch.proposal(
        protected=PROTECTED, allowed=PathRules(["**"]), has_secret=lambda _: False, limit=1 << 20
    )
    proposed = time.perf_counter()
    scratch.close()
    done = time.perf_counter()
    parts["workspace"].append(made - started)
    parts["sandboxed_start"].append(listed - made)
    parts["proposal"].append(proposed - closed)
    parts["removal"].append(done - proposed)
    return done - started - (closed - listed)  # the write itself is the run's own work


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


async def measure(
    repo: Path, bwrap: str, rounds: int
) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Alternating rounds of both paths, after one warm-up of each."""
    parts: dict[str, list[float]] = {
        k: [] for k in ("workspace", "sandboxed_start", "proposal", "removal")
    }
    plains: list[float] = []
    boxed: list[float] = []
    await plain(repo)  # warm the page cache and imports
    await sandboxed(repo, bwrap, {k: [] for k in parts})
    for _ in range(rounds):
        plains.append(await plain(repo))
        boxed.append(await sandboxed(repo, bwrap, parts))
    return plains, boxed, parts


def main() -> None:
    """Run the bench and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    found = probe()
    if not found.available or found.bwrap is None:
        raise SystemExit(f"bench/sandbox.py needs bubblewrap: {found.explain()}")
    with tempfile.TemporaryDirectory(prefix="omni-bench-") as tmp:
        repo = Path(tmp) / "repo"
        make_repository(repo, args.files)
        plains, boxed, parts = asyncio.run(measure(repo, found.bwrap, args.rounds))
    added = _ms(boxed) - _ms(plains)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    report: dict[str, Any] = {
        "bench": "sandbox",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit,
        "machine": {
            "cores": os.cpu_count(),
            "system": platform.platform(),
            "python": platform.python_version(),
            "load_1min": round(os.getloadavg()[0], 2),
            "scratch_in": str(default_scratch_parent() or tempfile.gettempdir()),
        },
        "files": args.files,
        "rounds": args.rounds,
        "plain_start_ms": _ms(plains),
        "sandboxed_run_ms": _ms(boxed),
        "added_median_ms": round(added, 1),
        "parts_median_ms": {k: _ms(v) for k, v in parts.items()},
        "bar_ms": BAR_MS,
        "pass": added <= BAR_MS,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
