"""A hostile MCP server (``tests/support/hostile.py``) against omni: bad UTF-8, floods,
a 300 MB answer, colliding tool names, a secret on stderr. Each attack fails only the
call it is in (or, where nothing else can be told, the connection), at once, with a
message saying what happened; memory stays bounded."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from runner.core.errors import ExecutorUnavailableError, ToolError
from runner.defs.config import McpServer
from runner.reach.executors import ExecutorPool
from tests.support.paths import HOSTILE
from tests.support.planted import SECRET

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

pytestmark = pytest.mark.integration


def hostile(*flags: str, **fields: Any) -> McpServer:
    """The hostile server's executor entry; it gets ``OPENAI_API_KEY`` from omni."""
    fields.setdefault("env", {"OPENAI_API_KEY": SECRET})
    return McpServer(command=sys.executable, args=[str(HOSTILE), *flags], **fields)


def write_project(root: Path, tasks: Mapping[str, str], *flags: str, **server: Any) -> None:
    """A config naming the hostile server, and ``tasks`` (file stem -> YAML)."""
    entry = {
        "command": sys.executable,
        "args": [str(HOSTILE), *flags],
        "env": {"OPENAI_API_KEY": "${OPENAI_API_KEY}"},
        "timeout": 30,
        **server,
    }
    # The hostile server lives in tests/support, outside what a sandbox shows a model
    # run's executors; these tests are about its replies, so no bubblewrap here
    # (tests/integration/test_sandbox.py and test_hostile_model.py test the sandbox).
    config = {"mcp_servers": {"hostile": entry}, "workspace": str(root), "sandbox": "off"}
    (root / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
    folder = root / "tasks"
    folder.mkdir(exist_ok=True)
    for stem, text in tasks.items():
        (folder / f"{stem}.yaml").write_text(text, encoding="utf-8")


def env_for(root: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root.parent),  # the project is a folder inside HOME, not HOME itself
        "OPENAI_API_KEY": SECRET,
    }


def results(root: Path, task_id: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / "results" / task_id).glob("*.json"))]


# --- bad UTF-8 ---------------------------------------------------------------------


async def test_bad_utf8_is_replaced_and_the_connection_stays_usable(tmp_path: Path) -> None:
    async with ExecutorPool({"h": hostile(timeout=30)}, workspace=tmp_path) as pool:
        bad = await pool.call_tool("h", "bad_utf8", {})
        after = await pool.call_tool("h", "echo", {"text": "still here"})
    assert bad.text == "before \ufffd\ufffd  after"
    assert not bad.is_error
    assert after.text == "still here"


def test_run_once_never_prints_bad_bytes(tmp_path: Path) -> None:
    write_project(tmp_path, {"bad": "executor: hostile\ntool: bad_utf8\ntimeout: 30\n"})
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--once"],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        stream.decode("utf-8")  # strict: raises on a raw invalid byte
    [result] = results(tmp_path, "bad")
    assert result["state"] == "completed"
    assert result["output"] == {"result": "before \ufffd\ufffd  after"}


# --- messages past the cap -----------------------------------------------------------


async def test_an_answer_past_the_cap_fails_its_call_only(tmp_path: Path) -> None:
    server = hostile(timeout=60, max_message_bytes=1 << 20)
    async with ExecutorPool({"h": server}, workspace=tmp_path) as pool:
        with pytest.raises(ToolError) as info:
            await pool.call_tool("h", "huge", {"megabytes": 3})
        after = await pool.call_tool("h", "echo", {"text": "same server"})
        pid_check = await pool.call_tool("h", "echo", {"text": "x"})
    assert str(info.value).startswith(
        "executor 'h', tool 'huge': the server sent a message of 3,14"
    )
    assert str(info.value).endswith("bytes, over max_message_bytes (1,048,576); the call failed")
    assert (after.text, pid_check.text) == ("same server", "x")


async def test_a_flood_with_no_request_id_ends_the_connection_at_once(tmp_path: Path) -> None:
    server = hostile(timeout=60, max_message_bytes=1 << 20)
    async with ExecutorPool({"h": server}, workspace=tmp_path) as pool:
        with pytest.raises(ExecutorUnavailableError) as info:
            await pool.call_tool("h", "flood", {"megabytes": 3})
        again = await pool.call_tool("h", "echo", {"text": "a new connection"})
    message = str(info.value)
    assert "closed during the call (the server sent a message of 3,145,728 bytes" in message
    assert "over max_message_bytes (1,048,576) with no readable request id)" in message
    assert again.text == "a new connection"


async def test_http_answers_past_the_cap_fail_their_call(
    tmp_path: Path, http_url: str, sse_url: str
) -> None:
    servers = {
        "http": McpServer(url=http_url, max_message_bytes=65536),
        "sse": McpServer(url=sse_url, transport="sse", max_message_bytes=65536),
    }
    async with ExecutorPool(servers, workspace=tmp_path) as pool:
        with pytest.raises(ToolError) as http:
            await pool.call_tool("http", "big", {"size": 200_000})
        with pytest.raises(ExecutorUnavailableError) as sse:  # one stream carries them all
            await pool.call_tool("sse", "big", {"size": 200_000})
        after = [(await pool.call_tool(n, "echo", {"text": n})).text for n in ("http", "sse")]
    over = "the server sent a message over max_message_bytes (65,536)"
    assert str(http.value) == f"executor 'http', tool 'big': {over}; the call failed"
    assert f"closed during the call ({over})" in str(sse.value)
    assert after == ["http", "sse"]


def peak_rss_mb(root: Path, *args: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run ``omni ARGS`` in ``root``; its peak resident memory (MiB) and its outcome."""
    with (
        (root / "out.txt").open("w+") as out,
        subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            cwd=root,
            env=env_for(root),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc,
    ):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), "")
    return usage.ru_maxrss // 1024, done


@pytest.mark.timeout(180)
def test_a_300_mb_answer_fails_the_run_and_memory_stays_bounded(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        {
            "small": "executor: hostile\ntool: echo\nargs: {text: hi}\n",
            "huge": "executor: hostile\ntool: huge\nargs: {megabytes: 300}\ntimeout: 60\n",
        },
    )
    baseline, small = peak_rss_mb(tmp_path, "run", "--once", "--task", "small")
    assert small.returncode == 0, small.stdout
    peak, huge = peak_rss_mb(tmp_path, "run", "--once", "--task", "huge")
    assert huge.returncode == 1, huge.stdout
    [result] = results(tmp_path, "huge")
    assert result["state"] == "failed"
    assert result["error"].startswith("executor 'hostile', tool 'huge': the server sent a message")
    assert result["error"].endswith("over max_message_bytes (16,777,216); the call failed")
    assert peak - baseline < 200, (baseline, peak)  # loosely: it once took ~1 GB


# --- tool names, stderr ------------------------------------------------------------


@pytest.mark.timeout(120)
def test_tool_names_that_collide_for_the_model_fail_the_run_by_name(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        {"ask": "executor: hostile\nprompt: Use a_b.\n"},
        "--collide",
    )
    config = json.loads((tmp_path / "config.yaml").read_text())
    # A model is configured (never called: the tools are refused before the first turn).
    config["model_list"] = [
        {
            "model_name": "m",
            "litellm_params": {"model": "openai/m", "api_base": "http://127.0.0.1:9"},
        }
    ]
    (tmp_path / "config.yaml").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--once"],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    [result] = results(tmp_path, "ask")
    assert result["state"] == "failed"
    assert result["error"] == (
        "executor 'hostile' offers tools 'a.b' and 'a_b', which both become the function name"
        " 'a_b' for the model; list only one of them in the task's `tools:`, or rename one on"
        " the server"
    )


async def test_stderr_is_logged_a_line_a_record_naming_the_executor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with ExecutorPool({"h": hostile("--shout-at-start", "NAME")}, workspace=tmp_path) as pool:
        await pool.call_tool("h", "shout", {"name": "OPENAI_API_KEY"})
        await pool.call_tool("h", "echo", {"text": "sync"})
    lines = [r for r in caplog.records if getattr(r, "omni", {}).get("event") == "executor_stderr"]
    assert [r.getMessage() for r in lines] == [
        "executor 'h' stderr: starting with",
        f"executor 'h' stderr: the OPENAI_API_KEY is {SECRET}",  # the handler redacts it
    ]
    assert {r.omni["executor"] for r in lines} == {"h"}
