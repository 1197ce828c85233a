"""Small real MCP servers for the executor tests, built with the SDK's ``MCPServer``.

Run as a script (``python servers.py MODE [PORT] [ARGS...]``):
- ``stdio``: the current protocol (2026-07-28, ``server/discover``);
- ``legacy-stdio``: the handshake-only loop (``initialize``, no ``server/discover``),
  like the pre-2026 servers most people run;
- ``streamable-http PORT`` and ``sse PORT``: served on 127.0.0.1 by uvicorn.
Arguments after the mode (and port) are ignored, but the ``context`` tool reports them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server

_inflight = {"now": 0, "max": 0}


def build() -> MCPServer:
    """The test server."""
    server: MCPServer = MCPServer("omni-test", log_level="WARNING")
    _add_plain_tools(server)
    _add_session_tools(server)
    return server


def _add_plain_tools(server: MCPServer) -> None:
    """Tools that only compute, wait, fail or crash."""

    @server.tool()
    def echo(text: str) -> str:
        """Return the text."""
        return text

    @server.tool()
    async def sleep(seconds: float) -> str:
        """Answer after ``seconds`` (tests use it to never answer in time)."""
        await anyio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    def crash() -> str:
        """Exit the whole server process mid-call."""
        os._exit(17)

    @server.tool()
    def fail(message: str = "it went wrong") -> str:
        """Report a tool error (is_error)."""
        raise ToolError(message)

    @server.tool()
    def big(size: int) -> str:
        """``size`` characters of output, in lines of 100."""
        line = "y" * 99 + "\n"
        return (line * (size // 100 + 1))[:size]

    @server.tool()
    def add(a: int, b: int) -> int:
        """A tool with required typed arguments."""
        return a + b


def _add_session_tools(server: MCPServer) -> None:
    """Tools that look at the call, the session or the process."""

    @server.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Add a tool named ``name`` and announce that the tool list changed."""

        def extra() -> str:
            return f"I am {name}"

        server.add_tool(extra, name=name, description="added at run time")
        await ctx.notify_tools_changed()  # 2026-07-28: to subscriptions/listen streams
        await ctx.request_context.session.send_tool_list_changed()  # before: unasked
        return f"added {name}"

    @server.tool()
    def context(ctx: Context) -> dict[str, Any]:
        """What the server sees of the call and its process."""
        rc = ctx.request_context
        headers = getattr(rc.request, "headers", None)
        return {
            "meta": dict(rc.meta or {}),
            "protocol_version": rc.protocol_version,
            "argv": sys.argv[2:],
            "env": {k: os.environ.get(k) for k in ("OMNI_TEST_VAR", "OMNI_PARENT_ONLY")},
            "header": headers.get("x-omni-test") if headers is not None else None,
            "pid": os.getpid(),
        }

    @server.tool()
    async def inflight(seconds: float) -> int:
        """Hold the call ``seconds``; returns the most calls seen in flight at once."""
        _inflight["now"] += 1
        _inflight["max"] = max(_inflight["max"], _inflight["now"])
        try:
            await anyio.sleep(seconds)
        finally:
            _inflight["now"] -= 1
        return _inflight["max"]


async def _serve_legacy(server: MCPServer) -> None:
    # The SDK's handshake-only loop: the server a pre-2026 SDK would be.
    lowlevel = server._lowlevel_server  # pylint: disable=protected-access
    async with stdio_server() as (read, write), lowlevel.lifespan(lowlevel) as state:
        options = lowlevel.create_initialization_options()
        await serve_loop(lowlevel, read, write, lifespan_state=state, init_options=options)


def main(argv: list[str]) -> None:
    """Serve in the mode ``argv[0]`` names."""
    mode = argv[0] if argv else "stdio"
    if mode == "stdio":
        build().run("stdio")
        return
    if mode == "legacy-stdio":
        anyio.run(_serve_legacy, build())
        return
    server = build()
    app = server.sse_app() if mode == "sse" else server.streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=int(argv[1]), log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
