"""Bench: an idle pass over thousands of tasks with the PostgreSQL ledger (issue 16).

Generates the repository ``bench/scale.py`` does (every task already ran: one-off tool
tasks whose current content completed, every fifth scheduled hourly with its latest slot
served; ``--files`` result files a task), moves its state file into a fresh database of
a private PostgreSQL cluster (``tests/support/postgres.py``: 127.0.0.1, a free port, as
the ``postgres`` user under root) with ``omni migrate --to``, analyses it, and times
each command as a whole subprocess of the installed ``omni`` with ``OMNI_STATE_URL``
(median of ``--repeat``; the first run of each, which fills the bytecode cache, is not
counted):

* ``idle_db``: ``run --once``: nothing is due, nothing runs (the first run records the
  task rows; the timed ones find them unchanged);
* ``tasks`` and ``status``.

For each: wall seconds, the client's CPU seconds (user + system) and peak RSS, and the
server's CPU seconds for it (the postmaster's reaped children, read from ``/proc`` once
the command's backends have exited: autovacuum workers that ran meanwhile count too) and
the transactions it committed (``pg_stat_database``; each statement outside a
transaction is one). The clock is fixed (``OMNI_NOW``). Prints one JSON object.

    uv run python bench/scale_pg.py [--tasks 10000] [--files 1] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# pylint: disable-next=wrong-import-position,wrong-import-order  # the repository's generator
from bench.scale import NOW, omni, timed

# pylint: disable-next=wrong-import-position,wrong-import-order
from runner.core.clock import iso

# pylint: disable-next=wrong-import-position,wrong-import-order  # tests helpers
from tests.support.postgres import Cluster

COMMANDS = {
    "idle_db": ["run", "--once", "--json"],
    "tasks": ["tasks"],
    "status": ["status"],
}
_TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(cluster: Cluster) -> float:
    """CPU seconds (user + system) of the cluster's exited backends so far."""
    pid = (cluster.data / "postmaster.pid").read_text(encoding="utf-8").split()[0]
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / _TICKS  # cutime, cstime


def commits(admin_url: str, database: str) -> int:
    """Transactions committed in ``database`` so far (after the omni backends exited)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for _ in range(100):
            busy = conn.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s", (database,)
            ).fetchone()
            if busy is not None and busy[0] == 0:
                break
            time.sleep(0.02)
        time.sleep(0.05)  # the postmaster reaps an exited backend
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


def prepare(root: Path, count: int, files: int, cluster: Cluster, env: dict[str, str]) -> str:
    """The repository at ``root`` (generated unless there) and a fresh ledger holding
    its state file's rows; returns the ledger's URL."""
    if not root.exists():
        scale = Path(__file__).with_name("scale.py")
        subprocess.run(
            [sys.executable, str(scale), "--generate", str(root), str(count), str(files)],
            check=True,
        )
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS scale WITH (FORCE)")
        conn.execute("CREATE DATABASE scale")
    url = cluster.url("scale")
    subprocess.run(
        [*omni(), "migrate", "--to", url], env=env, cwd=root, check=True, capture_output=True
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return url


def one_run(cluster: Cluster, argv: list[str], env: dict[str, str], root: Path) -> list[float]:
    """Wall s, client CPU s, server CPU s, transactions, peak RSS (MiB), exit code."""
    before_cpu, before_xact = server_cpu(cluster), commits(cluster.url(), "scale")
    wall, cpu, peak, code, _ = timed([*omni(), *argv], env, root)
    xacts = commits(cluster.url(), "scale") - before_xact  # waits for the backends to exit
    return [wall, cpu, server_cpu(cluster) - before_cpu, xacts, peak, code]


def measure(cluster: Cluster, root: Path, url: str, repeat: int, env: dict[str, str]) -> dict:
    """Each command's figures (medians of ``repeat`` runs)."""
    env = env | {"OMNI_STATE_URL": url}
    figures: dict[str, dict[str, object]] = {}
    for name, argv in COMMANDS.items():
        timed([*omni(), *argv], env, root)  # bytecode cache; the first pass records tasks
        runs = [one_run(cluster, argv, env, root) for _ in range(repeat)]
        walls, cpus, servers, xacts, peaks, codes = zip(*runs, strict=True)
        figures[name] = {
            "s": round(statistics.median(walls), 3),
            "cpu_s": round(statistics.median(cpus), 3),
            "server_cpu_s": round(statistics.median(servers), 3),
            "transactions": int(statistics.median(xacts)),
            "rss_mib": round(max(peaks), 1),
            "exit": sorted({int(code) for code in codes}),
        }
    return figures


def main() -> None:
    """Parse the arguments, start the cluster, generate, migrate, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="generate under this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="omni-scale-pg-"))
    root = work / f"t{args.tasks}-f{args.files}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env |= {"OMNI_NOW": iso(NOW), "COLUMNS": "200", "PYTHONPYCACHEPREFIX": str(work / "pyc")}
    cluster = Cluster()
    try:
        url = prepare(root, args.tasks, args.files, cluster, env)
        figures = measure(cluster, root, url, args.repeat, env)
    finally:
        cluster.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": f"{os.cpu_count()} cores, {platform.system()}",
                "now": iso(NOW),
                "tasks": args.tasks,
                "files_a_task": args.files,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "commands": figures,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
