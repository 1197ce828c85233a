"""Several runners on one PostgreSQL ledger, as real processes: three services share 300
sleeping tasks while one of them is killed and restarted; two ``run --once`` shards and a
service plan the same tasks at once. Every task completes exactly once, none is lost,
and result files and rows agree."""

from __future__ import annotations

import signal
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from tests.support.fleet import (
    live_pids,
    omni,
    query,
    results_of,
    states,
    wait_until,
    write_config,
    write_sleep_tasks,
)

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

pytestmark = pytest.mark.integration

LEASE = 3.0


def started(root: Path, url: str, name: str) -> subprocess.Popen[str]:
    """A service, once it has joined the ledger and watches the tasks folder."""
    proc = omni(root, "run", log=f"{name}.log")
    wait_until(
        lambda: "ready: watching" in (root / f"{name}.log").read_text(),
        timeout=60,
        what=f"{name} ready",
    )
    assert proc.pid in live_pids(url)
    return proc


def killed(proc: subprocess.Popen[str]) -> None:
    """Whatever a failed test left running is killed and reaped."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def stopped(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def assert_each_completed_once(root: Path, url: str, task_ids: list[str]) -> None:
    """One run a task, completed; one result file a task, of that run and attempt."""
    runs = query(url, "SELECT task_id, run_id, state, attempt FROM runs ORDER BY seq")
    per_task = Counter(run["task_id"] for run in runs)
    assert set(per_task) == set(task_ids)
    assert set(per_task.values()) == {1}
    assert {run["state"] for run in runs} == {"completed"}
    for run in runs:
        files = results_of(root, run["task_id"])
        assert [(f["run_id"], f["state"], f["attempt"]) for f in files] == [
            (run["run_id"], "completed", run["attempt"])
        ]


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_three_services_share_300_tasks_and_finish_a_killed_ones_runs(
    tmp_path: Path, pg_url: str
) -> None:
    write_config(tmp_path, pg_url, lease=LEASE)
    with ExitStack() as stack:
        procs = {}
        for name in ("a", "b", "c"):
            procs[name] = started(tmp_path, pg_url, name)
            stack.callback(killed, procs[name])
        # One retry: a run cut short by its instance's death goes back to idle (with
        # none left it would fail, and run again as a new run only when next planned).
        ids = write_sleep_tasks(tmp_path, 300, 0.5, retries=1)
        wait_until(lambda: states(pg_url)["completed"] >= 60, timeout=120, what="60 done")
        victim = procs["b"]
        [owner] = query(pg_url, "SELECT id FROM instances WHERE pid = %s", (victim.pid,))
        wait_until(
            lambda: query(
                pg_url,
                "SELECT 1 FROM runs WHERE lease_owner = %s AND state = 'executing'",
                (owner["id"],),
            ),
            timeout=30,
            what="b mid-run",
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        killed_at = datetime.now(UTC)
        held = [
            row["run_id"]
            for row in query(
                pg_url,
                "SELECT run_id FROM runs WHERE lease_owner = %s"
                " AND state IN ('dispatching', 'executing')",
                (owner["id"],),
            )
        ]
        assert held, "b held no run when it was killed"
        wait_until(
            lambda: states(pg_url)["completed"] >= 240, timeout=180, what="240 done by a and c"
        )
        procs["b"] = started(tmp_path, pg_url, "b-again")
        stack.callback(killed, procs["b"])
        wait_until(lambda: states(pg_url)["completed"] == 300, timeout=180, what="all 300")
        assert [stopped(proc) for proc in procs.values()] == [0, 0, 0]

    assert_each_completed_once(tmp_path, pg_url, ids)
    for run_id in held:
        events = query(
            pg_url,
            "SELECT at, to_state, detail FROM events WHERE run_id = %s ORDER BY id",
            (run_id,),
        )
        settled = [
            e
            for e in events
            if e["detail"] in {"interrupted; will retry", "result file found on resume"}
        ]
        assert len(settled) == 1, events
        # Not before its lease ran out (heartbeats come every third of it).
        settled_at = datetime.fromisoformat(settled[0]["at"].replace("Z", "+00:00"))
        assert settled_at >= killed_at + timedelta(seconds=LEASE / 2)
        assert events[-1]["to_state"] == "completed"
    [row] = query(pg_url, "SELECT COUNT(*) AS n FROM instances")
    assert row["n"] == 0  # every live one left cleanly; the killed one was forgotten or swept


@pytest.mark.timeout(300)
def test_two_once_shards_and_a_service_on_one_ledger_run_nothing_twice(
    tmp_path: Path, pg_url: str
) -> None:
    write_config(tmp_path, pg_url, lease=LEASE)
    ids = write_sleep_tasks(tmp_path, 40, 0.2)
    with ExitStack() as stack:
        service = started(tmp_path, pg_url, "service")
        stack.callback(killed, service)
        shards = [
            omni(tmp_path, "run", "--once", "--shard", f"{k}/2", log=f"shard{k}.log")
            for k in (1, 2)
        ]
        for shard in shards:
            stack.callback(killed, shard)
        assert [shard.wait(120) for shard in shards] == [0, 0]
        wait_until(lambda: states(pg_url)["completed"] == 40, timeout=120, what="all 40")
        assert stopped(service) == 0

    assert_each_completed_once(tmp_path, pg_url, ids)
    claims = query(
        pg_url,
        "SELECT run_id, COUNT(*) AS n FROM events WHERE to_state = 'dispatching' GROUP BY run_id",
    )
    assert {row["n"] for row in claims} == {1}  # each run claimed once, by one process
