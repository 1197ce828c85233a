"""Several ``omni run`` services (and ``run --once`` shards) on one PostgreSQL ledger, as
real processes in one project folder: its tasks, its results, a config naming the
ledger. Used by the fleet tests and by ``bench/scale_out.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from tests.support.paths import SERVERS

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def write_config(root: Path, url: str, *, lease: float, concurrency: int = 4) -> None:
    """``config.yaml``: the test MCP server as ``sleeper``, the ledger at ``url``."""
    config = {
        "mcp_servers": {
            "sleeper": {
                "command": sys.executable,
                "args": [str(SERVERS), "stdio"],
                "max_concurrency": concurrency,
            }
        },
        "service": {"settle_ms": 50, "shutdown_grace": 10},
        "dispatch": {"concurrency": concurrency},
        "state": {"url": url, "lease_seconds": lease},
    }
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(json.dumps(config), encoding="utf-8")


def write_sleep_tasks(
    root: Path, count: int, seconds: float, *, first: int = 0, retries: int = 0
) -> list[str]:
    """``count`` one-off tasks ``t000``... that sleep ``seconds`` on ``sleeper``; their ids.
    Each is written to a hidden name and renamed into place (it appears whole)."""
    ids = []
    for i in range(first, first + count):
        task_id = f"t{i:03}"
        tmp = root / "tasks" / f".{task_id}.tmp"
        tmp.write_text(
            f"executor: sleeper\ntool: sleep\nargs: {{seconds: {seconds}}}\n"
            f"description: sleep {i}\nretries: {retries}\n",
            encoding="utf-8",
        )
        tmp.rename(root / "tasks" / f"{task_id}.yaml")
        ids.append(task_id)
    return ids


def omni(root: Path, *args: str, log: str = "omni.log") -> subprocess.Popen[str]:
    """``python -m runner ARGS`` in ``root`` (a small environment), output to ``log``."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root)}
    with (root / log).open("a", encoding="utf-8") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            cwd=root,
            env=env,
            text=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of ``sql`` on the ledger, as dicts."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def states(url: str) -> Counter[str]:
    """Runs by state (empty before the first service migrated the ledger)."""
    try:
        found = query(url, "SELECT state, COUNT(*) AS n FROM runs GROUP BY state")
    except psycopg.errors.UndefinedTable:
        return Counter()
    return Counter({row["state"]: row["n"] for row in found})


def live_pids(url: str) -> set[int]:
    """The pids of the instances with a row (joined and not yet gone)."""
    try:
        return {row["pid"] for row in query(url, "SELECT pid FROM instances")}
    except psycopg.errors.UndefinedTable:
        return set()


def results_of(root: Path, task_id: str) -> list[dict[str, Any]]:
    """The JSON result files of a task."""
    folder = root / "results" / task_id
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
