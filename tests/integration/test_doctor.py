"""``omni doctor`` as a user runs it: a subprocess, one line a check with its time, exit 1
only on a failure (an unset optional key warns), ``--json``, and never a key's value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from runner.reach.sandbox import probe
from tests.support.paths import SERVERS
from tests.support.upstream import ScriptedUpstream, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration


GITHUB_KEY = "sk-doctor-github-key-5150"
MODEL_KEY = "sk-doctor-model-key-8080"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        server.script("doc-model", [{"content": "ok"}])
        server.script("doc-direct", [{"content": "ok"}])
        yield server


def doctor(tmp_path: Path, config: dict[str, Any], *args: str, **env: str) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "runner", "doctor", "--config", str(path), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), **env},
    )
    assert done.stderr == "" or "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


@pytest.mark.timeout(120)
def test_all_checks_pass_one_line_each_and_no_key_is_shown(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    config = {
        "model_list": [
            {
                "model_name": "doc-model",
                "litellm_params": {
                    "model": "openai/doc-model",
                    "api_base": upstream.url,
                    "api_key": "os.environ/DOC_MODEL_KEY",
                },
            }
        ],
        "direct_api": {"model": "github/doc-direct", "api_base": upstream.url},
        "mcp_servers": {"tester": {"command": sys.executable, "args": [str(SERVERS), "stdio"]}},
        "workspace": str(tmp_path),
    }
    code, out = doctor(tmp_path, config, GITHUB_LITELLM_KEY=GITHUB_KEY, DOC_MODEL_KEY=MODEL_KEY)
    lines = out.splitlines()
    assert code == 0, out
    names = [line.split()[1:3] for line in lines]
    assert names == [
        ["key", "lite_llm_key"],
        ["key", "github_key"],
        ["key", "DOC_MODEL_KEY"],
        ["gateway", "(in-process"],
        ["direct", "API"],
        ["executor", "builtin"],
        ["executor", "tester"],
        ["sandbox", "(auto)"],
    ]
    assert lines[0].startswith("skip")  # no proxy: no proxy key needed
    assert all(line.startswith("ok") for line in lines[1:-1]), out
    assert lines[-1].startswith("ok" if probe().available else "warn"), out
    assert "set (env GITHUB_LITELLM_KEY)" in lines[1]
    assert "doc-model answered" in lines[3]
    assert "LiteLLM loaded first in" in lines[3]  # its import shown apart, not timed
    assert all(" ms " in line for line in lines)  # every check's time
    assert "echo" in lines[5]
    assert GITHUB_KEY not in out
    assert MODEL_KEY not in out


@pytest.mark.timeout(120)
def test_failures_exit_1_and_json_names_them(tmp_path: Path) -> None:
    config = {
        "lite_llm_url": f"http://127.0.0.1:{free_port()}",
        "lite_llm_key": "sk-doctor-proxy-key-3131",
        "mcp_servers": {"broken": {"command": str(tmp_path / "no-such-program")}},
        "workspace": str(tmp_path),
    }
    code, out = doctor(tmp_path, config)
    assert code == 1
    assert "sk-doctor-proxy-key-3131" not in out
    code, out = doctor(tmp_path, config, "--json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert status == {
        "key lite_llm_key": "ok",
        "key github_key": "warn",  # optional: without it prompt runs wait when the gateway fails
        f"gateway {config['lite_llm_url']}": "fail",
        "direct API https://models.github.ai/inference": "skip",
        "executor broken": "fail",
        "executor builtin": "ok",
        "sandbox (auto)": status["sandbox (auto)"],  # this machine's; see the tests below
    }
    details = {c["name"]: c["detail"] for c in data["checks"]}
    assert "/health/liveliness" in details[f"gateway {config['lite_llm_url']}"]
    assert "sk-doctor-proxy-key-3131" not in out


@pytest.mark.timeout(120)
def test_an_unset_backup_key_warns_and_exits_0(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    config = {
        "model_list": [
            {
                "model_name": "doc-model",
                "litellm_params": {
                    "model": "openai/doc-model",
                    "api_base": upstream.url,
                    "api_key": "sk-upstream-test",
                },
            }
        ],
        "workspace": str(tmp_path),
    }
    code, out = doctor(tmp_path, config, "--json")
    data = json.loads(out)
    assert code == 0, out
    assert data["ok"] is True
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert status["key github_key"] == "warn"
    assert status["gateway (in-process router)"] == "ok"
    warn = next(c for c in data["checks"] if c["name"] == "key github_key")
    assert "prompt runs wait" in warn["detail"]
    assert all(c["took_ms"] >= 0 for c in data["checks"])


def fake_bwrap(tmp_path: Path) -> Path:
    """A bwrap that fails the way it does on Ubuntu 24.04 without the sysctl."""
    path = tmp_path / "bwrap"
    path.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(("mode", "code", "status"), [("auto", 0, "warn"), ("required", 1, "fail")])
def test_a_blocked_sandbox_is_named_with_its_cause_and_fix(
    tmp_path: Path, mode: str, code: int, status: str
) -> None:
    config = {"sandbox": mode, "workspace": str(tmp_path)}
    got, out = doctor(tmp_path, config, "--json", OMNI_BWRAP=str(fake_bwrap(tmp_path)))
    assert got == code
    [check] = [c for c in json.loads(out)["checks"] if c["name"] == f"sandbox ({mode})"]
    assert check["status"] == status
    assert "setting up uid map: Permission denied" in check["detail"]
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in check["detail"]
    _, text = doctor(tmp_path, config, OMNI_BWRAP=str(fake_bwrap(tmp_path)))
    assert any(line.startswith(f"{status} ") and "sandbox" in line for line in text.splitlines())


@pytest.mark.skipif(
    not probe().available and os.environ.get("CI") != "true",
    reason="bubblewrap cannot run here (CI would fail)",
)
def test_a_working_sandbox_starts_the_builtin_in_it(tmp_path: Path) -> None:
    _, out = doctor(tmp_path, {"workspace": str(tmp_path)}, "--json")
    [check] = [c for c in json.loads(out)["checks"] if c["name"] == "sandbox (auto)"]
    assert check["status"] == "ok", check["detail"]
    assert "the built-in executor starts in it (5 tools" in check["detail"]
