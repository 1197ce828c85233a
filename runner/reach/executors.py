"""The MCP executor pool: the configured servers, opened on first use, each call
bounded by its server's concurrency and timeout, a dead connection started again on the
next call.

The connections themselves (:mod:`runner.reach.connection`: transports, the tool cache,
error translation) are where the ``mcp`` SDK comes in; the pool imports that module
only when it opens its first connection, so a pass or a run that starts no executor
(a prompt run whose model calls no tool, ``omni status``) never pays for the SDK.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.errors import ExecutorUnavailableError, ToolError
from runner.defs.config import BUILTIN, McpServer

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from runner.reach.connection import Connection
    from runner.reach.sandbox import Confinement
    from runner.reach.tools import ListedTool, ToolInfo, ToolOutcome

#: Seconds closing connections get on pool exit before their owners are cancelled.
_CLOSE_GRACE = 10.0
#: The placeholder in a stdio executor's ``args`` and ``cwd`` for its workspace (a
#: model-driven run's own, else ``workspace`` of the config).
WORKSPACE_PLACEHOLDER = "{workspace}"
#: Tools of the built-in executor a model gets only when its task lists them.
BUILTIN_OPT_IN = ("run",)


def builtin_server(workspace: Path, protect: Sequence[str] = ()) -> McpServer:
    """The built-in executor's entry: ``python -m runner.reach.builtin`` over stdio; its
    file tools refuse the globs in ``protect`` (besides ``.git``, ``.github``, ``.omni``)."""
    package_root = Path(__file__).resolve().parent.parent.parent
    args = ["-P", "-m", "runner.reach.builtin", "--workspace", str(workspace.resolve())]
    for glob in protect:
        args += ["--protect", glob]
    return McpServer(
        command=sys.executable,
        # -P: the child's current folder must not shadow the ``runner`` package.
        args=args,
        # The child inherits no PYTHONPATH; this finds ``runner`` from a plain checkout too.
        env={"PYTHONPATH": str(package_root)},
        opt_in_tools=list(BUILTIN_OPT_IN),
    )


def for_workspace(spec: McpServer, workspace: Path) -> McpServer:
    """``spec`` with ``{workspace}`` in its ``args`` and ``cwd`` replaced by ``workspace``."""
    if spec.command is None:
        return spec
    where = str(workspace)
    args = [a.replace(WORKSPACE_PLACEHOLDER, where) for a in spec.args]
    cwd = spec.cwd.replace(WORKSPACE_PLACEHOLDER, where) if spec.cwd else None
    if args == spec.args and cwd == spec.cwd:
        return spec
    return spec.model_copy(update={"args": args, "cwd": cwd})


def _connection_type() -> type[Connection]:
    """The connection class, importing the ``mcp`` SDK (see the module docstring)."""
    from runner.reach.connection import Connection  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

    return Connection


class ExecutorPool:
    """Connections to the configured MCP servers, opened on first use.

    ``builtin`` is always there unless ``servers`` defines it. Use as an async context
    manager: leaving it closes every open connection.
    """

    def __init__(
        self,
        servers: Mapping[str, McpServer],
        *,
        workspace: Path,
        environ: Mapping[str, str] | None = None,
        protect: Sequence[str] = (),
        per_run: bool = False,
        sandbox: Confinement | None = None,
    ) -> None:
        """``protect``: globs the built-in executor's file tools refuse. ``per_run``: a
        model-driven run's own pool, whose stdio executors start in ``workspace`` unless
        their entry sets ``cwd``, under ``sandbox`` when given (remote ones never are)."""
        self._environ = dict(os.environ if environ is None else environ)
        self._sandbox = sandbox
        self._specs = {name: for_workspace(spec, workspace) for name, spec in servers.items()}
        self._specs.setdefault(BUILTIN, builtin_server(workspace, protect))
        if per_run or sandbox is not None:
            for name, spec in self._specs.items():
                if spec.command is not None and spec.cwd is None:
                    self._specs[name] = spec.model_copy(update={"cwd": str(workspace)})
        self._limits = {n: asyncio.Semaphore(s.max_concurrency) for n, s in self._specs.items()}
        self._conns: dict[str, Connection] = {}
        self._connection_type: type[Connection] | None = None
        self._owners: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> ExecutorPool:
        return self  # nothing starts before its first use

    async def __aexit__(self, *exc_info: object) -> None:
        self._closed = True
        for conn in self._conns.values():
            conn.closing.set()
            if not conn.ready.is_set() and conn.task is not None:
                conn.task.cancel()  # still connecting: nothing to finish gracefully
        self._conns.clear()
        owners, self._owners = self._owners, set()
        if not owners:
            return
        for task in (await asyncio.wait(owners, timeout=_CLOSE_GRACE))[1]:
            task.cancel()
        results = await asyncio.gather(*owners, return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors and exc_info[0] is None:
            raise ExceptionGroup("executor connections failed while open", errors)

    def names(self) -> list[str]:
        """Every configured executor, sorted."""
        return sorted(self._specs)

    def has(self, name: str) -> bool:
        """True when ``name`` is a configured executor."""
        return name in self._specs

    def opt_in_tools(self, executor: str) -> frozenset[str]:
        """The executor's tools a model gets only when its task lists them."""
        spec = self._specs.get(executor)
        return frozenset(spec.opt_in_tools) if spec is not None else frozenset()

    def is_remote(self, executor: str) -> bool:
        """True for an executor reached over the network (no sandbox reaches it)."""
        spec = self._specs.get(executor)
        return spec is not None and spec.url is not None

    async def list_tools(self, executor: str) -> list[ToolInfo]:
        """The executor's tools (cached; refreshed after tools/list_changed)."""
        conn = await self._connection(executor)
        tools = conn.tools if conn.tools is not None else await conn.refresh_tools()
        return [t.info for t in tools.values()]

    async def call_tool(
        self,
        executor: str,
        tool: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the MCP request's read timeout
        meta: dict[str, Any] | None = None,
    ) -> ToolOutcome:
        """Call ``tool`` with ``args``; ``meta`` goes out as the request's ``_meta``.

        Raises ToolError for an unknown tool or arguments failing its schema,
        ExecutorTimeoutError after ``timeout`` (default: the server's), and
        ExecutorUnavailableError when the server cannot be started or dies.
        """
        conn = self._conns.get(executor)
        if conn is None or conn.client is None or conn.closing.is_set():
            conn = await self._connection(executor)
        known = conn.tools
        spec = known.get(tool) if known is not None else None
        if spec is None:
            spec = await self._lookup(conn, tool)
        if problem := spec.problem(args):
            raise ToolError(executor, problem, tool)
        limit = timeout if timeout is not None else conn.spec.timeout
        async with self._limits[executor]:
            return await conn.call(tool, args, limit, meta)

    async def _lookup(self, conn: Connection, tool: str) -> ListedTool:
        # A miss may be a stale cache (a server that changes tools without notifying).
        tools = await conn.refresh_tools()
        if tool in tools:
            return tools[tool]
        names = ", ".join(sorted(tools)) or "(none)"
        raise ToolError(conn.name, f"unknown tool; the server has: {names}", tool)

    async def _connection(self, executor: str) -> Connection:
        """The executor's open connection, starting it (in its owner task) if needed."""
        if executor not in self._specs:
            raise ExecutorUnavailableError(
                executor, f"no such executor; configured: {', '.join(self.names())}"
            )
        if self._closed:
            raise ExecutorUnavailableError(executor, "the executor pool is closed")
        if self._connection_type is None:
            # The mcp SDK comes with the first connection, imported on a worker thread:
            # seconds on a busy machine, during which the loop (other runs' model calls
            # and their clocks) must keep running. No await between here and the
            # connection's registration below, so concurrent callers share it.
            self._connection_type = await asyncio.to_thread(_connection_type)
            if self._closed:  # closed while the SDK loaded: start no server nobody closes
                raise ExecutorUnavailableError(executor, "the executor pool is closed")
        conn = self._conns.get(executor)
        if conn is None or conn.closing.is_set() or (conn.ready.is_set() and conn.client is None):
            conn = self._connection_type(
                executor, self._specs[executor], self._environ, self._sandbox
            )
            self._conns[executor] = conn
            conn.task = asyncio.create_task(conn.own(), name=f"mcp-{executor}")
            self._owners.add(conn.task)
            conn.task.add_done_callback(self._forget)
        await conn.ready.wait()
        if conn.client is None:
            if self._conns.get(executor) is conn:
                del self._conns[executor]  # the next call tries again
            raise conn.failure or ExecutorUnavailableError(executor, "the connection closed")
        return conn

    def _forget(self, task: asyncio.Task[None]) -> None:
        # Keep failed owners for __aexit__ to report; the rest need no reference.
        if task.cancelled() or task.exception() is None:
            self._owners.discard(task)
