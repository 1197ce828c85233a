"""A planted secret (``OPENAI_API_KEY=sk-planted-…``, in the environment and in the
config) against every output omni has, after runs that try to leak it: a hostile MCP
server prints it to stderr, answers with it (plain, base64, hex), fails with it (the
retry path), wraps it in bad UTF-8. Grepped, in each of those forms, across the result
files and their Markdown, the state database, both log formats (``run --once`` and the
service), ``omni status`` and ``omni doctor`` (text and ``--json``), git history and the
pull-request body: never found. A proxy URL's password is never shown either."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from tests.support.git import git
from tests.support.paths import HOSTILE
from tests.support.planted import SECRET, URL_PASSWORD
from tests.support.service import rows

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def forms(secret: str) -> dict[str, bytes]:
    """The secret as written, in hex, and in base64 at each alignment (the part that
    depends on the secret alone)."""
    raw = secret.encode()
    found = {"plain": raw, "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode()}
    for offset in range(3):
        found[f"base64+{offset}"] = base64.b64encode(b"\0" * offset + raw)[4:-4]
    return found


def leaks(name: str, data: bytes) -> list[str]:
    """Which forms of the secrets ``data`` holds."""
    found = [f"{form} of the key in {name}" for form, v in forms(SECRET).items() if v in data]
    if URL_PASSWORD.encode() in data:
        found.append(f"the proxy password in {name}")
    return found


def task(tool: str, **args: str | int) -> str:
    return json.dumps({"executor": "hostile", "tool": tool, "args": args, "timeout": 30})


def write_project(root: Path, port: int) -> None:
    server = {
        "command": sys.executable,
        "args": [str(HOSTILE), "--shout-at-start", "OPENAI_API_KEY"],
        "env": {"OPENAI_API_KEY": "${OPENAI_API_KEY}"},
        "timeout": 30,
    }
    config = {
        # PROXY_AUTH is no secret-looking name: only the URL tells it is a password.
        "lite_llm_url": f"http://omni:${{PROXY_AUTH}}@127.0.0.1:{port}",
        "lite_llm_key": "${OPENAI_API_KEY}",
        "mcp_servers": {"hostile": server},
        "fault_handler": {"lite_llm_timeout": 0.5},
        "workspace": str(root),
        # The hostile server lives in tests/support, outside a sandbox's view of the
        # files; this test is about outputs, the sandbox has its own tests.
        "sandbox": "off",
    }
    (root / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
    tasks = root / "tasks"
    tasks.mkdir()
    key = "OPENAI_API_KEY"
    for form in ("plain", "base64", "hex"):
        (tasks / f"shout-{form}.yaml").write_text(task("shout", name=key, form=form))
        (tasks / f"reveal-{form}.yaml").write_text(task("reveal", name=key, form=form))
    failing = json.loads(task("fail", name=key)) | {"retries": 1}
    (tasks / "fail.yaml").write_text(json.dumps(failing))
    (tasks / "bad.yaml").write_text(task("bad_utf8", name=key))


def env_for(root: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root.parent),  # the project is a folder inside HOME, not HOME itself
        "OPENAI_API_KEY": SECRET,
        "PROXY_AUTH": URL_PASSWORD,
        "GIT_CONFIG_GLOBAL": os.devnull,
    }


def omni(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=root,
        env=env_for(root),
        capture_output=True,
        timeout=180,
        check=False,
    )


def serve_until(root: Path, log: Path, done: list[str]) -> None:
    """Service mode with JSON logs until the task files ``done`` names (added once it is
    ready) have completed; then SIGTERM."""
    with (
        log.open("wb") as out,
        subprocess.Popen(
            [sys.executable, "-m", "runner", "run", "--log-format", "json"],
            cwd=root,
            env=env_for(root),
            stdout=out,
            stderr=subprocess.STDOUT,
        ) as proc,
    ):
        try:
            deadline = time.monotonic() + 60
            while b"ready: watching" not in log.read_bytes():
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.05)
            for name in done:
                form = name.rpartition("-")[2]
                (root / "tasks" / f"{name}.yaml").write_text(
                    task("shout", name="OPENAI_API_KEY", form=form)
                )
            while not {r["task_id"] for r in rows(root) if r["state"] == "completed"} >= set(done):
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def save(outputs: dict[str, bytes], folder: Path) -> None:
    """Each command's stdout and stderr as ``folder/COMMAND.out`` and ``.err``, so the
    session-wide leak scan (tests/support/leakscan.py) reads them too."""
    folder.mkdir()
    for name, data in outputs.items():
        stem, _, stream = name.rpartition(" ")
        if stream in {"stdout", "stderr"}:
            slug = "".join(c if c.isalnum() else "-" for c in stem)
            (folder / f"{slug}.{stream[3:]}").write_bytes(data)


@pytest.mark.timeout(300)
def test_a_planted_secret_is_in_no_output(tmp_path: Path, unreachable_url: str) -> None:
    port = int(unreachable_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    write_project(tmp_path, port)
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "tasks")
    git(tmp_path, "branch", "base")
    outputs: dict[str, bytes] = {}

    def keep(name: str, done: subprocess.CompletedProcess[bytes], code: int) -> None:
        outputs[f"{name} stdout"], outputs[f"{name} stderr"] = done.stdout, done.stderr
        assert done.returncode == code, (name, done.stderr.decode(errors="replace"))

    # --verbose: every log line there is (executor stderr included) is checked for leaks.
    keep("run --once --commit", omni(tmp_path, "run", "--once", "--commit", "--verbose"), 1)
    json_run = omni(
        tmp_path, "run", "--once", "--force", "--task", "shout-base64", "--log-format", "json"
    )
    keep("run --once --log-format json", json_run, 0)
    serve_until(tmp_path, tmp_path / "service.log", ["late-plain", "late-hex"])
    outputs["service log"] = (tmp_path / "service.log").read_bytes()
    keep("status", omni(tmp_path, "status"), 0)
    keep("status --json", omni(tmp_path, "status", "--json"), 0)
    keep("doctor", omni(tmp_path, "doctor"), 1)
    keep("doctor --json", omni(tmp_path, "doctor", "--json"), 1)
    keep("report", omni(tmp_path, "report", "--base", "base", "--branch", "main"), 0)
    history = subprocess.run(
        ["git", "log", "-p", "--all"], cwd=tmp_path, capture_output=True, check=True
    )
    outputs["git history"] = history.stdout
    for path in sorted((tmp_path / "results").rglob("*")) + sorted(
        (tmp_path / ".omni").glob("state.db*")
    ):
        if path.is_file():
            outputs[str(path.relative_to(tmp_path))] = path.read_bytes()

    found = [leak for name, data in outputs.items() for leak in leaks(name, data)]
    assert found == []
    save(outputs, tmp_path / "saved-output")

    # The attempts did happen, and were masked.
    text_log = outputs["run --once --commit stderr"].decode()
    assert "executor 'hostile' stderr: starting with [redacted]" in text_log
    assert "executor 'hostile' stderr: the OPENAI_API_KEY is [redacted]" in text_log
    records = [json.loads(line) for line in outputs["service log"].splitlines()]
    shouted = [r for r in records if r.get("event") == "executor_stderr"]
    assert {r["message"] for r in shouted} >= {
        "executor 'hostile' stderr: the OPENAI_API_KEY is [redacted]"
    }
    assert all(r["executor"] == "hostile" for r in shouted)
    fail = rows(tmp_path, "fail")
    assert [(r["state"], r["attempt"]) for r in fail] == [("failed", 2)]
    assert "cannot go on with [redacted]" in fail[0]["error"]
    status = json.loads(outputs["status --json stdout"])
    assert any("[redacted]" in (run["error"] or "") for run in status["recent_runs"])
    doctor = json.loads(outputs["doctor --json stdout"])
    assert f"gateway http://127.0.0.1:{port}" in [c["name"] for c in doctor["checks"]]
    assert b"omni:" not in outputs["doctor stdout"]
    reveal = json.loads(next((tmp_path / "results" / "reveal-plain").glob("*.json")).read_text())
    assert reveal["output"] == {"result": "the OPENAI_API_KEY is [redacted]"}
    assert "[redacted]" in outputs["report stdout"].decode()
