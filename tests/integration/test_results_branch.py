"""The results branch is input: crafted result files and entries pushed to `omni/results`
on a real bare `origin`, then a fresh clone runs `omni run --once --push` (a CI machine
with no state database) and `omni report` (the pull request's body)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from runner.defs.tasks import load_tasks
from tests.support.cli import run_omni
from tests.support.git import IDENTITY, git, git_env
from tests.support.results import result_data

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

NOW = "2026-11-21T10:05:00Z"


def omni(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "OMNI_NOW": NOW,
        "OMNI_STATE": str(cwd.parent / f"{cwd.name}-state.db"),
        **IDENTITY,
    }
    done = run_omni(cwd, *args, env=env)
    done.stderr = " ".join(done.stderr.split())
    return done


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare `origin` whose `main` holds a one-off task and an hourly one."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    (seed / "tasks").mkdir()
    (seed / "README.md").write_text("tasks\n")
    (seed / "tasks" / "once.yaml").write_text("tool: echo\nargs: {text: once}\n")
    (seed / "tasks" / "hourly.yaml").write_text(
        "tool: echo\nargs: {text: tick}\nschedule: every 1h\n"
    )
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "tasks")
    git(seed, "push", "-q", str(bare), "main")
    return bare


def task_hash(remote: Path, task_id: str) -> str:
    """The real task_hash of a task on `main` (what an attacker can compute too)."""
    checkout = remote.parent / "seed"
    [task] = [t for t in load_tasks(checkout / "tasks").tasks if t.id == task_id]
    return task.task_hash


def result(task_id: str, task_hash: str, **fields: object) -> bytes:
    """A result file's bytes; ``fields`` override the plausible defaults."""
    return json.dumps(result_data(task_id, task_hash, output="forged", **fields)).encode()


def push_branch(
    remote: Path,
    files: dict[str, bytes],
    *,
    symlinks: dict[str, str] | None = None,
    submodules: tuple[str, ...] = (),
) -> None:
    """Push `omni/results` to `remote`: `main` plus ``files``, ``symlinks`` (path -> target)
    and submodule entries, as anyone allowed to push the branch could."""
    work = remote.parent / "attacker"
    git(remote.parent, "clone", "-q", str(remote), str(work))
    git(work, "checkout", "-q", "-b", "omni/results")
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(content)
        git(work, "add", "-f", "--", path)
    for path, target in (symlinks or {}).items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).symlink_to(target)
        git(work, "add", "-f", "--", path)
    head = git(work, "rev-parse", "HEAD")
    for path in submodules:
        git(work, "update-index", "--add", "--cacheinfo", f"160000,{head},{path}")
    git(work, "commit", "-q", "-m", "results")
    git(work, "push", "-q", "origin", "omni/results")


def fresh_run(remote: Path, name: str = "ci") -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A new CI machine: clone, then `omni run --once --push omni/results`."""
    checkout = remote.parent / name
    git(remote.parent, "clone", "-q", str(remote), str(checkout))
    return checkout, omni(checkout, "run", "--once", "--push", "omni/results", "--json")


def ran(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Task id -> final state of each run `run --once --json` made."""
    return {run["task_id"]: run["state"] for run in json.loads(done.stdout)["runs"]}


def branch_files(remote: Path, folder: str = ".") -> list[str]:
    listed = git(remote, "ls-tree", "-r", "--name-only", "omni/results", "--", folder)
    return [line for line in listed.splitlines() if line]


def report(checkout: Path) -> str:
    done = omni(checkout, "report", "--base", "main", "--branch", "omni/results")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_forged_results_do_not_suppress_a_one_off(remote: Path) -> None:
    real = task_hash(remote, "once")
    bad_id = result("once", real, run_id="not-a-run-id")
    misplaced = result("once", real)
    misplaced_id = json.loads(misplaced)["run_id"]
    push_branch(
        remote,
        {
            "results/once/not-a-run-id.json": bad_id,
            f"results/elsewhere/{misplaced_id}.json": misplaced,
            f"results/elsewhere/{misplaced_id}.md": b"# forged\n",
        },
    )
    checkout, done = fresh_run(remote)
    assert done.returncode == 0, done.stderr
    assert ran(done)["once"] == "completed"  # it ran: the forged files did not count
    assert (
        "result file results/once/not-a-run-id.json (on the branch) skipped: run_id is not a run id"
        in done.stderr
    )
    assert (
        f"results/elsewhere/{misplaced_id}.json (on the branch) skipped: its folder is not its"
        " task_id" in done.stderr
    )
    # Not copied to disk, and not carried forward on the branch.
    assert not (checkout / "results" / "elsewhere").exists()
    assert not [p for p in branch_files(remote, "results") if "elsewhere" in p]
    assert "not-a-run-id" not in " ".join(branch_files(remote, "results"))


def test_a_slot_in_the_far_future_does_not_stop_a_schedule(remote: Path) -> None:
    forged = result(
        "hourly",
        task_hash(remote, "hourly"),
        slot="9999-12-31T23:00:00Z",
        started_at="9999-12-31T23:00:00Z",
    )
    name = f"results/hourly/{json.loads(forged)['run_id']}.json"
    push_branch(remote, {name: forged})
    checkout, done = fresh_run(remote)
    assert done.returncode == 0, done.stderr
    assert ran(done)["hourly"] == "completed"
    assert "slot lies in the future" in done.stderr
    [served] = (checkout / "results" / "hourly").glob("*.json")
    assert json.loads(served.read_text())["slot"] == "2026-11-21T10:00:00.000Z"
    body = report(checkout)
    assert "### ⚠️ Not counted (1)" not in body  # the forged file is no longer on the branch
    assert name not in branch_files(remote, "results")


def test_costs_that_are_not_sane_never_count(remote: Path) -> None:
    files = {}
    names = {}
    for cost in ("NaN", "-1e9", "1e9", "Infinity", "0.5"):
        raw = result("once", "other-content", usage={"cost_usd": 0}, finished_at=NOW)
        raw = raw.replace(b'"cost_usd": 0', f'"cost_usd": {cost}'.encode())
        run_id = json.loads(raw.replace(b"NaN", b"0").replace(b"Infinity", b"0"))["run_id"]
        names[cost] = f"results/once/{run_id}.json"
        files[names[cost]] = raw
    push_branch(remote, files)
    # The pull request's body, before any run: the bad four are named, the sane one counts.
    attacker = remote.parent / "attacker"
    body = report(attacker)
    assert "**1 completed**" in body
    assert "### ⚠️ Not counted (4)" in body
    for cost in ("NaN", "-1e9", "1e9", "Infinity"):
        assert f"| `{names[cost]}` | usage.cost_usd is not a number from 0 to 1000 |" in body
    checkout, done = fresh_run(remote)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("usage.cost_usd is not a number from 0 to 1000") == 4
    status = omni(checkout, "status", "--json")
    assert json.loads(status.stdout)["spend_today_usd"] == 0.5
    kept = branch_files(remote, "results/once")
    assert names["0.5"] in kept
    assert not {names[c] for c in ("NaN", "-1e9", "1e9", "Infinity")} & set(kept)


def test_results_committed_as_a_file_is_skipped_not_a_crash(remote: Path) -> None:
    push_branch(remote, {"results": b"not a folder\n"})
    checkout, done = fresh_run(remote)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert "results (on the branch) skipped: results is not a folder here" in done.stderr
    assert set(ran(done)) == {"once", "hourly"}
    assert len([p for p in branch_files(remote, "results") if p.endswith(".json")]) == 2
    assert (checkout / "results").is_dir()


def test_symlinks_and_submodules_on_the_branch_are_skipped(remote: Path) -> None:
    real = task_hash(remote, "once")
    link_target = remote.parent / "secret.json"
    link_target.write_bytes(result("once", real))
    link_id = json.loads(link_target.read_bytes())["run_id"]
    push_branch(
        remote,
        {},
        symlinks={f"results/once/{link_id}.json": str(link_target)},
        submodules=("results/sub",),
    )
    checkout, done = fresh_run(remote)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert f"once/{link_id}.json (on the branch) skipped: a symbolic link" in done.stderr
    assert "results/sub (on the branch) skipped: a submodule" in done.stderr
    assert ran(done)["once"] == "completed"
    assert not (checkout / "results" / "once" / f"{link_id}.json").is_symlink()
    mode_of = git(remote, "ls-tree", "-r", "omni/results", "--", "results")
    assert "120000" not in mode_of
    assert "160000" not in mode_of


def test_files_outside_results_are_not_carried_forward_and_are_named(remote: Path) -> None:
    push_branch(
        remote,
        {"tasks/sneaky.yaml": b"tool: echo\nargs: {text: smuggled}\n", "README.md": b"owned\n"},
    )
    before = report(remote.parent / "attacker")
    assert "### ⚠️ Outside the results folder (2)" in before
    assert "| `tasks/sneaky.yaml` | added |" in before
    checkout, done = fresh_run(remote)
    assert done.returncode == 0, done.stderr
    assert "2 file(s) the branch changed outside results/ are not carried forward" in done.stderr
    assert "README.md, tasks/sneaky.yaml" in done.stderr
    assert "tasks/sneaky.yaml" not in branch_files(remote)
    assert git(remote, "show", "omni/results:README.md") == git(remote, "show", "main:README.md")
    body = report(checkout)
    assert "| `tasks/sneaky.yaml` | left behind: not carried forward by omni |" in body
    assert "| `README.md` | left behind: not carried forward by omni |" in body
    published = json.loads(done.stdout)["git"]
    assert published["left_behind"] == ["README.md", "tasks/sneaky.yaml"]


def test_a_broken_clone_is_a_clear_git_error(remote: Path) -> None:
    real = task_hash(remote, "once")
    forged = result("once", real)
    push_branch(remote, {f"results/once/{json.loads(forged)['run_id']}.json": forged})
    checkout = remote.parent / "ci"
    git(remote.parent, "clone", "-q", str(remote), str(checkout))
    git(checkout, "fetch", "-q", "origin", "omni/results:refs/remotes/origin/omni/results")
    # An object of the branch is lost (a broken clone): every object loose, then the
    # tree of results/once deleted.
    lost = git(checkout, "rev-parse", "origin/omni/results:results/once")
    git(checkout, "repack", "-a", "-d", "-q")
    objects = checkout / ".git" / "objects"
    for pack in (objects / "pack").glob("*.pack"):
        moved = pack.rename(remote.parent / pack.name)
        with moved.open("rb") as stream:
            subprocess.run(
                ["git", "unpack-objects", "-q"],
                stdin=stream,
                cwd=checkout,
                env=git_env(),
                check=True,
            )
    for leftover in (objects / "pack").iterdir():
        leftover.unlink()
    (objects / lost[:2] / lost[2:]).unlink()
    done = omni(checkout, "run", "--once", "--push", "omni/results")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error: reading results/ in " in done.stderr
    assert f"failed: Could not read {lost}" in done.stderr
    shown = omni(checkout, "report", "--base", "main", "--branch", "origin/omni/results")
    assert shown.returncode == 1
    assert "Traceback" not in shown.stderr
    assert f"error: git diff failed: unable to read tree {lost}" in shown.stderr
