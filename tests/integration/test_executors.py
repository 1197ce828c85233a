"""The MCP connection pool against real servers: the built-in executor, mcp-server-git,
and the test servers in ``servers.py`` over stdio, streamable HTTP and SSE."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import mcp_types as types
import pytest

from runner.core.errors import ExecutorTimeoutError, ExecutorUnavailableError, ToolError
from runner.defs.config import BUILTIN, McpServer
from runner.reach.executors import ExecutorPool
from runner.reach.tools import ListedTool, ToolInfo

if TYPE_CHECKING:
    import subprocess

pytestmark = pytest.mark.integration

MakeServer = Callable[..., McpServer]


# --- the built-in executor -------------------------------------------------------------


async def test_builtin_is_always_there(workspace: Path) -> None:
    async with ExecutorPool({}, workspace=workspace) as pool:
        assert pool.names() == [BUILTIN]
        assert pool.has(BUILTIN)
        assert not pool.has("nope")
        tools = await pool.list_tools(BUILTIN)
    assert {t.name for t in tools} == {"echo", "read_file", "write_file", "list_dir", "run"}
    assert all(isinstance(t, ToolInfo) and t.input_schema for t in tools)


async def test_a_pool_closed_while_the_sdk_loads_starts_no_server(workspace: Path) -> None:
    pool = ExecutorPool({}, workspace=workspace)
    async with pool:
        call = asyncio.create_task(pool.call_tool(BUILTIN, "echo", {"text": "late"}))
        await asyncio.sleep(0)  # the call is loading the SDK on its worker thread
    with pytest.raises(ExecutorUnavailableError, match="the executor pool is closed"):
        await call
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("mcp-")] == []


async def test_builtin_files_and_echo(workspace: Path) -> None:
    async with ExecutorPool({}, workspace=workspace) as pool:
        echo = await pool.call_tool(BUILTIN, "echo", {"text": "hello"})
        written = await pool.call_tool(
            BUILTIN, "write_file", {"path": "sub/dir/a.txt", "content": "héllo"}
        )
        read = await pool.call_tool(BUILTIN, "read_file", {"path": "sub/dir/a.txt"})
        (workspace / "z.txt").write_text("z", encoding="utf-8")
        listing = await pool.call_tool(BUILTIN, "list_dir", {})
        nested = await pool.call_tool(BUILTIN, "list_dir", {"path": "sub"})
    assert (echo.text, echo.structured, echo.is_error) == ("hello", None, False)
    assert (written.text, written.structured) == ("6", None)
    assert (workspace / "sub/dir/a.txt").read_text(encoding="utf-8") == "héllo"
    assert read.text == "héllo"
    assert listing.text == "sub/\nz.txt"
    assert nested.text == "dir/"


async def test_builtin_run(workspace: Path) -> None:
    (workspace / "f.txt").write_text("x", encoding="utf-8")
    async with ExecutorPool({}, workspace=workspace) as pool:
        ok = await pool.call_tool(BUILTIN, "run", {"command": "ls"})
        listed = await pool.call_tool(
            BUILTIN, "run", {"command": [sys.executable, "-c", "print(1)"]}
        )
        bad = await pool.call_tool(
            BUILTIN, "run", {"command": ["sh", "-c", "echo out; echo err >&2; exit 3"]}
        )
        slow = await pool.call_tool(BUILTIN, "run", {"command": "sleep 30", "timeout": 0.5})
        missing = await pool.call_tool(BUILTIN, "run", {"command": "omni-no-such-program"})
    assert not ok.is_error and ok.text == "f.txt\n"
    assert ok.structured["exit_code"] == 0
    assert listed.text == "1\n"
    assert bad.is_error
    assert bad.structured["exit_code"] == 3
    assert "out\nerr\n" in bad.text and bad.text.startswith("exit code 3")
    assert slow.is_error and slow.structured["timed_out"]
    assert missing.is_error and "command not found: 'omni-no-such-program'" in missing.text


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("read_file", {"path": "../secret.txt"}),
        ("read_file", {"path": "ABS/secret.txt"}),
        ("read_file", {"path": "link/secret.txt"}),
        ("write_file", {"path": "link/new.txt", "content": "x"}),
        ("write_file", {"path": "../new.txt", "content": "x"}),
        ("list_dir", {"path": "link"}),
    ],
)
async def test_builtin_refuses_paths_outside(
    workspace: Path, tool: str, args: dict[str, str]
) -> None:
    outside = workspace.parent
    (outside / "secret.txt").write_text("secret", encoding="utf-8")
    (workspace / "link").symlink_to(outside)
    args = {k: v.replace("ABS", str(outside)) for k, v in args.items()}
    async with ExecutorPool({}, workspace=workspace) as pool:
        outcome = await pool.call_tool(BUILTIN, tool, args)
    assert outcome.is_error
    assert "is outside the workspace" in outcome.text
    assert "secret" not in outcome.text.replace("secret.txt", "")
    assert not (outside / "new.txt").exists()


# --- other stdio servers ---------------------------------------------------------------


async def test_mcp_server_git(workspace: Path, git_repo: Path) -> None:
    servers = {"git": McpServer(command="mcp-server-git", args=["--repository", str(git_repo)])}
    async with ExecutorPool(servers, workspace=workspace) as pool:
        assert {"git_status", "git_log"} <= {t.name for t in await pool.list_tools("git")}
        status = await pool.call_tool("git", "git_status", {"repo_path": str(git_repo)})
        log = await pool.call_tool("git", "git_log", {"repo_path": str(git_repo), "max_count": 5})
    assert not status.is_error and "new.txt" in status.text
    assert not log.is_error and "first commit from the tests" in log.text


@pytest.mark.parametrize("mode", ["stdio", "legacy-stdio"])
async def test_meta_reaches_the_server(
    workspace: Path, stdio_server: MakeServer, mode: str
) -> None:
    async with ExecutorPool({"t": stdio_server(mode)}, workspace=workspace) as pool:
        outcome = await pool.call_tool("t", "context", {}, meta={"omni/run_id": "R-1"})
    assert outcome.structured["meta"]["omni/run_id"] == "R-1"
    expected = "2025-11-25" if mode == "legacy-stdio" else "2026-07-28"
    assert outcome.structured["protocol_version"] == expected


async def test_stdio_env_is_explicit(workspace: Path, stdio_server: MakeServer) -> None:
    environ = {**os.environ, "OMNI_PARENT_ONLY": "leak?"}
    servers = {"t": stdio_server(env={"OMNI_TEST_VAR": "given"})}
    async with ExecutorPool(servers, workspace=workspace, environ=environ) as pool:
        outcome = await pool.call_tool("t", "context", {})
    assert outcome.structured["env"] == {"OMNI_TEST_VAR": "given", "OMNI_PARENT_ONLY": None}


@pytest.mark.parametrize("token", ["tok-123", None])
async def test_ws_url_goes_through_the_openclaw_bridge(
    workspace: Path, tmp_path: Path, servers_script: Path, token: str | None
) -> None:
    # A stand-in `openclaw` on PATH that serves the test server and reports its argv.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "openclaw"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{servers_script}" stdio "$@"\n')
    script.chmod(0o755)
    environ = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    if token:
        environ["OPENCLAW_GATEWAY_TOKEN"] = token
    servers = {"claw": McpServer(url="ws://127.0.0.1:18789")}
    async with ExecutorPool(servers, workspace=workspace, environ=environ) as pool:
        outcome = await pool.call_tool("claw", "context", {})
        argv = outcome.structured["argv"]
        token_file = Path(argv[-1]) if token else None
        if token_file is not None:  # while the bridge runs: the token, for this user only
            assert token_file.read_text(encoding="utf-8") == token
            assert token_file.stat().st_mode & 0o777 == 0o600
    expected = ["mcp", "serve", "--url", "ws://127.0.0.1:18789"]
    assert argv == expected + (["--token-file", str(token_file)] if token else [])
    assert token is None or token not in " ".join(argv)
    assert token_file is None or not token_file.exists()  # removed with the connection


async def test_openclaw_not_installed(workspace: Path) -> None:
    servers = {"claw": McpServer(url="wss://example.invalid")}
    async with ExecutorPool(servers, workspace=workspace, environ={"PATH": "/nonexistent"}) as pool:
        with pytest.raises(ExecutorUnavailableError, match="cannot start 'openclaw': command not"):
            await pool.call_tool("claw", "anything", {})


# --- HTTP and SSE ----------------------------------------------------------------------


async def test_streamable_http(workspace: Path, http_url: str) -> None:
    servers = {"h": McpServer(url=http_url, headers={"X-Omni-Test": "yes"})}
    async with ExecutorPool(servers, workspace=workspace) as pool:
        echo = await pool.call_tool("h", "echo", {"text": "over http"})
        ctx = await pool.call_tool("h", "context", {}, meta={"omni/run_id": "R-2"})
    assert echo.text == "over http"
    assert ctx.structured["meta"]["omni/run_id"] == "R-2"
    assert ctx.structured["header"] == "yes"


async def test_sse(workspace: Path, sse_url: str) -> None:
    servers = {"s": McpServer(url=sse_url, transport="sse", headers={"X-Omni-Test": "sse"})}
    async with ExecutorPool(servers, workspace=workspace) as pool:
        echo = await pool.call_tool("s", "echo", {"text": "over sse"})
        ctx = await pool.call_tool("s", "context", {}, meta={"omni/run_id": "R-3"})
        failed = await pool.call_tool("s", "fail", {})
    assert echo.text == "over sse"
    assert ctx.structured["meta"]["omni/run_id"] == "R-3"
    assert ctx.structured["header"] == "sse"
    assert failed.is_error


async def test_http_unreachable(workspace: Path, unreachable_url: str) -> None:
    servers = {"h": McpServer(url=unreachable_url)}
    async with ExecutorPool(servers, workspace=workspace) as pool:
        with pytest.raises(ExecutorUnavailableError, match=f"cannot reach {unreachable_url}"):
            await pool.call_tool("h", "echo", {"text": "x"})


async def test_http_server_dies_mid_call(
    workspace: Path, own_http_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, proc = own_http_server
    async with ExecutorPool({"h": McpServer(url=url)}, workspace=workspace) as pool:
        assert (await pool.call_tool("h", "echo", {"text": "up"})).text == "up"
        call = asyncio.create_task(pool.call_tool("h", "sleep", {"seconds": 30}, timeout=20))
        await asyncio.sleep(0.3)
        proc.kill()
        proc.wait()
        with pytest.raises(ExecutorUnavailableError):
            await call
        with pytest.raises(ExecutorUnavailableError, match="cannot reach"):
            await pool.call_tool("h", "echo", {"text": "down"})


# --- failures --------------------------------------------------------------------------


async def test_crash_mid_call_then_restart(workspace: Path, stdio_server: MakeServer) -> None:
    async with ExecutorPool({"t": stdio_server()}, workspace=workspace) as pool:
        before = (await pool.call_tool("t", "context", {})).structured["pid"]
        with pytest.raises(ExecutorUnavailableError, match="closed during the call") as info:
            await pool.call_tool("t", "crash", {})
        assert info.value.tool == "crash"
        after = (await pool.call_tool("t", "context", {})).structured["pid"]
    assert after != before


async def test_timeout_leaves_the_connection_usable(
    workspace: Path, stdio_server: MakeServer
) -> None:
    async with ExecutorPool({"t": stdio_server(timeout=30)}, workspace=workspace) as pool:
        before = (await pool.call_tool("t", "context", {})).structured["pid"]
        with pytest.raises(ExecutorTimeoutError, match=r"no answer within 0\.3 s"):
            await pool.call_tool("t", "sleep", {"seconds": 30}, timeout=0.3)
        after = await pool.call_tool("t", "context", {})
    assert after.structured["pid"] == before


async def test_server_timeout_is_the_default(workspace: Path, stdio_server: MakeServer) -> None:
    async with ExecutorPool({"t": stdio_server(timeout=0.5)}, workspace=workspace) as pool:
        with pytest.raises(ExecutorTimeoutError, match=r"no answer within 0\.5 s"):
            await pool.call_tool("t", "sleep", {"seconds": 30})
        assert (await pool.call_tool("t", "echo", {"text": "still here"})).text == "still here"


async def test_command_not_installed(workspace: Path) -> None:
    servers = {"x": McpServer(command="omni-no-such-command", args=["--flag"])}
    async with ExecutorPool(servers, workspace=workspace) as pool:
        for _ in range(2):  # a failed start is not cached as a live connection
            with pytest.raises(ExecutorUnavailableError) as info:
                await pool.call_tool("x", "echo", {"text": "x"})
            assert "cannot start 'omni-no-such-command': command not found" in str(info.value)


async def test_server_that_exits_at_start(workspace: Path) -> None:
    servers = {"x": McpServer(command=sys.executable, args=["-c", "pass"])}
    async with ExecutorPool(servers, workspace=workspace) as pool:
        with pytest.raises(ExecutorUnavailableError, match="during the MCP handshake"):
            await pool.list_tools("x")


async def test_unknown_executor(workspace: Path, stdio_server: MakeServer) -> None:
    async with ExecutorPool({"t": stdio_server()}, workspace=workspace) as pool:
        with pytest.raises(ExecutorUnavailableError, match="configured: builtin, t"):
            await pool.call_tool("nope", "echo", {"text": "x"})


async def test_is_error_is_returned(workspace: Path, stdio_server: MakeServer) -> None:
    async with ExecutorPool({"t": stdio_server()}, workspace=workspace) as pool:
        outcome = await pool.call_tool("t", "fail", {"message": "disk on fire"})
    assert outcome.is_error
    assert "disk on fire" in outcome.text


async def test_huge_output(workspace: Path, stdio_server: MakeServer) -> None:
    size = 5_000_000
    async with ExecutorPool({"t": stdio_server()}, workspace=workspace) as pool:
        outcome = await pool.call_tool("t", "big", {"size": size})
    assert len(outcome.text) == size
    assert not outcome.is_error


async def test_unknown_tool(workspace: Path, stdio_server: MakeServer) -> None:
    async with ExecutorPool({"t": stdio_server()}, workspace=workspace) as pool:
        with pytest.raises(ToolError, match=r"unknown tool; the server has: add, big, ") as info:
            await pool.call_tool("t", "nope", {})
    assert info.value.tool == "nope"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"a": 1},
            r"missing required argument\(s\) 'b'; the tool takes \(a: integer, b: integer\)",
        ),
        ({"a": 1, "b": "two"}, "argument 'b' must be integer, got str 'two'"),
        ({"a": True, "b": 2}, "argument 'a' must be integer, got bool"),
    ],
)
async def test_args_failing_the_schema(
    workspace: Path, stdio_server: MakeServer, args: dict[str, object], message: str
) -> None:
    async with ExecutorPool({"t": stdio_server()}, workspace=workspace) as pool:
        with pytest.raises(ToolError, match=message):
            await pool.call_tool("t", "add", args)
        assert (await pool.call_tool("t", "add", {"a": 1, "b": 2})).structured == {"result": 3}


@pytest.mark.parametrize("mode", ["stdio", "legacy-stdio"])
async def test_tools_list_changed_refreshes_the_cache(
    workspace: Path, stdio_server: MakeServer, mode: str
) -> None:
    async with ExecutorPool({"t": stdio_server(mode)}, workspace=workspace) as pool:
        assert "late" not in {t.name for t in await pool.list_tools("t")}
        await pool.call_tool("t", "grow", {"name": "late"})
        for _ in range(100):  # the notification may land just after the call's answer
            if "late" in {t.name for t in await pool.list_tools("t")}:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("tools/list_changed did not refresh the tool cache")
        assert (await pool.call_tool("t", "late", {})).text == "I am late"


async def test_max_concurrency(workspace: Path, stdio_server: MakeServer) -> None:
    async with ExecutorPool({"t": stdio_server(max_concurrency=2)}, workspace=workspace) as pool:
        outcomes = await asyncio.gather(
            *(pool.call_tool("t", "inflight", {"seconds": 0.3}) for _ in range(5))
        )
    assert max(o.structured["result"] for o in outcomes) == 2


async def test_concurrent_first_calls_share_one_server(
    workspace: Path, stdio_server: MakeServer
) -> None:
    async with ExecutorPool({"t": stdio_server()}, workspace=workspace) as pool:
        outcomes = await asyncio.gather(*(pool.call_tool("t", "context", {}) for _ in range(4)))
    assert len({o.structured["pid"] for o in outcomes}) == 1


async def test_closed_pool_refuses_calls(workspace: Path) -> None:
    pool = ExecutorPool({}, workspace=workspace)
    async with pool:
        await pool.call_tool(BUILTIN, "echo", {"text": "x"})
    with pytest.raises(ExecutorUnavailableError, match="pool is closed"):
        await pool.call_tool(BUILTIN, "echo", {"text": "x"})


async def test_cancelled_call_leaves_the_connection_usable(
    workspace: Path, stdio_server: MakeServer
) -> None:
    async with ExecutorPool({"t": stdio_server()}, workspace=workspace) as pool:
        before = (await pool.call_tool("t", "context", {})).structured["pid"]
        call = asyncio.create_task(pool.call_tool("t", "sleep", {"seconds": 30}))
        await asyncio.sleep(0.2)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert (await pool.call_tool("t", "context", {})).structured["pid"] == before


def test_schema_check_of_a_closed_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": ["integer", "null"]}, "tag": {}},
        "required": ["n"],
        "additionalProperties": False,
    }
    tool = ListedTool.of(types.Tool(name="t", input_schema=schema))
    assert tool.problem({"n": None}) is None
    assert tool.problem({"n": 3.0, "tag": [1]}) is None
    assert tool.problem({"n": 1.5}) == "argument 'n' must be integer or null, got float 1.5"
    assert tool.problem({"n": 1, "x": 2}) == (
        "unknown argument 'x'; the tool takes (n: integer|null, tag: any?)"
    )
