"""`omni run --once --commit / --push BRANCH`, `prune`, `init`, `report` on real git
repositories in temp folders, with a local bare repository as `origin` (no network)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from runner.app.scaffold import Outcome, init
from runner.core.errors import GitOpsError
from runner.defs.configload import load_config
from runner.defs.tasks import load_tasks
from runner.gitops.carry import BranchReport
from runner.gitops.prbody import render
from runner.gitops.prune import prune
from runner.gitops.workspace import GitWorkspace
from runner.state.resultcheck import ResultCheck
from runner.state.store import Store
from tests.support.cli import run_omni
from tests.support.git import IDENTITY, git

if TYPE_CHECKING:
    import subprocess

pytestmark = pytest.mark.integration

T0 = "2026-11-21T10:05:00Z"


def omni(
    cwd: Path, *args: str, now: str = T0, state: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "OMNI_NOW": now,
        "OMNI_STATE": str(state or cwd.parent / f"{cwd.name}-state.db"),
        **IDENTITY,
    }
    done = run_omni(cwd, *args, env=env)
    # Messages are checked as text, whatever the terminal width wrapped.
    done.stderr = " ".join(done.stderr.split())
    return done


def files_on(repo: Path, ref: str, folder: str = "results") -> list[str]:
    listed = git(repo, "ls-tree", "-r", "--name-only", ref, "--", folder)
    return [line for line in listed.splitlines() if line]


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare `origin` holding a repository with task files on `main`."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    tasks = seed / "tasks"
    tasks.mkdir()
    (tasks / "hello.yaml").write_text("tool: echo\nargs: {text: hello}\n")
    (tasks / "hourly.yaml").write_text("tool: echo\nargs: {text: tick}\nschedule: every 1h\n")
    (tasks / "writer.yaml").write_text(
        "tool: write_file\nargs: {path: notes/out.txt, content: written by a task}\n"
    )
    (seed / "README.md").write_text("tasks\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "tasks")
    git(seed, "push", "-q", str(bare), "main")
    return bare


def clone(remote: Path, name: str) -> Path:
    target = remote.parent / name
    git(remote.parent, "clone", "-q", str(remote), str(target))
    return target


def test_push_puts_only_results_on_the_branch(remote: Path) -> None:
    work = clone(remote, "work")
    head = git(work, "rev-parse", "HEAD")
    done = omni(work, "run", "--once", "--push", "omni/results")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "pushed to origin" in done.stdout
    on_branch = files_on(remote, "omni/results")
    assert {p.split("/")[1] for p in on_branch} == {"hello", "hourly", "writer"}
    assert len(on_branch) == 6  # .json and .md of each run
    # A file a task wrote in the checkout is never committed: only results/ is.
    assert files_on(remote, "omni/results", "notes") == []
    # main and the checkout are untouched: HEAD, index and tracked files as they were.
    assert git(remote, "rev-parse", "main") == head
    assert git(work, "rev-parse", "HEAD") == head
    assert git(work, "status", "--porcelain", "--untracked-files=no") == ""
    assert git(remote, "rev-parse", "omni/results^") == head

    report = omni(work, "report", "--base", "main", "--branch", "omni/results")
    assert report.returncode == 0, report.stderr
    assert "**3 completed**" in report.stdout
    assert "| `hourly` | 2026-11-21T10:00:00.000Z |" in report.stdout

    # A fresh clone (a new CI machine, no state database) later in the same hour:
    # the branch is its memory, so nothing is due and nothing changes.
    fresh = clone(remote, "fresh")
    again = omni(fresh, "run", "--once", "--push", "omni/results", now="2026-11-21T10:50:00Z")
    assert again.returncode == 0, again.stderr + again.stdout
    assert len(list((fresh / "results").rglob("*.json"))) == 3  # copied from the branch
    assert files_on(remote, "omni/results") == on_branch
    assert files_on(remote, "omni/results", "notes") == []
    # Nothing new at all: no commit.
    tip = git(remote, "rev-parse", "omni/results")
    third = omni(fresh, "run", "--once", "--push", "omni/results", now="2026-11-21T10:55:00Z")
    assert "nothing new to commit" in third.stdout
    assert git(remote, "rev-parse", "omni/results") == tip


def test_commit_on_the_current_branch(remote: Path) -> None:
    work = clone(remote, "work")
    done = omni(work, "run", "--once", "--commit", "--task", "hello")
    assert done.returncode == 0, done.stderr + done.stdout
    assert git(work, "log", "-1", "--format=%s") == "omni: 1 run(s), 1 completed, 0 failed"
    assert len(files_on(work, "HEAD")) == 2
    assert git(work, "status", "--porcelain") == ""  # the index follows the new commit


def test_an_unreachable_remote_keeps_the_results_for_the_next_push(remote: Path) -> None:
    work = clone(remote, "work")
    git(work, "remote", "set-url", "origin", str(remote.parent / "nowhere.git"))
    done = omni(work, "run", "--once", "--push", "omni/results", "--task", "hello")
    assert done.returncode == 1
    assert "cannot reach remote 'origin'" in done.stderr
    assert "committed on the local branch 'omni/results'" in done.stderr
    assert len(list((work / "results" / "hello").glob("*.json"))) == 1
    assert len(files_on(work, "omni/results")) == 2
    # Reachable again: the next --push sends the earlier commit.
    git(work, "remote", "set-url", "origin", str(remote))
    later = omni(work, "run", "--once", "--push", "omni/results", "--task", "hello")
    assert later.returncode == 0, later.stderr
    assert len(files_on(remote, "omni/results")) == 2


def test_a_non_fast_forward_push_is_a_clear_error(remote: Path) -> None:
    first = clone(remote, "first")
    assert omni(first, "run", "--once", "--push", "omni/results", "--task", "hello").returncode == 0
    other = clone(remote, "other")
    # A local omni/results that went its own way (not a descendant of origin's).
    git(other, "checkout", "-q", "-b", "omni/results")
    (other / "mine.txt").write_text("local work\n")
    git(other, "add", "mine.txt")
    git(other, "commit", "-q", "-m", "local only")
    git(other, "checkout", "-q", "main")
    done = omni(other, "run", "--once", "--push", "omni/results", "--task", "hourly")
    assert done.returncode == 1
    assert "rejected: not a fast-forward" in done.stderr
    assert len(list((other / "results" / "hourly").glob("*.json"))) == 1


def test_a_dirty_tree_is_left_alone_and_only_results_are_committed(remote: Path) -> None:
    work = clone(remote, "work")
    (work / "README.md").write_text("my unfinished edit\n")
    done = omni(work, "run", "--once", "--push", "omni/results", "--task", "hello")
    assert done.returncode == 0, done.stderr + done.stdout
    changed = git(remote, "diff", "--name-only", "main", "omni/results").splitlines()
    assert [p.split("/")[0] for p in changed] == ["results", "results"]
    assert (work / "README.md").read_text() == "my unfinished edit\n"


def test_git_problems_found_before_running(tmp_path: Path, remote: Path) -> None:
    (tmp_path / "plain" / "tasks").mkdir(parents=True)
    (tmp_path / "plain" / "tasks" / "t.yaml").write_text("tool: echo\n")
    outside = omni(tmp_path / "plain", "run", "--once", "--commit")
    assert outside.returncode == 1
    assert "not inside a git repository" in outside.stderr
    assert not (tmp_path / "plain" / "results").exists()
    for command in ("publish", "report"):  # named too: not only --commit needs a repository
        done = omni(tmp_path / "plain", command)
        assert done.returncode == 1
        assert "not inside a git repository; omni publish, omni report, --commit" in done.stderr
    work = clone(remote, "work")
    git(work, "checkout", "-q", "--detach")
    detached = omni(work, "run", "--once", "--commit")
    assert detached.returncode == 1
    assert "HEAD is detached" in detached.stderr
    git(work, "remote", "remove", "origin")
    no_remote = omni(work, "run", "--once", "--push", "omni/results")
    assert "--push needs a remote named 'origin'" in no_remote.stderr


def write_result(results: Path, task_id: str, run: int, state: str = "completed") -> None:
    folder = results / task_id
    folder.mkdir(parents=True, exist_ok=True)
    run_id = f"01K{run:023d}"
    data = {"task_id": task_id, "run_id": run_id, "task_hash": "h", "slot": None, "state": state}
    times = {"attempt": 1, "started_at": T0, "finished_at": T0, "duration_s": 0.1}
    (folder / f"{run_id}.json").write_text(json.dumps(data | times))
    (folder / f"{run_id}.md").write_text(f"# {task_id}\n")


def test_a_job_that_pushed_in_between_is_built_upon(remote: Path) -> None:
    """Two shards of a matrix push the same branch: the later one rebuilds and retries."""
    a, b = clone(remote, "a"), clone(remote, "b")
    shard_a = GitWorkspace.open(a, results=a / "results")
    shard_b = GitWorkspace.open(b, results=b / "results")
    ready_a = shard_a.prepare("omni/results", push=True)
    ready_b = shard_b.prepare("omni/results", push=True)
    write_result(a / "results", "from-a", 1)
    write_result(b / "results", "from-b", 2)
    assert shard_a.publish(ready_a, "omni: shard a\n", result_files(a)).pushed
    published = shard_b.publish(ready_b, "omni: shard b\n", result_files(b))
    assert published.pushed
    names = files_on(remote, "omni/results")
    assert {n.split("/")[1] for n in names} == {"from-a", "from-b"}
    assert git(remote, "rev-list", "--count", "main..omni/results") == "2"


def result_files(work: Path) -> list[str]:
    root = work / "results"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_prune_keeps_the_newest_per_task_on_disk_and_on_the_branch(remote: Path) -> None:
    work = clone(remote, "work")
    results = work / "results"
    for run in range(1, 6):
        write_result(results, "busy", run, "failed" if run == 5 else "completed")
    write_result(results, "quiet", 9)
    git(work, "add", "results")
    git(work, "commit", "-q", "-m", "old results")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/omni/results")
    git(work, "reset", "-q", "--hard", "origin/main")
    assert "would remove 0" in omni(work, "prune", "--keep", "1", "--dry-run").stdout
    dry = omni(work, "prune", "--keep", "1", "--dry-run", "--push", "omni/results")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 3 result file(s)" in dry.stdout
    done = omni(work, "prune", "--keep", "1", "--push", "omni/results", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["removed"]) == 3
    assert report["git"]["pushed"] is True
    kept = sorted(Path(n).stem for n in files_on(remote, "omni/results") if n.endswith(".json"))
    # The newest (failed) and the newest completed of "busy", and "quiet".
    assert kept == [f"01K{4:023d}", f"01K{5:023d}", f"01K{9:023d}"]


def test_report_lists_what_failed_waits_and_completed() -> None:
    results = [
        {"task_id": "a", "run_id": "2", "state": "failed", "error": "boom | bad\nline"},
        {"task_id": "b", "run_id": "1", "state": "completed", "slot": "s", "output": "ok"},
        {"task_id": "c", "run_id": "3", "state": "waiting", "error": "no model"},
    ]
    body = render(BranchReport(results=results), base="main", branch="omni/results")
    assert "**1 failed**, **1 waiting**, **1 completed**" in body
    assert body.index("### ❌ Failed (1)") < body.index("### ⏸️ Waiting (1)")
    assert "boom \\| bad line" in body
    assert "Nothing new" in render(BranchReport(), base="main", branch="omni/results")


def test_report_links_results_lists_waiting_runs_and_cuts_at_a_word() -> None:
    error = "cannot read config: no such file or directory " * 6
    results = BranchReport(
        results=[{"task_id": "a/b", "run_id": "R1", "state": "failed", "error": error}]
    )
    pending = [
        {"task_id": "think", "run_id": "R2", "state": "idle", "note": "waits for a model"},
    ]
    body = render(
        results,
        base="main",
        branch="omni/results",
        pending=pending,
        link=lambda path: f"https://github.com/o/r/blob/omni/results/{path}",
    )
    assert "[`R1`](https://github.com/o/r/blob/omni/results/results/a/b/R1.md)" in body
    [row] = [line for line in body.splitlines() if line.startswith("| `a/b`")]
    assert row.endswith(" directory cannot read… |")  # 200 characters, cut at a word
    assert "fil…" not in row and "director…" not in row
    assert "### ⏳ Not run yet (1)" in body
    assert "| `think` | `R2` | idle | waits for a model |" in body
    plain = render(results, base="main", branch="omni/results")
    assert "| `results/a/b/R1.md` |" in plain


def test_branch_results_names_a_missing_ref(remote: Path) -> None:
    work = clone(remote, "work")
    workspace = GitWorkspace.open(work, results=work / "results")
    with pytest.raises(GitOpsError, match="no branch or commit named 'omni/results'"):
        workspace.branch_results("main", "omni/results")


def test_init_scaffolds_and_never_overwrites(tmp_path: Path) -> None:
    made = init(tmp_path)
    assert [m.outcome for m in made] == [Outcome.CREATED] * 4
    load_config(tmp_path / "config.yaml", {}, required=True)
    loaded = load_tasks(tmp_path / "tasks")
    assert not loaded.problems
    assert sorted(t.id for t in loaded.tasks) == ["hello", "hourly"]
    (tmp_path / "config.yaml").write_text("# mine\n")
    assert {m.outcome for m in init(tmp_path)} == {Outcome.KEPT}
    assert (tmp_path / "config.yaml").read_text() == "# mine\n"
    assert {m.outcome for m in init(tmp_path, force=True)} == {Outcome.REPLACED}
    assert (tmp_path / "config.yaml").read_text() != "# mine\n"


def test_prune_deletes_the_rows_of_what_it_removes(tmp_path: Path) -> None:
    results, state = tmp_path / "results", tmp_path / "state.db"
    with Store(state) as store:
        for run in range(1, 4):
            write_result(results, "busy", run)
            store.create_run("busy", "h", max_attempts=1, run_id=f"01K{run:023d}")
        write_result(results, "busy", 4, "waiting")  # an unfinished run is never pruned
        store.create_run("busy", "h", max_attempts=1, run_id=f"01K{4:023d}")
    done = prune(results, state, 1, ResultCheck(datetime.now(UTC)))
    assert [f.run_id for f in done.removed] == [f"01K{1:023d}", f"01K{2:023d}"]
    assert done.rows_deleted == 2
    with Store(state) as store:
        assert sorted(r.run_id for r in store.runs()) == [f"01K{3:023d}", f"01K{4:023d}"]
    assert not (results / "busy" / f"01K{1:023d}.md").exists()
    with pytest.raises(ValueError, match="at least 1"):
        prune(results, state, 0, ResultCheck(datetime.now(UTC)))
