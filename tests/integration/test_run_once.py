"""`omni run --once` end to end: real built-in executor over stdio, real SQLite, files."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

import pytest

from runner.state.statelock import StateLock
from tests.support.cli import run_omni

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

pytestmark = pytest.mark.integration


def omni(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_omni(cwd, *args)


def results_of(root: Path, task_id: str) -> list[dict]:
    folder = root / "results" / task_id
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def rows(root: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(root / ".omni" / "state.db") as db:
        return db.execute("select task_id, state, attempt from runs order by task_id").fetchall()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    tasks = tmp_path / "tasks"
    (tasks / "nested").mkdir(parents=True)
    (tasks / "hello.yaml").write_text("tool: echo\nargs: {text: hello world}\n")
    (tasks / "nested" / "write.yaml").write_text(
        "tool: write_file\nargs: {path: out/note.txt, content: written by omni}\n"
    )
    (tasks / "think.yaml").write_text("prompt: summarise the repo\n")
    return tmp_path


def test_first_run_completes_tasks_and_second_run_does_nothing(project: Path) -> None:
    first = omni(project, "run", "--once")
    assert first.returncode == 0, first.stderr + first.stdout
    [hello] = results_of(project, "hello")
    assert hello["state"] == "completed"
    assert hello["output"] == "hello world"
    assert hello["executor"] == "builtin"
    assert hello["attempt"] == 1
    assert (project / "out" / "note.txt").read_text() == "written by omni"
    [write] = results_of(project, "nested/write")
    assert write["state"] == "completed"
    assert rows(project) == [
        ("hello", "completed", 1),
        ("nested/write", "completed", 1),
        ("think", "idle", 0),  # no model configured: the prompt task waits
    ]
    assert "prompt task" in first.stdout

    second = omni(project, "run", "--once")
    assert second.returncode == 0
    assert len(results_of(project, "hello")) == 1
    assert "2 already done for their content" in second.stdout
    assert len(rows(project)) == 3


def test_force_and_task_rerun_one_task(project: Path) -> None:
    assert omni(project, "run", "--once").returncode == 0
    again = omni(project, "run", "--once", "--task", "hello", "--force", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert [r["task_id"] for r in report["runs"]] == ["hello"]
    assert len(results_of(project, "hello")) == 2


def test_a_changed_one_off_runs_again(project: Path) -> None:
    assert omni(project, "run", "--once").returncode == 0
    (project / "tasks" / "hello.yaml").write_text("tool: echo\nargs: {text: changed}\n")
    assert omni(project, "run", "--once").returncode == 0
    outputs = [r["output"] for r in results_of(project, "hello")]
    assert sorted(outputs) == ["changed", "hello world"]


def test_failures_are_recorded_and_others_complete(project: Path) -> None:
    tasks = project / "tasks"
    (tasks / "unknown-tool.yaml").write_text("tool: no_such_tool\n")
    (tasks / "escape.yaml").write_text("tool: read_file\nargs: {path: ../../etc/passwd}\n")
    (tasks / "exit1.yaml").write_text("tool: run\nargs: {command: ['false']}\nretries: 1\n")
    (tasks / "ghost.yaml").write_text("tool: echo\nexecutor: ghost\n")
    (tasks / "broken.yaml").write_text("tool: echo\nbogus: 1\n")
    done = omni(project, "run", "--once")
    assert done.returncode == 1
    assert "tasks/broken.yaml:2: bogus: unknown key" in done.stderr
    assert results_of(project, "hello")[0]["state"] == "completed"
    unknown = results_of(project, "unknown-tool")[0]
    assert unknown["state"] == "failed"
    assert "no_such_tool" in unknown["error"]
    assert "outside the workspace" in results_of(project, "escape")[0]["error"]
    exit1 = results_of(project, "exit1")[0]
    assert (exit1["state"], exit1["attempt"]) == ("failed", 2)  # retried once
    assert "not configured" in results_of(project, "ghost")[0]["error"]
    assert ("exit1", "failed", 2) in rows(project)
    # A failed one-off is not run again for the same content: no new results, no spend.
    again = omni(project, "run", "--once")
    assert len(results_of(project, "exit1")) == 1
    assert "failed for this content" in again.stdout


def test_shards_split_tasks_without_overlap(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for i in range(12):
        (tasks / f"t{i}.yaml").write_text(f"tool: echo\nargs: {{text: '{i}'}}\n")
    seen: list[str] = []
    for k in (1, 2, 3):
        done = omni(tmp_path, "run", "--once", "--shard", f"{k}/3", "--json")
        assert done.returncode == 0, done.stderr
        seen += [r["task_id"] for r in json.loads(done.stdout)["runs"]]
    assert sorted(seen) == sorted(f"t{i}" for i in range(12))


def test_bad_shard_is_a_usage_error(project: Path) -> None:
    done = omni(project, "run", "--once", "--shard", "4/3")
    assert done.returncode == 2
    assert "--shard 4/3" in done.stderr


def test_run_once_refuses_a_state_file_another_runner_holds(project: Path) -> None:
    with StateLock(project / ".omni" / "state.db", "service"):
        busy = omni(project, "run", "--once")
    assert busy.returncode == 1
    assert "another omni service (pid" in busy.stderr
    assert not (project / "results").exists()
    assert omni(project, "run", "--once").returncode == 0  # released: runs normally


def test_ci_runs_across_a_clock_change_from_result_files_alone(tmp_path: Path) -> None:
    """`run --once` as the workflow runs it: a fresh state file every time, only the
    results folder carried over, the clock from OMNI_NOW. Berlin springs forward on
    2026-03-29 (02:00 CET -> 03:00 CEST)."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    berlin = "timezone: Europe/Berlin\ntool: echo\nargs: {text: x}\n"
    (tasks / "nightly.yaml").write_text("schedule: '30 2 * * *'\n" + berlin)
    (tasks / "even.yaml").write_text("schedule: '0 */2 * * *'\n" + berlin)
    runs = ["2026-03-28T01:35:00Z", "2026-03-29T00:50:00Z", "2026-03-29T01:05:00Z"]
    for n, now in enumerate([*runs, "2026-03-29T02:05:00Z"]):
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "OMNI_NOW": now,
            "OMNI_STATE": str(tmp_path / f"machine-{n}" / "state.db"),
        }
        done = run_omni(tmp_path, "run", "--once", env=env)
        assert done.returncode == 0, done.stderr + done.stdout
    # 02:30 did not exist on the 29th: it ran at the jump, 03:00 CEST (01:00 UTC).
    assert [r["slot"] for r in results_of(tmp_path, "nightly")] == [
        "2026-03-28T01:30:00.000Z",
        "2026-03-29T01:00:00.000Z",
    ]
    # A wildcard job follows the clock: 00:00 CET, then 04:00 CEST; nothing for 02:00.
    assert [r["slot"] for r in results_of(tmp_path, "even")] == [
        "2026-03-28T01:00:00.000Z",
        "2026-03-28T23:00:00.000Z",
        "2026-03-29T02:00:00.000Z",
    ]
