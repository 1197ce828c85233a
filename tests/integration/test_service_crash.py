"""`omni run` as a real process: killed with SIGKILL at random moments while 100 tasks
run, restarted, ten times over; and stopped with SIGTERM, also at any moment of its
start-up. Every task completes exactly once, none is lost, and result files and rows
agree."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.service import echo_task, results_of, rows

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration


def write_project(root: Path, count: int, command: list[str], **service: float) -> None:
    tasks = root / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (tasks / f"t{i:03}.yaml").write_text(
            f"tool: run\nargs: {{command: {json.dumps(command)}}}\ndescription: task {i}\n"
        )
    config = {"service": {"settle_ms": 50, **service}, "dispatch": {"concurrency": 4}}
    (root / "config.yaml").write_text(json.dumps(config))


@contextmanager
def service(root: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    """``python -m runner run ARGS`` in ``root``; killed if still running at the end."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), **env}
    with (root / "service.log").open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "run", *args],
            cwd=root,
            env=env,
            text=True,
            stdout=log,
            stderr=log,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def catches(pid: int, sig: signal.Signals) -> bool:
    """True once process ``pid`` has a handler for ``sig`` (``/proc/PID/status``)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (sig - 1) & 1)


def signal_at(
    proc: subprocess.Popen[str], started: float, delay: float, sig: signal.Signals
) -> None:
    """Send ``sig`` ``delay`` s after ``started``; on a machine too busy to have even
    started Python's first lines by then, as soon as the process catches it (at most
    0.5 s later: a process that catches it only later is not ready in time)."""
    time.sleep(max(0.0, started + delay - time.monotonic()))
    deadline = time.monotonic() + 0.5
    while not catches(proc.pid, sig) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(sig)


def stop_when_catching(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Send ``sig`` once the process catches it: a service whose work was already done
    before it started may be asked to stop while Python is still starting."""
    wait_until(lambda: catches(proc.pid, sig), timeout=20, what=f"a handler for {sig.name}")
    proc.send_signal(sig)


def states(root: Path) -> Counter[str]:
    return Counter(row["state"] for row in rows(root))


def assert_each_completed_once(root: Path, count: int) -> None:
    """One completed row and one completed result file per task, the same run; every
    result file matches its row."""
    found = rows(root)
    by_run = {row["run_id"]: row for row in found}
    for i in range(count):
        task_id = f"t{i:03}"
        done = [r for r in found if r["task_id"] == task_id and r["state"] == "completed"]
        files = results_of(root, task_id)
        assert len(done) == 1, (task_id, [r["state"] for r in found if r["task_id"] == task_id])
        assert [(f["run_id"], f["state"]) for f in files] == [(done[0]["run_id"], "completed")]
        for result in files:
            assert by_run[result["run_id"]]["state"] == result["state"]
    # Nothing is left in flight or waiting to run.
    assert set(states(root)) <= {"completed", "failed"}


@pytest.mark.soak
def test_kill_9_at_random_moments_ten_times_loses_and_repeats_nothing(tmp_path: Path) -> None:
    count = 100
    write_project(tmp_path, count, ["sleep", "0.2"])
    rng = random.Random(20261121)
    kills = 0
    for round_ in range(10):
        before = states(tmp_path)["completed"]
        if before == count:
            break
        with service(tmp_path) as proc:
            if round_ % 4 != 3:
                # Mostly mid-run: once this round has finished a run, at a random moment.
                wait_until(
                    lambda done=before: states(tmp_path)["completed"] > done,
                    timeout=20,
                    what="this round's first run",
                )
            time.sleep(rng.uniform(0.0, 0.5))  # every fourth round: during start-up
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
    assert kills == 10
    with service(tmp_path) as proc:
        wait_until(lambda: states(tmp_path)["completed"] == count, timeout=40, what="all runs")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert_each_completed_once(tmp_path, count)
    log = (tmp_path / "service.log").read_text()
    assert log.count("resumed after an interrupted run") >= 5  # kills landed mid-run


def test_sigterm_lets_running_tasks_finish_and_leaves_the_rest_idle(tmp_path: Path) -> None:
    count = 12
    write_project(tmp_path, count, ["sleep", "0.8"], shutdown_grace=10)
    with service(tmp_path) as proc:
        wait_until(lambda: states(tmp_path)["executing"] == 4, timeout=20, what="4 in flight")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    after = states(tmp_path)
    assert after["completed"] >= 4  # the four in flight finished within the grace
    assert after["executing"] == after["dispatching"] == after["failed"] == 0
    assert after["completed"] + after["idle"] == count
    assert after["idle"] > 0  # the rest waited, idle, for the next start
    with service(tmp_path) as proc:
        wait_until(lambda: states(tmp_path)["completed"] == count, timeout=30, what="the rest")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    assert_each_completed_once(tmp_path, count)


def test_sigterm_past_the_grace_returns_running_tasks_to_idle(tmp_path: Path) -> None:
    write_project(tmp_path, 2, ["sleep", "3"], shutdown_grace=0.2)
    (tmp_path / "tasks" / "quick.yaml").write_text(echo_task("quick"))
    with service(tmp_path) as proc:
        wait_until(lambda: states(tmp_path)["executing"] == 2, timeout=20, what="2 in flight")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert time.monotonic() - started < 5
    assert [r["state"] for r in rows(tmp_path) if r["task_id"] != "quick"] == ["idle", "idle"]
    assert "interrupted by shutdown" in (tmp_path / "service.log").read_text()
    second = service(tmp_path)
    with second as proc:
        wait_until(lambda: states(tmp_path)["completed"] == 3, timeout=30, what="the two")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert_each_completed_once(tmp_path, 2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("delay", "sig"),
    [(0.1, signal.SIGTERM), (0.5, signal.SIGTERM), (1.5, signal.SIGTERM), (0.5, signal.SIGINT)],
)
def test_a_stop_signal_during_start_up_ends_cleanly(
    tmp_path: Path, delay: float, sig: signal.Signals
) -> None:
    write_project(tmp_path, 3, ["sleep", "0.3"])
    with service(tmp_path) as proc:
        signal_at(proc, time.monotonic(), delay, sig)
        assert proc.wait(30) == 0, (tmp_path / "service.log").read_text()
    assert "Traceback" not in (tmp_path / "service.log").read_text()
    assert set(states(tmp_path)) <= {"idle", "completed"}  # nothing left half-started
    with service(tmp_path) as proc:  # the lock is free, the rest runs
        wait_until(lambda: states(tmp_path)["completed"] == 3, timeout=30, what="all three")
        stop_when_catching(proc, signal.SIGTERM)
        assert proc.wait(20) == 0
    assert_each_completed_once(tmp_path, 3)


@pytest.mark.timeout(180)
def test_a_quick_sigterm_after_kill_9_and_restart_ends_cleanly(tmp_path: Path) -> None:
    write_project(tmp_path, 4, ["sleep", "2"])
    with service(tmp_path) as proc:
        wait_until(lambda: states(tmp_path)["executing"] == 4, timeout=20, what="4 in flight")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    for delay in (0.2, 0.8):
        with service(tmp_path) as proc:
            signal_at(proc, time.monotonic(), delay, signal.SIGTERM)
            assert proc.wait(30) == 0, (tmp_path / "service.log").read_text()
    with service(tmp_path) as proc:
        wait_until(lambda: states(tmp_path)["completed"] == 4, timeout=30, what="all four")
        stop_when_catching(proc, signal.SIGTERM)
        assert proc.wait(20) == 0
    assert_each_completed_once(tmp_path, 4)


def test_json_logs_mask_secrets_and_a_second_service_refuses_to_start(tmp_path: Path) -> None:
    write_project(tmp_path, 1, ["true"])
    (tmp_path / "tasks" / "bad.yaml").write_text("tool: echo\ntimeout: s3cr3t-value-42\n")
    with service(tmp_path, "--log-format", "json", DEPLOY_TOKEN="s3cr3t-value-42") as first:
        wait_until(lambda: states(tmp_path)["completed"] == 1, timeout=20, what="the first")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        second = subprocess.run(
            [sys.executable, "-m", "runner", "run"],
            cwd=tmp_path,
            env=env,
            text=True,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 1
        assert "another omni service" in second.stderr, second.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(20) == 0
    lines = [json.loads(line) for line in (tmp_path / "service.log").read_text().splitlines()]
    changes = [(e["from"], e["to"]) for e in lines if e.get("event") == "run"]
    assert changes == [
        (None, "idle"),
        ("idle", "dispatching"),
        ("dispatching", "executing"),
        ("executing", "completed"),
    ]
    invalid = [e["message"] for e in lines if e["level"] == "error"]
    assert len(invalid) == 1 and "bad.yaml:2: timeout:" in invalid[0], invalid
    assert "s3cr3t-value-42" not in (tmp_path / "service.log").read_text()
    assert "[redacted]" in invalid[0]


def test_once_only_options_without_once_are_a_usage_error(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--task", "x"],
        cwd=tmp_path,
        env=env,
        text=True,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "go with --once" in done.stderr
    assert not (tmp_path / ".omni").exists()  # nothing started
