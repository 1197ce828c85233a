"""``omni publish`` against a local bare repository as ``origin``: a task's approved patch
becomes its own branch (and a later run updates it), only ``results/`` reaches the
results branch, every result file and patch is checked first, and ``gh`` (a recording
stub) is asked to open or update one pull request per branch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from runner.app.once import OnceOptions, run_once
from runner.app.publish import PublishOptions, publish
from runner.defs.config import Config
from runner.defs.environment import ResolvedPaths
from tests.support import gh
from tests.support.git import git
from tests.support.planted import SECRET
from tests.support.upstream import ScriptedUpstream

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare origin whose main holds docs, code and a docs task allowed docs/**."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    files = {
        "README.md": "# ops\n",
        "docs/guide.md": "guide\n",
        "src/app.py": "print('app')\n",
        "tasks/docs.yaml": (
            "prompt: Refresh the docs.\nmodel: writer\n"
            "pull_request: {paths: ['docs/**'], title: Docs refresh, draft: true, labels: [docs]}\n"
        ),
        ".gitignore": "results/\n.omni/\n",
    }
    for rel, text in files.items():
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_text(text)
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "first")
    git(seed, "push", "-q", str(bare), "main")
    return bare


def clone(origin: Path, name: str) -> Path:
    work = origin.parent / name
    git(origin.parent, "clone", "-q", str(origin), str(work))
    return work


def paths_in(work: Path) -> ResolvedPaths:
    return ResolvedPaths(
        config=None, tasks=work / "tasks", results=work / "results", state=work / ".omni" / "s.db"
    )


def writer_config(upstream: ScriptedUpstream, work: Path) -> Config:
    entry = {
        "model_name": "writer",
        "litellm_params": {"model": "openai/writer", "api_base": upstream.url, "api_key": SECRET},
    }
    return Config.model_validate({"model_list": [entry], "workspace": str(work)})


def writes(*files: tuple[str, str]) -> list[dict[str, Any]]:
    calls = [{"tool_calls": [("write_file", {"path": p, "content": c})]} for p, c in files]
    # The model's last word repeats its key: the run's result and every text made from it
    # (the pull request's body) must show it redacted.
    return [*calls, {"content": f"docs refreshed (with key {SECRET})"}]


def on(origin: Path, ref: str) -> dict[str, str]:
    names = git(origin, "ls-tree", "-r", "--name-only", ref).splitlines()
    return {n: git(origin, "show", f"{ref}:{n}") for n in names}


def gh_env(tmp_path: Path) -> dict[str, str]:
    stubs = gh.install(tmp_path / "bin")
    return {
        "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
        "GH_LOG": str(tmp_path / "gh.json"),
        "GH_TOKEN": SECRET,
    }


async def test_a_tasks_patch_becomes_its_branch_and_a_later_run_updates_it(
    origin: Path, upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = clone(origin, "work")
    monkeypatch.chdir(work)
    config, paths = writer_config(upstream, work), paths_in(work)
    env = {"PATH": os.environ["PATH"]}
    upstream.script("writer", writes(("docs/a.md", "first\n"), ("src/b.py", "x = 1\n")))
    report = await run_once(config, paths, OnceOptions(push="omni/results"), environ=env)
    assert report.exit_code == 0, report.git_error
    [result_path] = (work / "results" / "docs").glob("*.json")
    result = json.loads(result_path.read_text())
    assert result["changes"]["refused"] == [
        {"path": "src/b.py", "reason": "outside pull_request.paths"}
    ]
    branch = on(origin, "omni/task/docs")
    main = on(origin, "main")
    assert branch == main | {"docs/a.md": "first"}  # docs/a.md only, on top of main
    assert git(origin, "rev-parse", "omni/task/docs^") == git(origin, "rev-parse", "main")
    assert git(origin, "log", "-1", "--format=%s", "omni/task/docs") == "Docs refresh"
    results = on(origin, "omni/results")
    assert {n for n in results if not n.startswith("results/")} == set(main)
    assert any(n.endswith(".patch") for n in results)
    assert git(origin, "rev-parse", "main") == git(work, "rev-parse", "HEAD")

    # A second run of the task (forced) updates the same branch from main again.
    first_tip = git(origin, "rev-parse", "omni/task/docs")
    upstream.script("writer", writes(("docs/a.md", "second\n")))
    forced = OnceOptions(push="omni/results", force=True)
    assert (await run_once(config, paths, forced, environ=env)).exit_code == 0
    assert on(origin, "omni/task/docs") == main | {"docs/a.md": "second"}
    assert git(origin, "rev-parse", "omni/task/docs") != first_tip
    assert git(origin, "rev-parse", "omni/task/docs^") == git(origin, "rev-parse", "main")
    body = (work / ".omni" / "publish" / "omni__task__docs.md").read_text()
    for words in ("Refresh the docs.", "write_file", "docs/a.md", "docs refreshed (with key"):
        assert words in body
    assert SECRET not in body and "[redacted]" in body


async def test_publish_takes_in_an_artifact_checks_it_and_opens_pull_requests(
    origin: Path, upstream: ScriptedUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The model's job: runs, no push; its results folder is the artifact.
    runner_job = clone(origin, "run-job")
    monkeypatch.chdir(runner_job)
    upstream.script("writer", writes(("docs/a.md", "from the artifact\n")))
    config = writer_config(upstream, runner_job)
    env = {"PATH": os.environ["PATH"]}
    assert (await run_once(config, paths_in(runner_job), OnceOptions(), environ=env)).exit_code == 0
    artifact = tmp_path / "artifact"
    shutil.copytree(runner_job / "results", artifact)
    tamper(artifact)

    # The publish job: a fresh clone with the write token and gh, no model keys.
    publisher = clone(origin, "publish-job")
    monkeypatch.chdir(publisher)
    options = PublishOptions(source=artifact, push=True, pull_requests=True)
    environ = gh_env(tmp_path)
    report = publish(Config(), paths_in(publisher), options, environ=environ)
    refused = {r.path.split("/", 1)[1]: r.reason for r in report.checked.refused}
    assert refused == {
        "01ZZZZZZZZZZZZZZZZZZZZZZZZ.json": "slot lies in the future",
        "01ZZZZZZZZZZZZZZZZZZZZZZZZ.md": "its result is refused: slot lies in the future",
        "01YYYYYYYYYYYYYYYYYYYYYYYY.json": "holds a secret",
        "notes.txt": "not a result file (<task-id>/<run-id>.json, .md or .patch)",
    }
    assert report.exit_code == 1  # refusals are reported
    assert on(origin, "omni/task/docs")["docs/a.md"] == "from the artifact"
    on_results = on(origin, "omni/results")
    assert not any("ZZZZ" in n or "YYYY" in n or n.endswith("notes.txt") for n in on_results)
    calls = recorded(environ)
    creates = [c for c in calls if c[:2] == ["pr", "create"]]
    assert [c[c.index("--head") + 1] for c in creates] == ["omni/task/docs", "omni/results"]
    task_pr = creates[0]
    assert "--draft" in task_pr and task_pr[task_pr.index("--label") + 1] == "docs"
    assert task_pr[task_pr.index("--title") + 1] == "Docs refresh"
    # What GitHub would show: the model's last word is in the task's body, its key not.
    texts = {t["title"]: t["body"] or "" for t in gh.texts(Path(environ["GH_LOG"]))}
    assert "docs refreshed (with key [redacted])" in texts["Docs refresh"]
    assert not any(SECRET in body for body in texts.values())

    # Publishing again with nothing new edits the results pull request, opens nothing.
    again = publish(
        Config(),
        paths_in(publisher),
        PublishOptions(push=True, pull_requests=True),
        environ=environ,
    )
    assert again.tasks == []
    calls = recorded(environ)
    assert calls[-1][:3] == ["pr", "edit", "7"]


def recorded(environ: dict[str, str]) -> list[list[str]]:
    """The ``gh`` calls the stub recorded."""
    return gh.calls(Path(environ["GH_LOG"]))


def tamper(artifact: Path) -> None:
    """What a compromised model job might add to its artifact."""
    docs = artifact / "docs"
    [real] = docs.glob("*.json")
    data = json.loads(real.read_text())
    future = dict(data, run_id="01ZZZZZZZZZZZZZZZZZZZZZZZZ", slot="2999-01-01T00:00:00.000Z")
    (docs / "01ZZZZZZZZZZZZZZZZZZZZZZZZ.json").write_text(json.dumps(future))
    (docs / "01ZZZZZZZZZZZZZZZZZZZZZZZZ.md").write_text("# future\n")
    leak = dict(data, run_id="01YYYYYYYYYYYYYYYYYYYYYYYY", output=SECRET)
    (docs / "01YYYYYYYYYYYYYYYYYYYYYYYY.json").write_text(json.dumps(leak))
    (docs / "notes.txt").write_text("not a result\n")


def plant_run(work: Path, patch: bytes, path: str) -> str:
    """A completed run of task ``docs`` in ``work``'s results, whose patch (``patch``,
    changing ``path``) was made by hand, as an attacker of the artifact would; its id."""
    run_id = "01M8PQ0000000000000000TEST"
    folder = work / "results" / "docs"
    folder.mkdir(parents=True)
    (folder / f"{run_id}.patch").write_bytes(patch)
    result = {
        "task_id": "docs",
        "run_id": run_id,
        "task_hash": "h",
        "state": "completed",
        "attempt": 1,
        "started_at": "2026-11-30T00:00:00Z",
        "finished_at": "2026-11-30T00:00:01Z",
        "duration_s": 1.0,
        "changes": {"patch": f"{run_id}.patch", "files": [path]},
    }
    (folder / f"{run_id}.json").write_text(json.dumps(result))
    return run_id


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("tasks/x.yaml", "a protected path"),
        ("src/b.py", "outside pull_request.paths"),
        (".github/workflows/x.yml", "a protected path"),
    ],
)
def test_a_patch_touching_what_its_task_may_not_is_refused(
    origin: Path, monkeypatch: pytest.MonkeyPatch, path: str, reason: str
) -> None:
    work = clone(origin, "work")
    monkeypatch.chdir(work)
    patch = (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..e69de29\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+evil\n"
    )
    run_id = plant_run(work, patch.encode(), path)
    report = publish(Config(), paths_in(work), PublishOptions(push=True), environ={})
    [refusal] = report.checked.refused
    assert refusal.path == f"docs/{run_id}.patch"
    assert reason in refusal.reason
    assert report.tasks == []
    assert "omni/task/docs" not in git(origin, "branch", "--list")
    on_results = on(origin, "omni/results")
    assert f"results/docs/{run_id}.json" in on_results
    assert not any(n.endswith(".patch") for n in on_results)


def binary_patch(root: Path, path: str, data: bytes) -> bytes:
    """``git diff --binary`` adding ``path`` with ``data`` (a new binary file)."""
    repo = root / "make-patch"
    git(root, "init", "-q", "-b", "main", str(repo))
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_bytes(data)
    git(repo, "add", "-A")
    args = ["git", "diff", "--cached", "--binary", "--full-index"]
    made = subprocess.run(args, cwd=repo, capture_output=True, check=True).stdout
    shutil.rmtree(repo)
    return made


def test_a_secret_in_a_binary_file_of_a_patch_is_refused(
    origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = clone(origin, "work")
    monkeypatch.chdir(work)
    logo = b"\x89PNG\r\n\x1a\n\0\0" + SECRET.encode() + bytes(range(256))
    patch = binary_patch(origin.parent, "docs/logo.png", logo)
    assert b"GIT binary patch" in patch and SECRET.encode() not in patch  # deflated
    run_id = plant_run(work, patch, "docs/logo.png")
    environ = {"OMNI_TEST_TOKEN": SECRET}
    report = publish(Config(), paths_in(work), PublishOptions(push=True), environ=environ)
    assert [(r.path, r.reason) for r in report.checked.refused] == [
        (f"docs/{run_id}.patch", "holds a secret")
    ]
    assert report.tasks == []
    assert "omni/task/docs" not in git(origin, "branch", "--list")


def test_publish_runs_no_hook_filter_or_fsmonitor(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = clone(origin, "work")
    monkeypatch.chdir(work)
    marker = tmp_path / "pwned"
    git(work, "config", "core.fsmonitor", f"touch {marker}")
    git(work, "config", "filter.evil.clean", f"touch {marker}; cat")
    hook = work / ".git" / "hooks" / "pre-push"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    (work / ".gitattributes").write_text("* filter=evil\n")
    (work / "tasks" / "hello.yaml").write_text("tool: echo\nargs: {text: hi}\n")
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--once", "--push", "omni/results"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    assert "pushed to origin" in done.stdout, done.stdout + done.stderr
    assert not marker.exists()
