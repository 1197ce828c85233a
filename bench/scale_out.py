"""Scale-out: 1, 2 and 3 ``omni run`` services on one PostgreSQL ledger.

For each instance count: a fresh database and project folder, the services started and
ready, then 600 one-off tasks that sleep 0.5 s on an MCP stdio server (the tests'
``sleep`` tool) dropped into the shared tasks folder at once; the time from the drop to
the last completed row gives the throughput. Concurrency 4 a service, lease 30 s.

Claim latency: on a fresh ledger holding 600 idle runs, 1, 2 and 3 claimers (each its
own connection, in threads) claim them all in the same order, as services do (one
wins, the others skip it): the time of each ``claim()`` call, p50 and p95.

    uv run python bench/scale_out.py [--tasks 600] [--seconds 0.5] [--url postgresql://…]

Without ``--url`` a private cluster is started (``tests/support/postgres.py``: as root
it runs as the ``postgres`` user). Prints one JSON object. Bar (DESIGN §6, issue 18):
throughput >= 1.8x with 2 instances and >= 2.5x with 3, over one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from runner.state.postgres import PostgresStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# pylint: disable-next=wrong-import-position,wrong-import-order  # tests helpers
from tests.support.fleet import omni, query, states, wait_until, write_config, write_sleep_tasks

# pylint: disable-next=wrong-import-position,wrong-import-order  # tests helpers
from tests.support.postgres import Cluster

if TYPE_CHECKING:
    import subprocess

BARS = {2: 1.8, 3: 2.5}


def fresh_database(admin_url: str, name: str) -> str:
    """Create database ``name`` on the cluster of ``admin_url``; returns its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def scale_trial(url: str, instances: int, tasks: int, seconds: float) -> dict[str, Any]:
    """``instances`` services sharing ``tasks`` sleep tasks; throughput and spread."""
    root = Path(tempfile.mkdtemp(prefix=f"omni-scale-{instances}-"))
    try:
        write_config(root, url, lease=30.0)
        with ExitStack() as stack:
            procs = []
            for i in range(instances):
                proc = omni(root, "run", log=f"service{i}.log")
                stack.callback(_reap, proc)
                procs.append(proc)
            for i in range(instances):
                log = root / f"service{i}.log"
                wait_until(lambda log=log: "ready: watching" in log.read_text(), 60, "ready")
            began = time.monotonic()
            write_sleep_tasks(root, tasks, seconds)
            wait_until(lambda: states(url)["completed"] == tasks, 600, "all completed")
            took = time.monotonic() - began
            spread = query(url, "SELECT lease_owner, COUNT(*) AS n FROM runs GROUP BY lease_owner")
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(60) for proc in procs]
        runs = query(url, "SELECT COUNT(*) AS n, COUNT(DISTINCT task_id) AS tasks FROM runs")[0]
        return {
            "instances": instances,
            "seconds": round(took, 2),
            "tasks_per_s": round(tasks / took, 2),
            "ideal_s": round(tasks * seconds / (4 * instances), 2),
            "runs_per_instance": sorted(row["n"] for row in spread),
            "runs": runs["n"],
            "distinct_tasks": runs["tasks"],
            "exit_codes": codes,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def claim_latency(url: str, claimers: int, runs: int) -> dict[str, Any]:
    """``claimers`` stores claiming the same ``runs`` idle runs in the same order."""
    with PostgresStore(url) as setup:
        records = [setup.create_run(f"c{i}", "h", max_attempts=1) for i in range(runs)]
    stores = [PostgresStore(url, role="bench") for _ in range(claimers)]
    timings: list[list[float]] = [[] for _ in stores]
    won = [0] * claimers
    start = threading.Barrier(claimers)

    def work(k: int) -> None:
        start.wait()
        for record in records:
            began = time.perf_counter()
            if stores[k].claim(record, executor="sleeper", tool="sleep", detail="bench"):
                won[k] += 1
            timings[k].append(time.perf_counter() - began)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    every = sorted(t for one in timings for t in one)
    return {
        "claimers": claimers,
        "claims": len(every),
        "won": won,
        "p50_ms": round(statistics.median(every) * 1000, 3),
        "p95_ms": round(every[int(len(every) * 0.95)] * 1000, 3),
    }


def main() -> None:
    """Run the trials and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--url", help="an existing PostgreSQL (a database to create DBs from)")
    args = parser.parse_args()
    with ExitStack() as stack:
        admin = args.url
        if admin is None:
            cluster = Cluster()
            stack.callback(cluster.stop)
            admin = cluster.url()
        trials = [
            scale_trial(fresh_database(admin, f"scale{n}"), n, args.tasks, args.seconds)
            for n in (1, 2, 3)
        ]
        latency = [
            claim_latency(fresh_database(admin, f"claims{n}"), n, args.tasks) for n in (1, 2, 3)
        ]
    base = trials[0]["tasks_per_s"]
    speedup = {str(t["instances"]): round(t["tasks_per_s"] / base, 2) for t in trials}
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.system(),
        },
        "tasks": args.tasks,
        "task_seconds": args.seconds,
        "concurrency_each": 4,
        "trials": trials,
        "speedup": speedup,
        "bars": {str(n): least for n, least in BARS.items()},
        "meets_bars": all(speedup[str(n)] >= least for n, least in BARS.items()),
        "claim_latency": latency,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
