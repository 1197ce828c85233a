"""One run fails, the pass goes on: write errors (a name too long, a full disk, a
read-only results folder), a run moved elsewhere, files that are not regular files, and
a state database that is not one or is damaged. Never a traceback, never a run left
in flight, never half a result."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from runner.core.redaction import Redactor
from runner.core.states import IN_FLIGHT, RunState
from runner.defs.config import BUILTIN, Config
from runner.defs.tasks import Task, TaskSpec, task_hash
from runner.dispatch.dispatcher import Dispatcher
from runner.reach.executors import ExecutorPool
from runner.state.store import Store

if TYPE_CHECKING:
    from collections.abc import Iterator

    from runner.reach.tools import ToolOutcome

pytestmark = pytest.mark.integration


def omni(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`omni ARGS` in ``cwd``; a command that hangs fails the test after ``timeout``."""
    done = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), "COLUMNS": "200"},
        timeout=timeout,
        check=False,
    )
    done.stderr = " ".join(done.stderr.split())
    return done


@contextmanager
def mounted(folder: Path, options: str) -> Iterator[None]:
    """A tmpfs at ``folder`` with ``options``; skips the test where none can be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def rows(state: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(state) as db:
        found = db.execute("SELECT task_id, state, error FROM runs").fetchall()
    return {task_id: (run_state, error) for task_id, run_state, error in found}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "small.yaml").write_text("tool: echo\nargs: {text: hi}\n")
    (tasks / "tiny.yaml").write_text("tool: echo\nargs: {text: ok}\n")
    return tmp_path


def no_half_results(results: Path) -> None:
    """Every .md has its .json and the other way round; no temp file is left."""
    names = [p for p in results.rglob("*") if p.is_file()]
    assert not [p for p in names if p.name.endswith(".tmp")]
    stems = {(p.parent, p.stem, p.suffix) for p in names}
    for folder, stem, suffix in stems:
        other = ".md" if suffix == ".json" else ".json"
        assert (folder, stem, other) in stems, f"{folder / stem}{suffix} is alone"


def test_a_full_disk_fails_the_run_it_hits_and_the_others_complete(project: Path) -> None:
    (project / "tasks" / "big.yaml").write_text("tool: echo\nargs: {text: " + "x" * 60_000 + "}\n")
    results = project / "results"
    with mounted(results, "size=64k"):
        done = omni(project, "run", "--once")
        no_half_results(results)
    assert done.returncode == 1, done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert "ExceptionGroup" not in done.stderr
    found = rows(project / ".omni" / "state.db")
    assert found["big"] == ("failed", "result file not written: No space left on device")
    assert found["small"][0] == found["tiny"][0] == "completed"


def test_a_read_only_results_folder_fails_every_run_and_leaves_none_in_flight(
    project: Path,
) -> None:
    results = project / "results"
    with mounted(results, "ro,size=64k"):
        done = omni(project, "run", "--once")
    assert done.returncode == 1, done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert "ExceptionGroup" not in done.stderr
    found = rows(project / ".omni" / "state.db")
    assert found == {
        "small": ("failed", "result file not written: Read-only file system"),
        "tiny": ("failed", "result file not written: Read-only file system"),
    }


def test_an_id_part_too_long_for_a_folder_is_refused_before_running(project: Path) -> None:
    (project / "tasks" / "long.yaml").write_text(f"id: x/{'a' * 300}\ntool: echo\n")
    checked = omni(project, "validate")
    assert checked.returncode == 1
    assert "tasks/long.yaml:1: id: id is 302 characters long; at most 200 are allowed" in (
        checked.stdout
    )
    (project / "tasks" / "long.yaml").write_text(f"id: x/{'a' * 150}\ntool: echo\n")
    checked = omni(project, "validate")
    assert "tasks/long.yaml:1: id: an id part is 150 characters long; at most 100" in (
        " ".join(checked.stdout.split())
    )
    done = omni(project, "run", "--once", "--json")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert {r["task_id"]: r["state"] for r in json.loads(done.stdout)["runs"]} == {
        "small": "completed",
        "tiny": "completed",
    }


class Pool(ExecutorPool):
    """The real pool; after a call to ``moved`` answers, another process (a second
    connection to the state file) moves that run, as a second runner could."""

    def __init__(self, *args: Any, state: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state = state

    async def call_tool(self, executor: str, tool: str, *args: Any, **kwargs: Any) -> ToolOutcome:
        outcome = await super().call_tool(executor, tool, *args, **kwargs)
        run_id = kwargs["meta"]["run_id"]
        if kwargs["meta"]["task_id"] == "moved":
            with Store(self._state) as other:
                other.transition(run_id, RunState.FAILED, error="moved")
        if kwargs["meta"]["task_id"] == "taken":  # a lease ran out; another runner took it
            with Store(self._state) as other:
                idle = other.transition(run_id, RunState.IDLE, detail="lease expired")
                other.claim(idle, executor=BUILTIN, tool=tool, detail="taken over")
        return outcome


def task(task_id: str) -> Task:
    spec = TaskSpec(executor=BUILTIN, tool="echo", args={"text": task_id})
    return Task(task_id, Path(f"{task_id}.yaml"), spec, task_hash(spec, task_id))


async def test_runs_that_cannot_be_recorded_fail_alone(tmp_path: Path) -> None:
    """A name too long for the file system (validation bypassed) and a run another process
    moved: each ends on its own; the others complete; run_all raises nothing."""
    state, results = tmp_path / "state.db", tmp_path / "results"
    items = [task("a" * 300), task("moved"), task("fine"), task("taken")]
    async with Pool({}, workspace=tmp_path, state=state) as pool:
        with Store(state) as store:
            runs = [(t, store.create_run(t.id, t.task_hash, max_attempts=2)) for t in items]
            dispatcher = Dispatcher(
                store=store, pool=pool, config=Config(), results_root=results, redactor=Redactor([])
            )
            finished = await dispatcher.run_all(runs)
            final = {run.task_id: store.get_run(run.run_id) for _, run in runs}
    long_run, moved, fine, taken = (final[t.id] for t in items)
    assert long_run is not None
    assert (long_run.state, long_run.error) == (
        "failed",
        "result file not written: File name too long",
    )
    assert moved is not None
    assert (moved.state, moved.error) == ("failed", "moved")
    assert finished[1].note.startswith("StaleRunError: ")
    assert fine is not None
    assert fine.state == "completed"
    # The run another runner took over stays its: executing, its attempt, not failed.
    assert taken is not None
    assert (taken.state, taken.attempt, taken.error) == ("executing", 2, None)
    assert finished[3].note.startswith("StaleRunError: ")
    in_flight = [r.task_id for r in final.values() if r is not None and r.state in IN_FLIGHT]
    assert in_flight == ["taken"]
    no_half_results(results)


def test_a_fifo_task_file_is_refused_not_waited_on(project: Path) -> None:
    fifo = project / "tasks" / "fifo.yaml"
    os.mkfifo(fifo)
    line = "tasks/fifo.yaml:1: (file): not a regular file (a FIFO); only files are read"
    routed = omni(project, "route", "tasks/fifo.yaml")
    assert routed.returncode == 1
    assert line.removeprefix("tasks/") in routed.stderr
    checked = omni(project, "validate")
    assert checked.returncode == 1
    assert line in checked.stdout
    done = omni(project, "run", "--once")
    assert done.returncode == 1
    assert line in done.stdout + done.stderr
    assert rows(project / ".omni" / "state.db")["small"][0] == "completed"


def test_config_files_that_are_not_regular_or_caps_that_are_no_caps_are_refused(
    project: Path,
) -> None:
    config = project / "config.yaml"
    config.write_text("mcp_servers_from: /dev/zero\n")
    done = omni(project, "validate")
    assert done.returncode == 2
    assert "mcp_servers_from: /dev/zero: not a regular file (a character device)" in done.stderr
    config.write_text("limits: {task_file_bytes: 100000000000000}\n")
    done = omni(project, "validate")
    assert done.returncode == 2
    assert "limits.task_file_bytes: Input should be less than or equal to 67108864" in (done.stderr)
    assert "MemoryError" not in done.stderr
    config.unlink()
    os.mkfifo(config)
    done = omni(project, "validate")
    assert done.returncode == 2
    assert "config.yaml:1: (file): not a regular file (a FIFO)" in done.stderr


def test_a_state_file_that_is_no_database_is_refused_not_reset(project: Path) -> None:
    state = project / ".omni" / "state.db"
    state.parent.mkdir()
    state.touch()
    done = omni(project, "run", "--once")
    assert done.returncode == 1
    assert "the state file is empty (0 bytes)" in done.stderr
    assert "delete it to start a new state database" in done.stderr
    assert state.stat().st_size == 0
    assert not (project / "results").exists()
    state.write_bytes(b"my notes, not a database\n" * 10)
    done = omni(project, "status")
    assert done.returncode == 1
    assert "not a usable SQLite state database" in done.stderr
    assert state.read_bytes() == b"my notes, not a database\n" * 10


def test_a_damaged_events_page_is_a_clear_error_mid_run(project: Path) -> None:
    first = omni(project, "run", "--once")
    assert first.returncode == 0, first.stderr
    state = project / ".omni" / "state.db"
    with sqlite3.connect(state) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        [root] = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()
    db.close()
    with state.open("r+b") as stream:
        stream.seek((root - 1) * page_size)
        stream.write(b"\xff" * page_size)
    (project / "tasks" / "new.yaml").write_text("tool: echo\nargs: {text: new}\n")
    done = omni(project, "run", "--once")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "the state database is damaged (database disk image is malformed)" in done.stderr
    assert "restore it from a backup, or move it aside" in done.stderr
