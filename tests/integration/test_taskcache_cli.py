"""The parsed-task cache through the real console script: only a pass that keeps state
writes it (never ``--dry-run`` or ``omni tasks``), and an edited task file is seen."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

from runner.state.taskcache import CACHE_NAME, SETTLED_NS
from tests.support.cli import run_omni

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

pytestmark = pytest.mark.integration

NOW = "2026-11-21T10:05:00Z"


def omni(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "200", "OMNI_NOW": NOW}
    return run_omni(cwd, *args, env=env)


def test_only_a_pass_that_keeps_state_writes_the_cache(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    hello = tmp_path / "tasks" / "hello.yaml"
    hello.write_text("tool: echo\nargs: {text: hello}\n")
    (tmp_path / "tasks" / "bye.yaml").write_text("tool: echo\nargs: {text: bye}\n")
    first = omni(tmp_path, "run", "--once", "--json")
    assert first.returncode == 0, first.stderr
    assert len(json.loads(first.stdout)["runs"]) == 2
    cache = tmp_path / ".omni" / CACHE_NAME
    time.sleep(SETTLED_NS / 1e9 + 0.2)  # a file is remembered once it has settled
    for args in (("run", "--once", "--dry-run"), ("tasks",), ("status",)):
        assert omni(tmp_path, *args).returncode == 0
        assert not cache.exists(), args
    idle = omni(tmp_path, "run", "--once", "--json")
    assert (idle.returncode, json.loads(idle.stdout)["runs"]) == (0, [])
    assert cache.exists()
    hello.write_text("tool: echo\nargs: {text: HELLO}\n")  # the same size
    edited = omni(tmp_path, "run", "--once", "--json")
    ran = json.loads(edited.stdout)["runs"]
    assert [(r["task_id"], r["state"]) for r in ran] == [("hello", "completed")]
    assert json.loads(omni(tmp_path, "run", "--once", "--json").stdout)["runs"] == []
