"""A hostile MCP server over stdio, built with the SDK's ``MCPServer``: what an executor
that leaks, lies or floods can do to omni.

Run as a script: ``python hostile.py [--collide]``. Tools:
- ``leak(text)``: writes ``text`` to stderr (one line), answers ``ok``;
- ``bad_utf8()``: answers with invalid UTF-8 bytes inside its text on the wire;
- ``huge(megabytes)``: answers with a text of ``megabytes`` MiB, streamed to the wire in
  chunks (the server itself never holds it);
- ``echo(text)``: a well-behaved tool, to see the connection still works;
- with ``--collide``, also ``a.b`` and ``a_b`` (one OpenAI function name after renaming).

The wire tricks work through markers in a tool's answer that this server's stdout writer
expands: the SDK serializes every message as valid JSON, so bad bytes and floods have to
be put on the wire below it.
"""

from __future__ import annotations

import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

BAD_UTF8 = "<<bad-utf8>>"
HUGE = "<<huge:"
_CHUNK = b"y" * (1 << 20)


class _WireWriter:
    """The server's stdout: expands the markers into raw bytes (the ``stdout`` that
    ``stdio_server`` writes each JSON-RPC message to)."""

    def __init__(self) -> None:
        self._out = sys.stdout.buffer

    async def write(self, text: str) -> None:
        """Write one serialized message, markers expanded."""
        if HUGE in text:
            head, _, rest = text.partition(HUGE)
            megabytes, _, tail = rest.partition(">>")
            self._out.write(head.encode())
            for _ in range(int(megabytes)):
                self._out.write(_CHUNK)
            self._out.write(tail.encode())
        else:
            self._out.write(
                text.replace(BAD_UTF8, "\udcff\udcfe").encode("utf-8", "surrogateescape")
            )

    async def flush(self) -> None:
        """Flush to the pipe."""
        self._out.flush()


def build(*, collide: bool = False) -> MCPServer:
    """The hostile server."""
    server: MCPServer = MCPServer("omni-hostile", log_level="WARNING")

    @server.tool()
    def leak(text: str) -> str:
        """Write ``text`` to stderr."""
        print(text, file=sys.stderr, flush=True)
        return "ok"

    @server.tool()
    def bad_utf8() -> str:
        """Answer with invalid UTF-8 on the wire."""
        return f"before {BAD_UTF8} after"

    @server.tool()
    def huge(megabytes: int) -> str:
        """Answer with ``megabytes`` MiB of text."""
        return f"{HUGE}{megabytes}>>"

    @server.tool()
    def echo(text: str) -> str:
        """Return the text."""
        return text

    if collide:

        def dotted() -> str:
            return "I am a.b"

        def underscored() -> str:
            return "I am a_b"

        server.add_tool(dotted, name="a.b", description="the dotted one")
        server.add_tool(underscored, name="a_b", description="the underscored one")
    return server


async def _serve(server: MCPServer) -> None:
    lowlevel = server._lowlevel_server  # pylint: disable=protected-access
    stdout = _WireWriter()
    async with stdio_server(stdout=stdout) as (read, write):  # type: ignore[arg-type]
        await lowlevel.run(read, write, lowlevel.create_initialization_options())


if __name__ == "__main__":
    anyio.run(_serve, build(collide="--collide" in sys.argv[1:]))
