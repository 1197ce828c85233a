"""A model-driven run's own workspace on real git repositories: what it holds, that git
works inside without reaching the real repository, and how its changes are sorted into
the proposed patch."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import pytest

from runner.core.pathglob import PathRules
from runner.reach.scratch import Refused, Scratch
from tests.support.git import git
from tests.support.planted import SECRET

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

HIDE = PathRules(["tasks", "results", "config.yaml", ".omni"])
PROTECTED = PathRules([".git", ".github", ".omni", "tasks", "results", "config.yaml"])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for rel, text in {
        "README.md": "hello\n",
        "docs/guide.md": "guide\n",
        "src/app.py": "print('app')\n",
        "tasks/nightly.yaml": "tool: echo\n",
        "results/nightly/x.json": "{}\n",
        "config.yaml": "workspace: .\n",
        ".github/workflows/ci.yml": "name: ci\n",
        ".gitignore": "*.log\n__pycache__/\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    git(root, "config", "http.extraheader", "AUTHORIZATION: basic c2VjcmV0")
    return root


def has_secret(text: str) -> bool:
    return SECRET in text


def propose(scratch: Scratch, allowed: list[str] | None) -> tuple[dict[str, str], str]:
    found = scratch.proposal(
        protected=PROTECTED,
        allowed=None if allowed is None else PathRules(allowed),
        has_secret=has_secret,
        limit=1 << 20,
    )
    refused = {r.path: r.reason.value for r in found.refused}
    return refused | {p: "accepted" for p in found.files} | {
        p: "dropped" for p in found.dropped
    }, found.patch.decode()


def test_the_scratch_holds_tracked_files_at_head_without_the_hidden_ones(repo: Path) -> None:
    (repo / "README.md").write_text("uncommitted edit\n")  # the base is HEAD, not the disk
    (repo / "untracked.txt").write_text("not tracked\n")
    with Scratch.create(repo, HIDE) as scratch:
        work = scratch.work
        files = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
        expected = [".git", ".github/workflows/ci.yml", ".gitignore", "README.md"]
        assert files == [*expected, "docs/guide.md", "src/app.py"]
        assert (work / "README.md").read_text() == "hello\n"
        assert scratch.base == git(repo, "rev-parse", "HEAD")
        # git works inside: history, a clean status, and no trace of the real config.
        assert git(work, "log", "--format=%s") == "first"
        assert git(work, "status", "--porcelain") == ""
        assert git(work, "remote") == ""
        assert "extraheader" not in git(work, "config", "--list")
    assert not scratch.root.exists()


def test_nothing_done_in_the_scratch_reaches_the_real_repository(repo: Path) -> None:
    refs = git(repo, "for-each-ref")
    config = (repo / ".git" / "config").read_text()
    with Scratch.create(repo, HIDE) as scratch:
        work = scratch.work
        (work / "src" / "app.py").write_text("print('changed')\n")
        git(work, "commit", "-q", "-am", "inside")
        git(work, "branch", "evil")
        git(work, "config", "core.fsmonitor", "touch /tmp/pwned")
        git(work, "remote", "add", "origin", str(repo))
    assert git(repo, "for-each-ref") == refs
    assert (repo / ".git" / "config").read_text() == config
    assert (repo / "src" / "app.py").read_text() == "print('app')\n"


def test_changes_are_sorted_into_the_patch_and_the_rest(repo: Path) -> None:
    with Scratch.create(repo, HIDE) as scratch:
        work = scratch.work
        (work / "docs" / "guide.md").write_text("better guide\n")
        (work / "docs" / "new.md").write_text("new page\n")
        (work / "docs" / "leak.md").write_text(f"key: {SECRET}\n")
        (work / "docs" / "link").symlink_to("/etc/passwd")
        (work / "src" / "app.py").write_text("print('changed')\n")
        (work / "tasks").mkdir()
        (work / "tasks" / "zz.yaml").write_text("tool: run\nargs: {command: id}\n")
        (work / "tasks" / "nightly.yaml").write_text("tool: run\n")
        (work / ".github" / "workflows" / "x.yml").write_text("on: push\n")
        (work / "config.yaml").write_text("sandbox: off\n")
        (work / "debug.log").write_text("ignored by .gitignore\n")
        (work / "README.md").unlink()
        (work / "vendor").mkdir()
        git(work / "vendor", "init", "-q")
        git(work / "vendor", "commit", "-q", "--allow-empty", "-m", "nested")
        sorted_, patch = propose(scratch, ["docs/**", "README.md", "vendor/**"])
    assert sorted_ == {
        "docs/guide.md": "accepted",
        "docs/new.md": "accepted",
        "README.md": "accepted",
        "docs/leak.md": Refused.SECRET.value,
        "docs/link": Refused.SYMLINK.value,
        "src/app.py": Refused.OUTSIDE.value,
        "tasks/zz.yaml": Refused.PROTECTED.value,
        "tasks/nightly.yaml": Refused.PROTECTED.value,
        ".github/workflows/x.yml": Refused.PROTECTED.value,
        "config.yaml": Refused.PROTECTED.value,
        "vendor": Refused.NESTED_REPOSITORY.value,
    }
    assert SECRET not in patch
    # The patch applies to the base in a fresh clone and gives exactly the accepted files.
    clone = repo.parent / "clone"
    git(repo.parent, "clone", "-q", str(repo), str(clone))
    (repo.parent / "p.patch").write_text(patch)
    git(clone, "apply", "--index", str(repo.parent / "p.patch"))
    assert sorted(git(clone, "diff", "--cached", "--name-only").splitlines()) == [
        "README.md",
        "docs/guide.md",
        "docs/new.md",
    ]


def test_without_pull_request_changes_are_dropped_and_protected_ones_still_refused(
    repo: Path,
) -> None:
    with Scratch.create(repo, HIDE) as scratch:
        (scratch.work / "docs" / "guide.md").write_text("edit\n")
        (scratch.work / ".omni").mkdir()
        (scratch.work / ".omni" / "state.db").write_text("x")
        sorted_, patch = propose(scratch, None)
    assert sorted_ == {"docs/guide.md": "dropped", ".omni/state.db": Refused.PROTECTED.value}
    assert patch == ""


def test_ignored_files_on_protected_paths_are_named_too(repo: Path) -> None:
    with Scratch.create(repo, HIDE) as scratch:
        (scratch.work / ".gitignore").write_text("*.log\ntasks/\n")
        (scratch.work / "tasks").mkdir()
        (scratch.work / "tasks" / "hidden.yaml").write_text("tool: run\n")
        sorted_, _ = propose(scratch, ["docs/**"])
    assert sorted_ == {".gitignore": Refused.OUTSIDE.value, "tasks": Refused.PROTECTED.value}


def test_a_rewritten_git_file_cannot_make_omni_run_a_command(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with Scratch.create(repo, HIDE) as scratch:
        work = scratch.work
        (work / ".git").unlink()
        (work / ".git").mkdir()
        (work / ".git" / "config").write_text(
            f"[core]\n\tfsmonitor = touch {marker}\n\thooksPath = /tmp\n"
            f'[filter "x"]\n\tclean = touch {marker}\n'
        )
        (work / ".gitattributes").write_text("* filter=x diff=x\n")
        (work / "docs" / "guide.md").write_text("edit\n")
        sorted_, patch = propose(scratch, ["docs/**"])
    assert not marker.exists()
    assert sorted_["docs/guide.md"] == "accepted"
    assert sorted_[".gitattributes"] == Refused.OUTSIDE.value
    assert ".git" not in sorted_  # git never sees its own folder as content
    assert "+edit" in patch


def test_a_large_patch_is_refused_whole(repo: Path) -> None:
    with Scratch.create(repo, HIDE) as scratch:
        (scratch.work / "docs" / "big.md").write_text("x\n" * 5000)
        found = scratch.proposal(
            protected=PROTECTED,
            allowed=PathRules(["docs/**"]),
            has_secret=has_secret,
            limit=1024,
        )
    assert found.patch == b""
    assert [(r.path, r.reason) for r in found.refused] == [("docs/big.md", Refused.TOO_LARGE)]


def test_a_plain_folder_is_snapshot_as_the_base(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    (folder / "tasks").mkdir(parents=True)
    (folder / "tasks" / "t.yaml").write_text("tool: echo\n")
    (folder / "notes.md").write_text("notes\n")
    (folder / "out").symlink_to("/etc")
    with Scratch.create(folder, HIDE) as scratch:
        work = scratch.work
        assert sorted(p.name for p in work.iterdir()) == [".git", "notes.md"]
        assert git(work, "log", "--format=%s") == "omni: workspace snapshot"
        (work / "notes.md").write_text("more notes\n")
        sorted_, patch = propose(scratch, ["*.md"])
    assert sorted_ == {"notes.md": "accepted"}
    assert "+more notes" in patch
    assert (folder / "notes.md").read_text() == "notes\n"


def test_a_same_size_rewrite_in_the_checkouts_second_is_a_change(repo: Path) -> None:
    # Racy git: git trusts a file whose size and times match what its index recorded,
    # unless the index itself is no older than the file. Timestamps here may be whole
    # seconds (CI's disk), so a rewrite in the checkout's second looks untouched; the
    # proposal must still see it, however late it is made.
    time.sleep(1 - time.time() % 1)  # start of a second: the checkout and write share it
    with Scratch.create(repo, HIDE) as scratch:
        guide = scratch.work / "docs" / "guide.md"
        recorded = guide.stat().st_mtime_ns
        guide.write_text("better")  # as many bytes as "guide\n"
        os.utime(guide, ns=(recorded, recorded))
        time.sleep(1.1)  # the proposal comes in a later second, as after a real run
        found, patch = propose(scratch, ["docs/**"])
    assert found == {"docs/guide.md": "accepted"}
    assert "+better" in patch
