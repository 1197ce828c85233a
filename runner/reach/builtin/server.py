"""The built-in executor's MCP server: thin tool wrappers over ``ops``, described as
``catalog`` says."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent

from runner.core.pathglob import PathRules
from runner.reach.builtin import ops
from runner.reach.builtin.catalog import DESCRIPTIONS

INSTRUCTIONS = (
    "Local tools confined to one workspace folder: read, write and list files, and run "
    "commands (no shell) with a timeout. Paths are relative to the workspace."
)


def build_server(workspace: Path, protect: tuple[str, ...] = ()) -> MCPServer:
    """The server for ``workspace``; run it with ``.run("stdio")`` or connect in-process.
    The file tools refuse :data:`~runner.reach.builtin.ops.ALWAYS_PROTECTED` and the
    globs in ``protect``."""
    root = workspace.resolve()
    protected = PathRules((*ops.ALWAYS_PROTECTED, *protect))
    # WARNING: a refused path or a failing command is an answer, not a server event to log.
    server: MCPServer = MCPServer("omni-builtin", instructions=INSTRUCTIONS, log_level="WARNING")

    # Plain text answers (structured_output=False): otherwise the SDK wraps a str or int
    # as {"result": ...} structured content, and that wrapper would end up in results.
    @server.tool(description=DESCRIPTIONS["echo"], structured_output=False)
    def echo(text: str) -> str:
        return text

    @server.tool(description=DESCRIPTIONS["read_file"], structured_output=False)
    def read_file(path: str) -> str:
        try:
            return ops.read_file(root, path, protected)
        except ops.BuiltinError as exc:
            raise ToolError(str(exc)) from None

    @server.tool(description=DESCRIPTIONS["write_file"], structured_output=False)
    def write_file(path: str, content: str) -> int:
        try:
            return ops.write_file(root, path, content, protected)
        except ops.BuiltinError as exc:
            raise ToolError(str(exc)) from None

    @server.tool(description=DESCRIPTIONS["list_dir"], structured_output=False)
    def list_dir(path: str = ".") -> str:
        try:
            return "\n".join(ops.list_dir(root, path, protected))
        except ops.BuiltinError as exc:
            raise ToolError(str(exc)) from None

    @server.tool(description=DESCRIPTIONS["run"])
    async def run(command: list[str] | str, timeout: float = 60.0) -> CallToolResult:  # noqa: ASYNC109
        try:
            result = await ops.run_command(root, command, timeout)
        except ops.BuiltinError as exc:
            raise ToolError(str(exc)) from None
        return CallToolResult(
            content=[TextContent(type="text", text=result.text())],
            structured_content={
                "exit_code": result.exit_code,
                "output": result.output,
                "truncated_bytes": result.truncated_bytes,
                "timed_out": result.timed_out,
            },
            is_error=not result.ok,
        )

    return server


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m runner.reach.builtin``."""
    parser = argparse.ArgumentParser(prog="python -m runner.reach.builtin", description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path(), help="the folder tools see")
    parser.add_argument(
        "--protect",
        action="append",
        default=[],
        metavar="GLOB",
        help="a path (glob, relative to the workspace) the file tools refuse; repeatable",
    )
    args = parser.parse_args(argv)
    if not args.workspace.is_dir():
        print(f"runner.reach.builtin: workspace {args.workspace} is not a folder", file=sys.stderr)
        raise SystemExit(2)
    build_server(args.workspace, tuple(args.protect)).run("stdio")
    # stdin closed: the client is done with us. Leave without the interpreter's
    # teardown of the mcp SDK's thousands of objects (~0.5-0.8 s the client would wait
    # for on every close); there is nothing left to flush but our own streams.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
