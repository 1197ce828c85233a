"""The `omni` command as a user meets it: output lines and exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from runner.cli import render, screens
from runner.cli.main import app, for_command
from runner.cli.render import RunProgress
from runner.core.states import RunState
from runner.state.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for var in ("OMNI_CONFIG", "OMNI_TASKS", "OMNI_RESULTS", "OMNI_STATE"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def test_validate_shipped_examples_exit_0() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["validate", str(REPO / "tasks"), "--tasks", str(REPO / "tasks")])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_validate_one_broken_file_names_file_line_field(cli: CliRunner, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "good.yaml").write_text("tool: echo\nargs: {text: hi}\n")
    (tasks / "bad.yaml").write_text("tool: echo\ntimeout: -5\n")
    result = cli.invoke(app, ["validate"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == ["tasks/bad.yaml:2: timeout: Input should be greater than 0 (got -5)"]


def test_validate_flags_an_executor_that_is_not_configured(cli: CliRunner, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "a.yaml").write_text("description: x\ntool: echo\nexecutor: ghost\n")
    result = cli.invoke(app, ["validate"])
    assert result.exit_code == 1
    assert "tasks/a.yaml:3: executor: 'ghost'" in result.output
    assert "configured: builtin" in result.output


def test_validate_flags_a_prompt_task_with_no_model_to_run_on(
    cli: CliRunner, tmp_path: Path
) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "think.yaml").write_text("description: x\nprompt: hi\n")
    (tasks / "later.yaml").write_text("prompt: hi\nenabled: false\n")  # paused: no problem
    result = cli.invoke(app, ["validate"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "tasks/think.yaml:2: prompt: no model is configured (model_list or lite_llm_url in the"
        " config): this prompt task would wait (idle) until one is; configure one, or set"
        " enabled: false"
    ]
    (tmp_path / "config.yaml").write_text("lite_llm_url: http://127.0.0.1:9/\n")
    assert cli.invoke(app, ["validate"]).exit_code == 0  # the proxy knows its models


def test_bad_config_exits_2_with_file_and_key(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("dispatch:\n  concurrency: many\n")
    result = cli.invoke(app, ["validate"])
    assert result.exit_code == 2
    assert "config.yaml:2: dispatch.concurrency:" in result.output


def test_named_config_that_does_not_exist_exits_2(cli: CliRunner) -> None:
    result = cli.invoke(app, ["status", "--config", "nope.yaml"])
    assert result.exit_code == 2
    assert "config error: nope.yaml:1: (file): config file not found" in result.output


def test_status_without_state_file(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["status", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["mode"]["mode"] == "normal"
    assert data["runs_by_state"]["completed"] == 0
    assert not (tmp_path / ".omni").exists()  # status never creates state


def test_status_says_when_model_runs_would_go_unsandboxed(cli: CliRunner, tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    result = cli.invoke(app, ["status", "--json"], env={"OMNI_BWRAP": str(fake)})
    sandbox = json.loads(result.output)["sandbox"]
    assert (sandbox["mode"], sandbox["kind"]) == ("auto", "none")
    assert "NOT sandboxed" in sandbox["warning"]
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in sandbox["warning"]
    shown = cli.invoke(app, ["status"], env={"OMNI_BWRAP": str(fake)}).output
    assert "sandbox: none (sandbox: auto)" in shown and "NOT sandboxed" in shown
    (tmp_path / "config.yaml").write_text("sandbox: off\n")
    quiet = json.loads(cli.invoke(app, ["status", "--json"]).output)["sandbox"]
    assert quiet == {"mode": "off", "kind": "none", "warning": None}


def test_schema_is_json_schema_with_field_docs(cli: CliRunner) -> None:
    result = cli.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["additionalProperties"] is False
    assert "cron" in schema["properties"]["schedule"]["description"].lower()


def test_route_explains_the_choice(cli: CliRunner, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "a.yaml").write_text("kind: coding\ntool: echo\n")
    result = cli.invoke(app, ["route", "tasks/a.yaml", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["executor"] == "builtin"  # claude_code is not configured
    assert data["task"] == "a"


def test_status_and_validate_never_import_litellm_or_mcp(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.yaml").write_text("tool: echo\nargs: {text: hi}\n")
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from runner.cli.main import app\n"
        "r = CliRunner()\n"
        "assert r.invoke(app, ['validate']).exit_code == 0\n"
        "assert r.invoke(app, ['status']).exit_code == 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'mcp'))\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_version_prints_the_installed_version_through_the_console_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runner", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"omni {version('omni-orchestrator')}\n"


def test_progress_in_a_log_is_a_line_every_interval_with_counts() -> None:
    log = io.StringIO()
    progress_ = RunProgress(screens.Plain(stderr=True), enabled=True, interval=0.01)
    with contextlib.redirect_stderr(log), progress_ as progress:
        progress.start(3)
        for state in (RunState.COMPLETED, RunState.FAILED):
            done = SimpleNamespace(run=SimpleNamespace(state=state), task=SimpleNamespace(id="t"))
            progress.advance(done)  # type: ignore[arg-type]
        for _ in range(500):  # wait for a tick after both (no timing is asserted)
            if "2/3 done" in log.getvalue():
                break
            time.sleep(0.01)
    lines = log.getvalue().splitlines()
    assert lines[0] == "running 3 task(s)"
    assert any(line.startswith("running: 2/3 done (1 completed, 1 failed), ") for line in lines)
    assert "\x1b" not in log.getvalue()  # no bar drawn into a log


def test_show_from_the_result_files_alone(cli: CliRunner, tmp_path: Path) -> None:
    run_id = "01M8PJTGW3RPWFY5JB4YYZGHJ1"
    folder = tmp_path / "results" / "hello"
    folder.mkdir(parents=True)
    data = {"task_id": "hello", "run_id": run_id, "state": "completed", "attempt": 1}
    (folder / f"{run_id}.json").write_text(json.dumps(data))
    (folder / f"{run_id}.md").write_text("# ✅ hello — completed\n")
    result = cli.invoke(app, ["show", run_id[:8]], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"run {run_id} of task hello: completed (attempt 1)",
        f"result: results/hello/{run_id}.json",
        "state changes: unknown (no state database holds this run)",
        "",
        "# ✅ hello — completed",
    ]
    assert not (tmp_path / ".omni").exists()


def _plant_view(view: Path, kind: str) -> None:
    """A run's ``.md`` as someone able to push the results branch could leave it."""
    if kind == "not utf-8":
        view.write_bytes(b"# caf\xe9\n")
    elif kind == "link":
        secret = view.parent.parent.parent / "secret.txt"
        secret.write_text("not for show\n")
        view.symlink_to(secret)
    else:
        os.mkfifo(view)  # reading it would wait for a writer for ever


@pytest.mark.parametrize(
    ("kind", "shown"),
    [
        ("not utf-8", "# caf\ufffd"),
        ("link", "(not shown: a symbolic link; it is not followed)"),
        ("fifo", "(not shown: not a regular file (a FIFO); only files are read)"),
    ],
)
def test_show_reads_a_runs_view_as_input(
    cli: CliRunner, tmp_path: Path, kind: str, shown: str
) -> None:
    run_id = "01M8PJTGW3RPWFY5JB4YYZGHJ1"
    folder = tmp_path / "results" / "hello"
    folder.mkdir(parents=True)
    data = {"task_id": "hello", "run_id": run_id, "state": "completed", "attempt": 1}
    (folder / f"{run_id}.json").write_text(json.dumps(data))
    _plant_view(folder / f"{run_id}.md", kind)
    result = cli.invoke(app, ["show", run_id], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == shown
    assert "not for show" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--help"],
        ["status", "--limit", "0"],
        ["validate", "--bogus"],
        ["statu"],
        ["--help"],
        ["--version"],
        [],
    ],
    ids=" ".join,
)
def test_a_command_built_alone_answers_as_the_whole_command_line(
    cli: CliRunner, args: list[str]
) -> None:
    whole = cli.invoke(app, args)
    alone = cli.invoke(for_command(args), args)
    assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output)
    # A command it names is built alone; anything else needs them all.
    built = [c.callback.__name__ for c in for_command(args).registered_commands if c.callback]
    named = args[:1] in (["status"], ["validate"])
    assert built == args[:1] if named else len(built) == len(app.registered_commands) > 10


def _rich_prints(text: str) -> str:
    """What rich's console writes to a pipe for ``text`` (as omni printed before it
    wrote pipes without rich)."""
    log = io.StringIO()
    Console(file=log, highlight=False, soft_wrap=True).print(Text(text, style="red"))
    return log.getvalue()


def test_plain_output_is_what_rich_prints_in_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    # Text from outside (a task's error, a result's Markdown) with a carriage return
    # that would overwrite the line before it, a bell, a form feed, tabs, markup, an
    # escape: written without rich, exactly as rich's console writes it to a pipe.
    hostile = "ok\rFAKED\x07 bell\x0c\ta\tbc\t[red]x[/] \x1b[2Jend  \nwide 日本\tz"
    render.line(screens.Plain(), hostile, "red")
    render.table(screens.Plain(stderr=True), ("a", "b"), [("x\r", "y\tz")], title="t")
    printed = capsys.readouterr()
    assert printed.out == _rich_prints(hostile)
    assert printed.err == _rich_prints("t:\na   b\nx\r  y\tz")  # columns as before


def test_a_terminal_that_is_not_drawn_on_loads_no_rich(tmp_path: Path) -> None:
    # `omni status --json | jq` in a terminal: stdout a pipe, stderr the terminal.
    code = (
        "import sys\n"
        "from runner.cli import render\n"
        "out, err = render.consoles()\n"
        "assert err.is_terminal and not out.is_terminal\n"
        "render.line(out, 'piped')\n"
        "print(sorted(m for m in sys.modules if m.startswith('rich')))\n"
    )
    terminal, tty = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=tty,
            text=True,
            check=False,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != "FORCE_COLOR"},
        )
    finally:
        os.close(tty)
        os.close(terminal)
    assert (done.returncode, done.stdout) == (0, "piped\n[]\n")


#: The libraries each cheap command has no use for, so must not load (start-up, issue 16).
#: In a pipe (as here) nothing is drawn: rich (and the attrs it loads) has no use.
_UNUSED = ("sqlite_utils", "numpy", "apscheduler", "psycopg", "mcp", "litellm", "rich", "attr")
_NOT_LOADED = {
    ("--version",): ("pydantic", "yaml", *_UNUSED),
    ("--help",): ("pydantic", "yaml", *_UNUSED),
    ("validate", "tasks/a.yaml"): (*_UNUSED, "asyncio"),  # asyncio: only for --deep
    ("status",): _UNUSED,
}


@pytest.mark.parametrize("args", list(_NOT_LOADED), ids=" ".join)
def test_cheap_commands_load_only_what_they_use(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.yaml").write_text("tool: echo\nargs: {text: hi}\n")
    with Store(tmp_path / ".omni" / "state.db") as store:  # status reads a real state file
        store.create_run("a", "h1", max_attempts=1)
    code = (
        "import json, sys\n"
        "from runner.cli.entry import main\n"
        "sys.argv = ['omni', *json.loads(sys.argv[1])]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "tops = sorted({m.split('.')[0] for m in sys.modules})\n"
        "sys.stderr.write('\\nloaded: ' + json.dumps(tops))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stderr.rpartition("\nloaded: ")[2]))
    assert sorted(loaded.intersection(_NOT_LOADED[args])) == []
