"""The operator's toolkit through the real console script (``python -m runner``), stdout
a pipe and ``COLUMNS=200``: exact lines, exit codes, ``--json`` parsed (issue 15).

Each test is a mistake or a question a person has: a mistyped ``--task``, no tasks
folder, an option that does not apply, a task sure to fail, a bad config, what ran and
why, what would run, where a task goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from typing import TYPE_CHECKING

import pytest

from tests.support.cli import run_omni
from tests.support.paths import SERVERS
from tests.support.upstream import ScriptedUpstream

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

NOW = "2026-11-21T10:05:00Z"
NO_TASKS = (
    "error: tasks folder tasks not found (run `omni init` to make one with examples,"
    " or point --tasks or OMNI_TASKS at yours)\n"
)


def omni(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``omni ARGS`` in ``cwd``, stdout a pipe, 200 columns, the clock at :data:`NOW`."""
    base = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "200", "OMNI_NOW": NOW}
    return run_omni(cwd, *args, env=base | env)


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path, "tasks/hello.yaml", "tool: echo\nargs: {text: hello}\n")
    write(tmp_path, "tasks/hourly.yaml", "schedule: every 1h\ntool: list_dir\nargs: {path: .}\n")
    return tmp_path


def run_ids(root: Path, task_id: str) -> list[str]:
    with sqlite3.connect(root / ".omni" / "state.db") as db:
        found = db.execute("SELECT run_id FROM runs WHERE task_id = ? ORDER BY seq", (task_id,))
        return [row[0] for row in found]


# --- mistakes are errors with a message, never a silent exit 0 -----------------------


def test_an_unknown_task_is_an_error_with_a_guess(project: Path) -> None:
    done = omni(project, "run", "--once", "--task", "helo")
    assert (done.returncode, done.stdout) == (2, "")
    assert (
        done.stderr == "error: --task 'helo': no task in tasks has this id; did you mean 'hello'?\n"
    )
    assert not (project / ".omni").exists()
    as_json = omni(project, "run", "--once", "--task", "helo", "--json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["exit_code"] == 2


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--once"),
        ("run", "--once", "--dry-run"),
        ("validate",),
        ("tasks",),
    ],
)
def test_a_missing_tasks_folder_is_an_error(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = omni(tmp_path, *args)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", NO_TASKS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "--json"), "--json: these go with --once"),
        (("run", "--dry-run"), "--dry-run: these go with --once"),
        (("run", "--once", "--dry-run", "--push", "x"), "--push: a dry run commits nothing"),
        (("tasks", "--state", "finished"), "--state 'finished': choose one of idle,"),
    ],
)
def test_an_option_that_does_not_apply_is_an_error(
    project: Path, args: tuple[str, ...], message: str
) -> None:
    done = omni(project, *args)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {message}")
    assert not (project / ".omni").exists()


def unprivileged(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """:func:`omni`, but as root without the right to read every file (root ignores
    permissions), so that an unreadable folder is unreadable."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root reads every folder, and setpriv (util-linux) is missing")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "200", "OMNI_NOW": NOW}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "runner", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_an_unreadable_folder_is_named_and_its_runs_are_kept(project: Path) -> None:
    write(project, "tasks/team/think.yaml", "prompt: hi\n")
    assert omni(project, "run", "--once").returncode == 0  # think waits (idle)
    team = project / "tasks" / "team"
    team.chmod(0)
    try:
        checked = unprivileged(project, "validate")
        assert (checked.returncode, checked.stdout) == (
            1,
            "tasks/team:1: (folder): cannot list: Permission denied\n",
        )
        done = unprivileged(project, "run", "--once")
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        assert "invalid tasks/team:1: (folder): cannot list: Permission denied" in done.stderr
        (project / "tasks").chmod(0)
        whole = unprivileged(project, "validate")
        assert (whole.returncode, whole.stdout) == (
            1,
            "tasks:1: (folder): cannot list: Permission denied\n",
        )
    finally:
        (project / "tasks").chmod(0o755)
        team.chmod(0o755)
    with sqlite3.connect(project / ".omni" / "state.db") as db:
        found = db.execute("SELECT state FROM runs WHERE task_id = 'team/think'").fetchall()
    assert found == [("idle",)]  # not closed as if its file were gone


def test_ignored_file_types_are_named_once(project: Path) -> None:
    write(project, "tasks/Loud.YAML", "tool: echo\nargs: {text: x}\n")
    note = "note: tasks/Loud.YAML is not read: task files end in .yaml or .yml (lowercase)\n"
    for args in (("run", "--once", "--dry-run"), ("validate",), ("tasks",)):
        done = omni(project, *args)
        assert done.returncode == 0, done.stderr
        assert done.stderr == note
    as_json = json.loads(omni(project, "run", "--once", "--dry-run", "--json").stdout)
    assert as_json["ignored"] == ["tasks/Loud.YAML"]


def test_init_into_a_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    write(tmp_path, "notes.txt", "mine\n")
    done = omni(tmp_path, "init", "notes.txt")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "error: notes.txt is a file; omni init scaffolds a folder (a repository)\n"
    )
    write(tmp_path, "ro/placeholder", "")
    (tmp_path / "ro").chmod(0o500)
    try:
        blocked = omni(tmp_path / "ro", "init", "sub/deeper")
    finally:
        (tmp_path / "ro").chmod(0o700)
    if blocked.returncode == 0:  # root may write anywhere: nothing to refuse
        return
    assert blocked.returncode == 1
    assert "Traceback" not in blocked.stderr
    assert blocked.stderr.startswith("error: cannot write sub/deeper/config.yaml: ")


def test_init_prints_next_steps_and_pins_its_own_version(tmp_path: Path) -> None:
    done = omni(tmp_path, "init", "repo")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [
        " created  repo/config.yaml",
        " created  repo/tasks/hello.yaml",
        " created  repo/tasks/hourly.yaml",
        " created  repo/.github/workflows/omni.yml",
    ]
    assert lines[4:7] == [
        "next steps:",
        "  cd repo",
        "  omni validate                check the task files and the config",
    ]
    workflow = (tmp_path / "repo/.github/workflows/omni.yml").read_text()
    assert f"uses: OWNER/omni-orchestrator@v{version('omni-orchestrator')} " in workflow
    assert omni(tmp_path / "repo", "validate").returncode == 0


# --- validate: tasks sure to fail are caught before they run ---------------------------


def test_validate_catches_tasks_sure_to_fail_without_a_server(project: Path) -> None:
    write(project, "tasks/typo.yaml", "tool: ech\nargs: {text: hi}\n")
    write(project, "tasks/noarg.yaml", "tool: echo\nargs: {txt: hi}\n")
    write(project, "tasks/extra.yaml", "tool: echo\nargs: {text: hi, loud: true}\n")
    write(project, "tasks/types.yaml", "tool: run\nargs: {command: [1, 2]}\n")
    write(project, "tasks/ghost.yaml", "tool: echo\nargs: {text: hi}\nexecutor: bultin\n")
    write(project, "tasks/tools.yaml", "prompt: hi\ntools: [read_file, Bash]\n")
    write(project, "tasks/model.yaml", "prompt: hi\nmodel: gpt-4o-mni\n")
    write(project, "tasks/keys.yaml", "tool: echo\nargs: {text: hi}\nschedul: every 1h\n")
    write(
        project,
        "config.yaml",
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params: {model: openai/gpt-4o-mini}\n"
        "router:\n"
        "  model_tiers: {free: [gpt-4o-mini, llama]}\n",
    )
    done = omni(project, "validate")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "config.yaml:5: router.model_tiers.free[1]: the model is not in model_list;"
        " model_list has: gpt-4o-mini",
        "tasks/keys.yaml:3: schedul: unknown key; did you mean `schedule`?",
        "tasks/extra.yaml:2: args: unknown argument 'loud'; the tool takes (text: string)",
        "tasks/ghost.yaml:3: executor: 'bultin' is not a configured executor;"
        " did you mean 'builtin'? configured: builtin",
        "tasks/model.yaml:2: model: model 'gpt-4o-mni' is not in model_list;"
        " did you mean 'gpt-4o-mini'? model_list has: gpt-4o-mini",
        "tasks/noarg.yaml:2: args: missing required argument(s) 'text';"
        " the tool takes (text: string)",
        "tasks/tools.yaml:2: tools[1]: unknown tool 'Bash'; the executor has:"
        " echo, list_dir, read_file, run, write_file",
        "tasks/types.yaml:2: args: argument 'command' must be array of string or string,"
        " got list [1, 2]",
        "tasks/typo.yaml:1: tool: unknown tool 'ech'; did you mean 'echo'? the executor has:"
        " echo, list_dir, read_file, run, write_file",
    ]
    data = json.loads(omni(project, "validate", "--json").stdout)
    assert data["files"] == 10
    assert data["problems"] == done.stdout.splitlines()


def test_validate_deep_checks_tools_and_arguments_on_a_live_executor(project: Path) -> None:
    write(
        project,
        "config.yaml",
        "model_list: [{model_name: m, litellm_params: {model: openai/m}}]\n"  # for tools.yaml
        "mcp_servers:\n"
        f"  t: {{command: {sys.executable}, args: ['{SERVERS}', stdio]}}\n"
        "  dead: {command: /no/such/server}\n",
    )
    write(project, "tasks/add.yaml", "executor: t\ntool: add\nargs: {a: 1, b: 2}\n")
    write(project, "tasks/typo.yaml", "executor: t\ntool: ad\nargs: {a: 1, b: 2}\n")
    write(project, "tasks/types.yaml", "executor: t\ntool: add\nargs: {a: 1, b: two}\n")
    write(project, "tasks/tools.yaml", "executor: t\nprompt: hi\ntools: [echo, sleeep]\n")
    write(project, "tasks/dead.yaml", "executor: dead\ntool: x\n")
    plain = omni(project, "validate")
    assert (plain.returncode, plain.stdout) == (
        0,
        "ok: 7 task file(s) and the config, checked without servers\n",
    )
    deep = omni(project, "validate", "--deep")
    assert deep.returncode == 1, deep.stderr
    assert deep.stdout.splitlines() == [
        "tasks/dead.yaml:1: executor: 'dead' did not start: executor 'dead': cannot start"
        " '/no/such/server': command not found",
        "tasks/tools.yaml:3: tools[1]: unknown tool 'sleeep'; did you mean 'sleep'?"
        " the executor has: add, big, context, crash, echo, fail, grow, inflight, sleep",
        "tasks/types.yaml:3: args: argument 'b' must be integer, got str 'two'",
        "tasks/typo.yaml:2: tool: unknown tool 'ad'; did you mean 'add'? the executor has:"
        " add, big, context, crash, echo, fail, grow, inflight, sleep",
    ]
    data = json.loads(omni(project, "validate", "--deep", "--json").stdout)
    assert data["executors"]["t"] == "ok: 9 tools"
    assert data["executors"]["builtin"] == "ok: 5 tools"
    assert "command not found" in data["executors"]["dead"]


# --- config errors: all at once, one line each, no value -------------------------------


def test_config_errors_all_at_once_never_a_value(project: Path) -> None:
    write(
        project,
        "config.yaml",
        "lite_llm_url: 'not a url'\n"
        "request_timeout: .inf\n"
        "workspace: /\n"
        "mcp_servers:\n"
        "  x:\n"
        "    command: a\n"
        "    env: 'OPENAI_API_KEY=${OPENAI_API_KEY}'\n"
        "dispatch: {concurency: 2}\n",
    )
    secret = "sk-live-0123456789abcdef"
    expected = [
        "config.yaml:1: lite_llm_url: not a URL: want http://, https:// and a host,"
        " like https://example.com",
        "config.yaml:2: request_timeout: Input should be a finite number",
        "config.yaml:3: workspace: may not be the root folder (/): its tools could write anywhere",
        "config.yaml:7: mcp_servers.x.env: Input should be a valid dictionary (got a string)",
        "config.yaml:8: dispatch.concurency: unknown key; did you mean `concurrency`?",
    ]
    for args in (("validate",), ("run", "--once"), ("status",), ("tasks",)):
        done = omni(project, *args, OPENAI_API_KEY=secret)
        assert (done.returncode, done.stdout) == (2, ""), args
        assert done.stderr.splitlines() == [f"config error: {line}" for line in expected]
    as_json = omni(project, "validate", "--json", OPENAI_API_KEY=secret)
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["config_problems"] == expected
    assert secret not in as_json.stdout + as_json.stderr


def test_a_config_name_that_resolves_to_a_secret_is_not_echoed(project: Path) -> None:
    write(project, "config.yaml", "router:\n  default_executor: ${OPENAI_API_KEY}\n")
    done = omni(project, "validate", OPENAI_API_KEY="sk-live-0123456789abcdef")
    assert done.returncode == 1
    assert done.stdout == (
        "config.yaml:2: router.default_executor: not a configured executor; configured: builtin\n"
    )


# --- output for machines: one line an item ---------------------------------------------


def test_piped_output_is_never_wrapped_or_cut(project: Path) -> None:
    long_id = "team-" + "x" * 90 + "/nightly-report-of-everything"
    write(project, f"tasks/{long_id}.yaml", "tool: echo\nargs: {text: hi}\n")
    write(project, "tasks/broken.yaml", "tool: echo\ntimeout: -5\nbogus_key_" + "y" * 150 + ": 1\n")
    done = omni(project, "run", "--once", COLUMNS="80")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["task", "state", "executor", "took", "detail"]
    [row] = [line for line in lines if line.startswith("team-")]
    assert row.startswith(long_id + "  completed  builtin")
    assert row.endswith(f"results/{long_id}/{run_ids(project, long_id)[0]}.json")
    assert lines[-1] == (
        "3 completed, 0 failed, 0 not run, 2 invalid task file problem(s); results in results/"
    )
    assert [line for line in done.stderr.splitlines() if line.startswith("invalid")] == [
        "invalid tasks/broken.yaml:2: timeout: Input should be greater than 0 (got -5)",
        f"invalid tasks/broken.yaml:3: bogus_key_{'y' * 150}: unknown key; allowed keys: id,"
        " description, enabled, kind, executor, tool, args, prompt, tools, model, max_turns,"
        " schedule, timezone, timeout, retries, pull_request, network",
    ]


def test_help_and_usage_errors_in_a_pipe_are_whole_lines(project: Path) -> None:
    unknown = omni(project, "run", "--once", "--frobnicate", COLUMNS="40")
    assert (unknown.returncode, unknown.stdout) == (2, "")
    assert unknown.stderr.splitlines() == [
        "Usage: omni run [OPTIONS]",
        "Try 'omni run --help' for help.",
        "",
        "Error: No such option: --frobnicate (Possible options: --force, --once)",
    ]
    shown = omni(project, "run", "--help", COLUMNS="40")
    assert shown.returncode == 0
    assert (
        "  --dry-run                     With --once: show what would run and why; run and"
        " write nothing." in shown.stdout.splitlines()
    )
    assert "\u2502" not in shown.stdout  # no box drawn for a terminal


def test_progress_lines_in_a_log(project: Path) -> None:
    done = omni(project, "run", "--once")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "running 2 task(s)\n"


# --- omni tasks, show, status, route, --dry-run --------------------------------------


def test_tasks_lists_every_task_with_next_fire_and_last_run(project: Path) -> None:
    write(project, "tasks/paused.yaml", "enabled: false\nprompt: later\nschedule: '0 3 * * *'\n")
    before = omni(project, "tasks")
    assert before.returncode == 0, before.stderr
    assert before.stdout.splitlines() == [
        "task    enabled  kind           executor  schedule          next fire  last run",
        "hello   yes      tool echo      builtin   once per content  due now    never",
        "hourly  yes      tool list_dir  builtin   every 1h          due now    never",
        "paused  paused   prompt         builtin   0 3 * * *         —          never",
    ]
    assert omni(project, "run", "--once").returncode == 0
    after = json.loads(omni(project, "tasks", "--json").stdout)
    by_id = {row["id"]: row for row in after["tasks"]}
    assert by_id["hourly"]["next_fire"] == "2026-11-21T11:00:00.000Z"
    assert not by_id["hourly"]["due_now"]
    assert by_id["hello"]["last_run"]["state"] == "completed"
    assert by_id["hello"]["why"] == "already completed for this content"
    assert by_id["paused"]["last_run"] is None
    listed = omni(project, "tasks", "--state", "none", "--json")
    assert [row["id"] for row in json.loads(listed.stdout)["tasks"]] == ["paused"]
    tools = omni(project, "tasks", "--kind", "tool", "--paused")
    assert tools.stdout.splitlines()[1:] == []


def test_show_a_run_with_its_result_and_every_state_change(project: Path) -> None:
    assert omni(project, "run", "--once").returncode == 0
    [run_id] = run_ids(project, "hello")
    data = json.loads(omni(project, "show", run_id, "--json").stdout)
    assert data["run"]["state"] == "completed"
    assert data["result"]["output"] == "hello"
    assert data["result_path"] == f"results/hello/{run_id}.json"
    assert data["markdown"].startswith("# ✅ hello — completed\n")
    assert [(e["from"], e["to"]) for e in data["events"]] == [
        (None, "idle"),
        ("idle", "dispatching"),
        ("dispatching", "executing"),
        ("executing", "completed"),
    ]
    text = omni(project, "show", run_id[:12].lower())
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[:3] == [
        f"run {run_id} of task hello: completed (attempt 1)",
        f"result: results/hello/{run_id}.json",
        "state changes:",
    ]
    assert lines[4].split()[1:] == ["new", "idle", "created"]
    assert "# ✅ hello — completed" in lines
    task = json.loads(omni(project, "show", "hello", "--json").stdout)
    assert task["task"]["id"] == "hello"
    assert [r["run_id"] for r in task["runs"]] == [run_id]
    assert task["latest"]["run"]["run_id"] == run_id
    missing = omni(project, "show", "nosuchthing")
    assert missing.returncode == 2
    assert missing.stderr == (
        "error: 'nosuchthing' is neither a task id nor a run id (or the start of one)\n"
    )


def test_dry_run_says_what_would_run_and_writes_nothing(project: Path) -> None:
    write(project, "tasks/think.yaml", "prompt: summarise\n")
    first = omni(project, "run", "--once", "--dry-run")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "would    task    executor / run  why",
        "run      hello   builtin         new or changed content",
        "run      hourly  builtin         slot 2026-11-21T10:00:00.000Z due (300 s ago)",
        "not run  think                   prompt task: waits (idle) until a model is configured"
        " (model_list or lite_llm_url)",
        "dry run: 2 would run, 1 not, 0 run(s) of gone tasks would be closed; nothing was run"
        " or written",
    ]
    assert sorted(p.name for p in project.iterdir()) == ["tasks"]
    assert omni(project, "run", "--once").returncode == 0
    state = project / ".omni" / "state.db"
    before = hashlib.sha256(state.read_bytes()).hexdigest(), sorted(state.parent.iterdir())
    (project / "tasks" / "think.yaml").unlink()
    data = json.loads(omni(project, "run", "--once", "--dry-run", "--json").stdout)
    assert data["due"] == []
    assert [(n["task_id"], n["why"]) for n in data["not_due"]] == [
        ("hello", "already completed for this content"),
        (
            "hourly",
            "not due: slot 2026-11-21T10:00:00.000Z ran; next slot 2026-11-21T11:00:00.000Z",
        ),
    ]
    [close] = data["would_close"]
    assert close["task_id"] == "think"
    assert close["why"] == f"task file {project / 'tasks' / 'think.yaml'} is gone"
    assert (
        hashlib.sha256(state.read_bytes()).hexdigest(),
        sorted(state.parent.iterdir()),
    ) == before


def test_route_by_task_id_shows_the_model_chain_and_next_fire(project: Path) -> None:
    write(project, "tasks/think.yaml", "prompt: hi\nschedule: '0 3 * * *'\n")
    write(
        project,
        "config.yaml",
        "model_list:\n"
        "  - {model_name: small, litellm_params: {model: openai/small}}\n"
        "  - {model_name: big, litellm_params: {model: openai/big}}\n"
        "router:\n"
        "  model_tiers: {free: [small], paid: [big]}\n",
    )
    done = omni(project, "route", "think", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "task": "think",
        "file": "tasks/think.yaml",
        "executor": "builtin",
        "why": "no rule matched: router.default_executor",
        "configured": True,
        "kind of task": "prompt (agent run)",
        "schedule": "0 3 * * *",
        "next fire": "2026-11-22T03:00:00.000Z",
        "models": "small (free) -> big (paid)",
        "models why": "router.default_model is free_then_paid: 1 free, then 1 paid",
    }
    by_path = omni(project, "route", "tasks/hello.yaml")
    assert by_path.stdout.splitlines()[:3] == [
        "task          hello",
        "file          tasks/hello.yaml",
        "executor      builtin",
    ]
    unknown = omni(project, "route", "thinky")
    assert unknown.returncode == 2
    assert unknown.stderr == (
        "error: 'thinky' is neither a task file nor a task id in tasks; did you mean 'think'?\n"
    )


def test_route_and_show_say_yes_and_no_to_a_person(project: Path) -> None:
    assert "configured    yes" in omni(project, "route", "hello").stdout.splitlines()
    write(project, "tasks/later.yaml", "tool: echo\nenabled: false\n")
    assert "enabled: no" in omni(project, "show", "later").stdout.splitlines()


def test_status_filters_and_run_ids(project: Path) -> None:
    note = "prompt task: waits (idle) until a model is configured (model_list or lite_llm_url)"
    write(project, "tasks/think.yaml", "prompt: hi\n")
    assert omni(project, "run", "--once").returncode == 0
    [hello] = run_ids(project, "hello")
    [think] = run_ids(project, "think")
    done = omni(project, "status", "--task", "think", "--state", "idle")
    lines = done.stdout.splitlines()
    assert lines[-2:] == [
        "task   run                         state  attempt  executor  updated"
        "                   error / note",
        f"think  {think}  idle   0                  {lines[-1].split()[4]}  {note}",
    ]
    data = json.loads(
        omni(project, "status", "--limit", "1", "--state", "completed", "--json").stdout
    )
    assert [r["run_id"] for r in data["recent_runs"]] in ([hello], run_ids(project, "hourly"))


def test_status_of_an_unknown_task_is_an_error_not_an_empty_list(project: Path) -> None:
    typo = "error: --task 'helo': no task in tasks has this id; did you mean 'hello'?\n"
    before = omni(project, "status", "--task", "helo")  # no state file yet
    assert (before.returncode, before.stdout, before.stderr) == (2, "", typo)
    assert omni(project, "run", "--once").returncode == 0
    after = omni(project, "status", "--task", "helo", "--json")
    assert (after.returncode, after.stderr) == (2, typo)
    assert json.loads(after.stdout)["exit_code"] == 2
    # A known task with no run in that state is an empty answer, not a mistake; so is a
    # task whose file is gone but whose runs the state file holds.
    none = omni(project, "status", "--task", "hello", "--state", "failed")
    assert (none.returncode, none.stdout.splitlines()[-1]) == (0, "no run matches")
    (project / "tasks" / "hello.yaml").unlink()
    assert omni(project, "status", "--task", "hello").returncode == 0


# --- state hygiene -------------------------------------------------------------------


def test_force_reuses_the_waiting_run_and_a_gone_task_is_closed(project: Path) -> None:
    write(project, "tasks/think.yaml", "prompt: hi\n")
    for _ in range(3):
        assert omni(project, "run", "--once", "--task", "think", "--force").returncode == 0
    [think] = run_ids(project, "think")
    (project / "tasks" / "think.yaml").unlink()
    done = omni(project, "run", "--once")
    assert done.returncode == 0, done.stderr
    gone = project / "tasks" / "think.yaml"
    assert f"closed run {think} of task think: skipped (task file {gone} is gone)" in done.stderr
    data = json.loads(omni(project, "show", think, "--json").stdout)
    assert (data["run"]["state"], data["run"]["note"]) == ("skipped", f"task file {gone} is gone")
    assert data["events"][-1]["to"] == "skipped"


# --- LiteLLM's logging goes through omni's ----------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


def test_litellm_logs_through_omni_on_stderr_never_stdout(
    project: Path, upstream: ScriptedUpstream
) -> None:
    upstream.script("toolkit-model", [{"content": "pong"}])
    write(
        project,
        "config.yaml",
        "model_list:\n"
        "  - model_name: toolkit-model\n"
        f"    litellm_params: {{model: openai/toolkit-model, api_base: '{upstream.url}',"
        " api_key: sk-upstream-test}\n",
    )
    write(project, "tasks/think.yaml", "prompt: say pong\n")
    done = omni(project, "run", "--once", "--task", "think", "--verbose")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "1 completed, 0 failed, 0 not run; results in results/"
    assert not any("LiteLLM" in line for line in lines), done.stdout
    assert "\x1b[" not in done.stdout + done.stderr
    # --verbose: its INFO lines, in omni's format (time, level, message), never its own.
    assert re.search(r"^\d{4}-\d\d-\d\dT[\d:.]+Z INFO .*litellm", done.stderr, re.M | re.I)
    assert not re.search(r"\d\d:\d\d:\d\d - LiteLLM", done.stderr)
    quiet = omni(project, "run", "--once", "--task", "think", "--force")
    assert quiet.returncode == 0
    assert "LiteLLM" not in quiet.stdout + quiet.stderr
