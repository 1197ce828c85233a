"""Model-driven runs through ``run --once`` in a real git repository: each gets its own
workspace and executors; its change is a patch beside its result, limited to the task's
``pull_request.paths``; ``sandbox:`` decides what happens when bubblewrap cannot work;
tool tasks without ``pull_request:`` keep the shared executors."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pytest

from runner.app.once import OnceOptions, OnceReport, run_once
from runner.defs.config import Config
from runner.defs.environment import ResolvedPaths
from runner.reach.sandbox import probe
from tests.support.git import git
from tests.support.upstream import ScriptedUpstream

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

BWRAP_WORKS = probe().available or os.environ.get("CI") == "true"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


class Repo:
    """A repository with omni's folders inside it, as in a real deployment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = ResolvedPaths(
            config=None,
            tasks=root / "tasks",
            results=root / "results",
            state=root / ".omni" / "state.db",
        )
        for rel, text in {
            "README.md": "# r\n",
            "docs/guide.md": "guide\n",
            "src/a.py": "a\n",
        }.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        self.paths.tasks.mkdir()
        (root / ".gitignore").write_text("results/\n.omni/\n")
        git(root.parent, "init", "-q", "-b", "main", str(root))
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "first")

    def task(self, text: str, task_id: str = "t") -> None:
        (self.paths.tasks / f"{task_id}.yaml").write_text(text)

    async def run(self, config: dict[str, Any], **environ: str) -> OnceReport:
        cfg = Config.model_validate({"workspace": str(self.root), **config})
        env = {"PATH": os.environ["PATH"], **environ}
        return await run_once(cfg, self.paths, OnceOptions(), environ=env)

    def results(self, task_id: str = "t") -> list[dict[str, Any]]:
        found = sorted((self.paths.results / task_id).glob("*.json"))
        return [json.loads(p.read_text()) for p in found]


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


def model(upstream: ScriptedUpstream, name: str, replies: list[Any]) -> dict[str, Any]:
    upstream.script(name, replies)
    entry = {
        "model_name": name,
        "litellm_params": {"model": f"openai/{name}", "api_base": upstream.url, "api_key": "x"},
    }
    return {"model_list": [entry]}


def write(path: str, content: str) -> dict[str, Any]:
    return {"tool_calls": [("write_file", {"path": path, "content": content})]}


async def test_a_prompt_runs_change_is_a_patch_limited_to_its_paths(
    repo: Repo, upstream: ScriptedUpstream
) -> None:
    config = model(
        upstream,
        "docs-writer",
        [write("docs/a.md", "new page\n"), write("src/b.py", "x = 1\n"), {"content": "done"}],
    )
    repo.task("prompt: write docs\nmodel: docs-writer\npull_request: {paths: ['docs/**']}\n")
    report = await repo.run(config)
    assert report.exit_code == 0, report.finished[0].run.error
    [result] = repo.results()
    changes = result["changes"]
    assert changes["files"] == ["docs/a.md"]
    assert changes["refused"] == [{"path": "src/b.py", "reason": "outside pull_request.paths"}]
    assert changes["base"] == git(repo.root, "rev-parse", "HEAD")
    patch = (repo.paths.results / "t" / changes["patch"]).read_text()
    assert "+new page" in patch and "src/b.py" not in patch
    assert not (repo.root / "docs" / "a.md").exists()  # the checkout is untouched
    assert not (repo.root / "src" / "b.py").exists()
    markdown = (repo.paths.results / "t" / f"{result['run_id']}.md").read_text()
    assert "`docs/a.md`" in markdown and "`src/b.py`: outside pull_request.paths" in markdown
    assert git(repo.root, "status", "--porcelain", "--", "docs", "src") == ""


async def test_a_tool_task_with_pull_request_runs_in_its_own_workspace(repo: Repo) -> None:
    repo.task(
        "tool: write_file\nargs: {path: docs/guide.md, content: better}\n"
        "pull_request: {paths: ['docs/**'], title: Better guide}\n"
    )
    assert (await repo.run({})).exit_code == 0
    [result] = repo.results()
    assert result["changes"]["files"] == ["docs/guide.md"]
    assert (repo.root / "docs" / "guide.md").read_text() == "guide\n"
    assert result["sandbox"]["kind"] == ("bwrap" if BWRAP_WORKS else "none")


async def test_a_tool_task_without_pull_request_keeps_the_shared_executor(repo: Repo) -> None:
    repo.task("tool: write_file\nargs: {path: notes.txt, content: direct}\n")
    repo.task("tool: write_file\nargs: {path: tasks/zz.yaml, content: 'tool: run'}\n", "evil")
    report = await repo.run({})
    assert (repo.root / "notes.txt").read_text() == "direct"  # as its author wrote it
    [result] = repo.results()
    assert "sandbox" not in result and "changes" not in result
    [evil] = repo.results("evil")
    assert evil["state"] == "failed" and "'tasks/zz.yaml' is protected" in evil["error"]
    assert not (repo.paths.tasks / "zz.yaml").exists()
    assert report.exit_code == 1


async def test_without_pull_request_changes_are_listed_as_not_published(
    repo: Repo, upstream: ScriptedUpstream
) -> None:
    config = model(upstream, "no-pr", [write("docs/x.md", "x"), {"content": "done"}])
    repo.task("prompt: write\nmodel: no-pr\n")
    assert (await repo.run(config)).exit_code == 0
    [result] = repo.results()
    assert result["changes"]["not_published"] == ["docs/x.md"]
    assert result["changes"]["patch"] is None
    assert not list((repo.paths.results / "t").glob("*.patch"))


def fake_bwrap(folder: Path) -> str:
    path = folder / "bwrap"
    path.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    path.chmod(0o755)
    return str(path)


async def test_sandbox_auto_without_bwrap_runs_with_a_warning(
    repo: Repo, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    config = model(upstream, "unsandboxed", [{"content": "ok"}])
    repo.task("prompt: hi\nmodel: unsandboxed\n")
    report = await repo.run(config, OMNI_BWRAP=fake_bwrap(tmp_path))
    assert report.exit_code == 0
    [result] = repo.results()
    assert result["sandbox"]["kind"] == "none"
    assert "NOT sandboxed" in result["sandbox"]["warning"]
    assert "uid map" in result["sandbox"]["warning"]


async def test_sandbox_required_without_bwrap_refuses_with_cause_and_fix(
    repo: Repo, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    config = model(upstream, "refused", [{"content": "never asked"}])
    repo.task("prompt: hi\nmodel: refused\nretries: 2\n")
    report = await repo.run({**config, "sandbox": "required"}, OMNI_BWRAP=fake_bwrap(tmp_path))
    assert report.exit_code == 1
    [result] = repo.results()
    assert result["state"] == "failed" and result["attempt"] == 1  # not retried
    assert result["error"].startswith("sandbox: required, but no sandbox works here:")
    assert "setting up uid map" in result["error"]
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in result["error"]
    assert upstream.requests("refused") == []
    # A tool task without pull_request: needs no sandbox and still runs.
    repo.task("tool: echo\nargs: {text: hi}\n", "plain")
    await repo.run({"sandbox": "required"}, OMNI_BWRAP=fake_bwrap(tmp_path))
    assert repo.results("plain")[0]["state"] == "completed"


@pytest.mark.skipif(not BWRAP_WORKS, reason="bubblewrap cannot run here (CI would fail)")
async def test_git_works_in_a_runs_workspace_without_reaching_the_repository(
    repo: Repo, upstream: ScriptedUpstream
) -> None:
    refs = git(repo.root, "for-each-ref")
    run = {
        "tool_calls": [
            (
                "run",
                {
                    "command": [
                        "sh",
                        "-c",
                        "git log --format=%s; git commit -qam x --allow-empty; git branch evil",
                    ]
                },
            )
        ]
    }
    config = model(upstream, "git-user", [run, {"content": "done"}])
    repo.task("prompt: look at history\nmodel: git-user\ntools: [run]\n")
    assert (await repo.run(config)).exit_code == 0
    seen = [
        m["content"] for m in upstream.requests("git-user")[1]["messages"] if m["role"] == "tool"
    ]
    assert "\nfirst\n" in seen[0]  # the history is there ...
    assert "Read-only file system" in seen[0]  # ... and cannot be written
    assert git(repo.root, "for-each-ref") == refs
