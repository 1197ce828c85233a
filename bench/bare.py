"""The bare ``mcp`` SDK loop the benches compare the runner with: one client session to
a stdio server, the same tool called over and over, ``conc`` calls in flight.

Imports only the ``mcp`` SDK, so run as a script it is the whole-process reference of
``bench/wholerun.py`` (interpreter start, the SDK's import, the server's start and the
calls; nothing of omni's):

    uv run python bench/bare.py --calls 2000 [--concurrency 1] [--args '{"message": "hi"}']
        echo -- node .../dist/index.js stdio

As a script it prints one JSON object: the calls, and the seconds from the session's
start to the last answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters

Timer = Callable[[int], Awaitable[float]]
"""Runs ``n`` more calls (or tasks) on a warm server; returns the seconds they took."""


@asynccontextmanager
async def bare_loop(
    command: str,
    args: Sequence[str],
    env: Mapping[str, str],
    tool: str,
    tool_args: dict[str, Any],
    conc: int,
    *,
    warm_up: int = 20,
) -> AsyncIterator[Timer]:
    """Calls over one bare SDK session to ``command args``, ``conc`` in flight, after
    ``warm_up`` calls; the server gets HOME and PATH of this process besides ``env``."""
    base = {k: v for k, v in os.environ.items() if k in {"HOME", "PATH"}}
    params = StdioServerParameters(command=command, args=list(args), env=base | dict(env))
    async with Client(params, read_timeout_seconds=60) as client:
        for _ in range(warm_up):
            await client.call_tool(tool, tool_args)
        yield lambda n: timed(lambda: client.call_tool(tool, tool_args), n, conc)


async def timed(call: Callable[[], Awaitable[Any]], n: int, conc: int) -> float:
    """Seconds for ``n`` awaits of ``call()``, at most ``conc`` at once."""
    limit = asyncio.Semaphore(conc)

    async def one() -> None:
        async with limit:
            await call()

    start = time.perf_counter()
    if conc == 1:
        for _ in range(n):
            await call()
    else:
        await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - start


async def main() -> None:
    """One whole bare run: start the server, make the calls, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--args", default="{}", help="the tool's arguments, JSON")
    parser.add_argument("tool")
    parser.add_argument("server", nargs="+", help="the stdio server's command line")
    opts = parser.parse_args()
    start = time.perf_counter()
    command, *args = opts.server
    tool_args = json.loads(opts.args)
    async with bare_loop(
        command, args, {}, opts.tool, tool_args, opts.concurrency, warm_up=0
    ) as calls:
        calls_s = await calls(opts.calls)
    session_s = time.perf_counter() - start
    print(json.dumps({"calls": opts.calls, "calls_s": calls_s, "session_s": session_s}))


if __name__ == "__main__":
    asyncio.run(main())
