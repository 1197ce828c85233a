"""The built-in executor: path confinement and ``run`` as plain functions, and the
MCP server in-process through ``mcp.client.client.Client``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from mcp.client.client import Client

from runner.core.pathglob import PathRules
from runner.reach.builtin import ops
from runner.reach.builtin.catalog import DESCRIPTIONS, TOOLS
from runner.reach.builtin.server import build_server, main


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "a.txt").write_text("alpha", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("secret", encoding="utf-8")
    return path


# --- confinement -----------------------------------------------------------------------


@pytest.mark.parametrize("path", [".", "sub", "sub/a.txt", "sub/../sub/a.txt", "new/file.txt"])
def test_confine_allows_paths_inside(ws: Path, path: str) -> None:
    assert ops.confine(ws, path).is_relative_to(ws.resolve())


def test_confine_allows_absolute_paths_inside(ws: Path) -> None:
    assert ops.confine(ws, str(ws / "sub" / "a.txt")) == (ws / "sub" / "a.txt").resolve()


@pytest.mark.parametrize("path", ["..", "../secret.txt", "sub/../../secret.txt", "/etc/passwd"])
def test_confine_refuses_escapes(ws: Path, path: str) -> None:
    with pytest.raises(ops.OutsideWorkspaceError, match=r"path '.*' is outside the workspace"):
        ops.confine(ws, path)


def test_confine_follows_symlinks(ws: Path) -> None:
    (ws / "out").symlink_to(ws.parent)
    (ws / "dangling").symlink_to(ws.parent / "not-yet.txt")
    (ws / "inside").symlink_to(ws / "sub")
    for path in ("out", "out/secret.txt", "dangling"):
        with pytest.raises(ops.OutsideWorkspaceError, match=f"path '{path}' is outside"):
            ops.confine(ws, path)
    assert ops.confine(ws, "inside/a.txt") == (ws / "sub" / "a.txt").resolve()


# --- files -----------------------------------------------------------------------------


def test_read_write_list(ws: Path) -> None:
    assert ops.write_file(ws, "x/y/z.txt", "héllo") == 6
    assert ops.read_file(ws, "x/y/z.txt") == "héllo"
    assert ops.list_dir(ws) == ["sub/", "x/"]
    assert ops.list_dir(ws, "x/y") == ["z.txt"]


def test_file_errors_are_clear(ws: Path) -> None:
    with pytest.raises(ops.BuiltinError, match=r"no such file: 'nope\.txt'"):
        ops.read_file(ws, "nope.txt")
    with pytest.raises(ops.BuiltinError, match="is a folder"):
        ops.read_file(ws, "sub")
    with pytest.raises(ops.BuiltinError, match="is a folder"):
        ops.write_file(ws, "sub", "x")
    with pytest.raises(ops.BuiltinError, match="no such folder"):
        ops.list_dir(ws, "nope")
    with pytest.raises(ops.BuiltinError, match="is a file, not a folder"):
        ops.list_dir(ws, "sub/a.txt")
    with pytest.raises(ops.OutsideWorkspaceError):
        ops.write_file(ws, "../evil.txt", "x")
    assert not (ws.parent / "evil.txt").exists()


# --- run -------------------------------------------------------------------------------


async def test_run_success_and_cwd(ws: Path) -> None:
    result = await ops.run_command(ws, [sys.executable, "-c", "import os; print(os.getcwd())"])
    assert result.ok
    assert result.exit_code == 0
    assert result.output.strip() == str(ws)
    assert result.text() == result.output


async def test_run_string_is_split_without_a_shell(ws: Path) -> None:
    result = await ops.run_command(ws, "echo 'a b' $HOME; true")
    assert result.output == "a b $HOME; true\n"


async def test_run_failure_merges_stderr(ws: Path) -> None:
    result = await ops.run_command(ws, ["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert not result.ok
    assert result.exit_code == 4
    assert result.output == "out\nerr\n"
    assert result.text() == "exit code 4\nout\nerr\n"


async def test_run_timeout_kills_the_process_group(ws: Path) -> None:
    pidfile = ws / "bg.pid"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    result = await ops.run_command(ws, ["sh", "-c", script], timeout=0.5)
    assert result.timed_out and result.exit_code is None and not result.ok
    assert result.text().startswith("timed out")
    # The background child went down with its group (gone, or a zombie awaiting init).
    pid = int(pidfile.read_text(encoding="utf-8"))
    for _ in range(100):
        if _gone(pid):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the command's background child survived the timeout")


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "State:\tZ" in status.read_text(encoding="utf-8")


async def test_run_output_is_capped(ws: Path) -> None:
    code = "import sys; sys.stdout.write('z' * 300000)"
    result = await ops.run_command(ws, [sys.executable, "-c", code], limit=1000)
    assert result.ok
    assert result.truncated_bytes == 299000
    assert result.output.startswith("z" * 1000)
    assert result.output.endswith("[output truncated: 299000 more bytes not shown]")


async def test_run_refusals(ws: Path) -> None:
    with pytest.raises(ops.BuiltinError, match="command not found: 'omni-no-such-program'"):
        await ops.run_command(ws, "omni-no-such-program --x")
    with pytest.raises(ops.BuiltinError, match="empty command"):
        await ops.run_command(ws, "  ")
    with pytest.raises(ops.BuiltinError, match="cannot split command"):
        await ops.run_command(ws, "echo 'unclosed")
    with pytest.raises(ops.BuiltinError, match="timeout must be positive"):
        await ops.run_command(ws, "true", timeout=0)


# --- the server, in-process ------------------------------------------------------------


async def test_server_in_process(ws: Path) -> None:
    async with Client(build_server(ws)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        echo = await client.call_tool("echo", {"text": "hi"})
        wrote = await client.call_tool("write_file", {"path": "n/b.txt", "content": "bee"})
        read = await client.call_tool("read_file", {"path": "n/b.txt"})
        listing = await client.call_tool("list_dir", {"path": "."})
        ran = await client.call_tool("run", {"command": ["cat", "n/b.txt"]})
        failed = await client.call_tool("run", {"command": "false"})
        escaped = await client.call_tool("read_file", {"path": "../secret.txt"})
        missing = await client.call_tool("read_file", {"path": "nope"})
    assert names == {"echo", "read_file", "write_file", "list_dir", "run"}
    assert echo.content[0].text == "hi"
    assert wrote.content[0].text == "3"
    assert read.content[0].text == "bee"
    assert listing.content[0].text == "n/\nsub/"
    assert not ran.is_error and ran.structured_content["output"] == "bee"
    assert failed.is_error and failed.structured_content["exit_code"] == 1
    assert escaped.is_error and "path '../secret.txt' is outside the workspace" in str(
        escaped.content[0].text
    )
    assert missing.is_error and "no such file: 'nope'" in str(missing.content[0].text)


def _untitled(schema: object) -> object:
    if isinstance(schema, dict):
        return {k: _untitled(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


async def test_the_static_catalog_is_what_the_server_lists(ws: Path) -> None:
    """``omni validate`` checks builtin tasks against the catalog without a server, and a
    prompt run offers the catalog's tools to its model before any executor starts."""
    async with Client(build_server(ws)) as client:
        tools = (await client.list_tools()).tools
    assert {t.name: _untitled(t.input_schema) for t in tools} == TOOLS
    assert {t.name: t.description for t in tools} == DESCRIPTIONS


def test_main_refuses_a_missing_workspace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--workspace", str(tmp_path / "missing")])
    assert info.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


# --- protected paths -------------------------------------------------------------------

PROTECTED = PathRules([*ops.ALWAYS_PROTECTED, "tasks", "results", "config.yaml"])


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".git",
        "./.git/hooks/pre-commit",
        ".github/workflows/x.yml",
        ".omni/state.db",
        "tasks/zz.yaml",
        "results/t/x.json",
        "config.yaml",
        "sub/../tasks/a.yaml",
    ],
)
def test_protected_paths_are_refused_for_reads_and_writes(ws: Path, path: str) -> None:
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("[http]\n\textraheader = AUTHORIZATION: basic x\n")
    with pytest.raises(ops.ProtectedPathError, match=r"is protected \('"):
        ops.write_file(ws, path, "tool: run\n", PROTECTED)
    with pytest.raises(ops.ProtectedPathError):
        ops.read_file(ws, path, PROTECTED)
    assert not (ws / "tasks").exists()
    assert "extraheader" in (ws / ".git" / "config").read_text()


def test_a_symlink_into_a_protected_path_is_refused(ws: Path) -> None:
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("secret config")
    (ws / "innocent").symlink_to(ws / ".git")
    with pytest.raises(ops.ProtectedPathError):
        ops.read_file(ws, "innocent/config", PROTECTED)
    with pytest.raises(ops.ProtectedPathError):
        ops.list_dir(ws, "innocent", PROTECTED)


def test_unprotected_paths_still_work(ws: Path) -> None:
    assert ops.write_file(ws, "docs/tasks.md", "x", PROTECTED) == 1
    assert ops.read_file(ws, "docs/tasks.md", PROTECTED) == "x"
    assert ops.list_dir(ws, ".", PROTECTED) == ["docs/", "sub/"]


async def test_server_refuses_protected_paths(ws: Path) -> None:
    async with Client(build_server(ws, ("tasks", "secrets/**"))) as client:
        task = await client.call_tool("write_file", {"path": "tasks/x.yaml", "content": "x"})
        git = await client.call_tool("write_file", {"path": ".git/config", "content": "x"})
        secret = await client.call_tool("read_file", {"path": "secrets/k.pem"})
        fine = await client.call_tool("write_file", {"path": "notes.md", "content": "ok"})
    for answer in (task, git, secret):
        assert answer.is_error
        assert "is protected" in str(answer.content[0].text)
    assert not fine.is_error
    assert listing(ws) == ["notes.md", "sub"]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())
