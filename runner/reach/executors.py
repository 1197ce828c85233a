"""The MCP connection pool: transports, tool cache, timeouts, reconnect.

Each connection belongs to one asyncio task (its *owner*) that opens the client, lists
the tools, waits until it is told to close or its transport dies, and closes the
client: the SDK's cancel scopes must be left by the task that entered them. Calls do
not queue through the owner: a caller awaits its request on the shared session
directly (the SDK's dispatcher matches concurrent responses by id), so a call costs
no extra task and no hand-off.

Library errors (``MCPError``, ``OSError``, httpx2 and anyio exception groups) are
translated into :mod:`runner.core.errors` here, where they enter. What a server sends is
untrusted: :mod:`runner.reach.transports` caps its messages, repairs its text and logs its
stderr.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx2
import mcp_types as types
from mcp import MCPError
from mcp.client.client import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import DEFAULT_INHERITED_ENV_VARS, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from runner.core.errors import (
    ExecutorError,
    ExecutorTimeoutError,
    ExecutorUnavailableError,
    ToolError,
)
from runner.core.version import DISTRIBUTION, omni_version
from runner.defs.config import BUILTIN, McpServer
from runner.reach.tools import ListedTool, ToolInfo
from runner.reach.transports import UNUSABLE_REPLY, CappedHttpTransport, capped_stdio

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from runner.reach.sandbox import Confinement

log = logging.getLogger(__name__)

#: Seconds closing connections get on pool exit before their owners are cancelled.
_CLOSE_GRACE = 10.0
#: A tools/list paginator that never ends must not hang a refresh.
_MAX_PAGES = 100
_LIBRARY_ERRORS = (MCPError, OSError, httpx2.HTTPError)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """A tool's answer; ``is_error`` results are returned, the caller decides."""

    text: str
    """The text content blocks, joined by newlines."""
    structured: Any | None
    is_error: bool


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


class _Connection:  # pylint: disable=too-many-instance-attributes  # one connection's state
    """One live (or starting) session and the task that owns it."""

    def __init__(
        self,
        name: str,
        spec: McpServer,
        environ: Mapping[str, str],
        sandbox: Confinement | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.environ = environ
        self.sandbox = sandbox
        """Set for a sandboxed stdio start (a model-driven run's own executor)."""
        self.client: Client | None = None
        self.tools: dict[str, ListedTool] | None = None
        self.tools_version = 0  # bumped by list_changed, so a refresh in flight stays stale
        self.ready = asyncio.Event()
        self.closing = asyncio.Event()
        self.failure: BaseException | None = None
        self.lost: str | None = None
        """Why the transport ended, when it ended on its own (told by the transport)."""
        self.refused: str | None = None
        """Why the HTTP transport last refused a body (a call's error says it)."""
        self.task: asyncio.Task[None] | None = None

    @property
    def command(self) -> str:
        """The program a stdio connection starts (``openclaw`` bridges a ws(s) gateway)."""
        return self.spec.command or "openclaw"

    def where(self) -> str:
        """The server for messages: its command or URL."""
        if (url := self.spec.url) is None:
            return repr(self.command)
        return url + (" (via openclaw)" if url.startswith("ws") else "")

    async def own(self) -> None:
        """The owner task: open, serve until closed or dead, close, in this one task."""
        try:
            try:
                async with AsyncExitStack() as stack:
                    client = await self._open(stack)
                    await self._subscribe(stack, client)
                    await refresh_tools(self, client)
                    self.client = client  # published only once usable
                    self.ready.set()
                    await self.closing.wait()
            except* ExecutorError as group:
                self.failure = group.exceptions[0]
            except* _LIBRARY_ERRORS as group:
                self.failure = _translate(self, group, self.ready.is_set())
        except BaseException as exc:
            # Not ours to translate (a bug, or cancellation): waiters get a short error,
            # the exception itself goes up to ExecutorPool.__aexit__.
            self.failure = ExecutorUnavailableError(self.name, f"connection failed: {exc!r}")
            raise
        finally:
            self.client = None
            self.ready.set()
            if self.failure is not None and self.tools is not None:
                log.warning("%s", self.failure)

    def _lost(self, why: str) -> None:
        """The transport ended (the server exited, or sent what ends a connection): the
        next call starts afresh, and errors say why."""
        if not self.closing.is_set():
            self.lost = why
            self.closing.set()

    def _refused(self, why: str) -> None:
        self.refused = why

    def _http_client(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        """An httpx2 client whose answers are capped at ``max_message_bytes``."""
        transport = CappedHttpTransport(self.spec.max_message_bytes, self._refused)
        return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, transport=transport)

    async def _open(self, stack: AsyncExitStack) -> Client:
        spec = self.spec
        transport: Any
        if spec.url is not None and spec.url.startswith(("http://", "https://")):
            if spec.transport == "sse":
                transport = sse_client(
                    spec.url,
                    headers=spec.headers,
                    timeout=30.0,
                    httpx_client_factory=self._http_client,
                )
            else:
                # The default client's 300 s read timeout would cut longer calls short.
                timeout = httpx2.Timeout(30.0, read=max(300.0, spec.timeout + 30.0))
                http = self._http_client(headers=spec.headers, timeout=timeout)
                await stack.enter_async_context(http)
                transport = streamable_http_client(
                    spec.url, http_client=http, max_sse_event_size=spec.max_message_bytes
                )
        else:
            transport = capped_stdio(
                self._stdio_params(stack),
                executor=self.name,
                max_message_bytes=spec.max_message_bytes,
                on_lost=self._lost,
            )
        client = Client(
            transport,
            read_timeout_seconds=spec.timeout,
            message_handler=self._on_message,
            client_info=types.Implementation(name=DISTRIBUTION, version=omni_version()),
            cache=None,  # the pool keeps its own tool cache
        )
        return await stack.enter_async_context(client)

    def _stdio_params(self, stack: AsyncExitStack) -> StdioServerParameters:
        spec = self.spec
        if spec.url is not None:  # ws(s)://: an OpenClaw gateway, bridged to stdio
            command, args = "openclaw", ["mcp", "serve", "--url", spec.url]
        else:
            assert spec.command is not None
            command, args = spec.command, list(spec.args)
        # The child inherits only a few variables; take them from our environ, not os's.
        env = {k: self.environ[k] for k in DEFAULT_INHERITED_ENV_VARS if k in self.environ}
        env |= spec.env
        if os.sep in command:  # relative to the child's cwd; symlinks kept (a venv's python)
            found = Path(os.path.abspath(Path(spec.cwd or ".", command)))
            resolved = str(found) if os.access(found, os.X_OK) and found.is_file() else None
        else:
            resolved = shutil.which(command, path=env.get("PATH"))
        if resolved is None:
            message = f"cannot start {command!r}: command not found"
            raise ExecutorUnavailableError(self.name, message)
        if spec.url is not None and (token := self.environ.get(spec.token_env)):
            # A file, not --token: any process on the machine can read a command line.
            args += ["--token-file", _token_file(token, stack)]
        if self.sandbox is not None and spec.url is None:
            return self._sandboxed(resolved, args)
        return StdioServerParameters(command=resolved, args=args, env=env, cwd=spec.cwd)

    def _sandboxed(self, command: str, args: list[str]) -> StdioServerParameters:
        """``command args`` under bubblewrap: the environment inside is only the entry's
        ``env`` (plus ``PATH`` and ``HOME``), whatever omni's own holds."""
        assert self.sandbox is not None
        spec = self.spec
        confinement = dataclasses.replace(
            self.sandbox,
            read_only=(*self.sandbox.read_only, *map(Path, spec.sandbox_paths)),
            network=self.sandbox.network or spec.network,
            env=dict(spec.env),
        )
        argv = confinement.argv(command, args, spec.cwd)
        # bwrap itself gets the SDK's few default variables; --clearenv empties them.
        return StdioServerParameters(command=argv[0], args=argv[1:], env={}, cwd=spec.cwd)

    async def _subscribe(self, stack: AsyncExitStack, client: Client) -> None:
        # 2026-07-28 servers send list_changed only on a subscriptions/listen stream;
        # older ones send it unasked. Either way it reaches _on_message.
        caps = client.server_capabilities.tools
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS or not (
            caps and caps.list_changed
        ):
            return
        try:
            await stack.enter_async_context(client.listen(tools_list_changed=True))
        except (MCPError, ListenNotSupportedError, SubscriptionLost, TimeoutError) as exc:
            # Not fatal: the cache is then refreshed only when a tool name misses it.
            log.info("executor %r: no tools/list_changed subscription: %s", self.name, exc)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.tools = None
            self.tools_version += 1
        elif isinstance(message, Exception):
            log.debug("executor %r: transport error: %r", self.name, message)


def _token_file(token: str, stack: AsyncExitStack) -> str:
    """A temp file only this user can read, holding ``token``; gone when ``stack`` closes."""
    fd, path = tempfile.mkstemp(prefix="omni-gateway-token-")  # mode 0600
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token)
    stack.callback(Path(path).unlink, missing_ok=True)
    return path


async def refresh_tools(conn: _Connection, client: Client | None = None) -> dict[str, ListedTool]:
    """List ``conn``'s tools (all pages) into its cache, unless a change raced the list."""
    client = client or conn.client
    if client is None:
        raise ExecutorUnavailableError(conn.name, "the connection is closed")
    version = conn.tools_version
    tools: dict[str, ListedTool] = {}
    cursor: str | None = None
    try:
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.update((t.name, ListedTool.of(t)) for t in page.tools)
            if (cursor := page.next_cursor) is None:
                break
    except MCPError as exc:
        raise _call_error(conn, None, exc, conn.spec.timeout) from exc
    if version == conn.tools_version:
        conn.tools = tools
    return tools


def _call_error(conn: _Connection, tool: str | None, exc: MCPError, limit: float) -> ExecutorError:
    what = "call" if tool else "tools/list request"
    if exc.code == types.REQUEST_TIMEOUT:
        message = f"no answer within {limit:g} s; the {what} was abandoned"
        return ExecutorTimeoutError(conn.name, message, tool)
    if exc.code == types.CONNECTION_CLOSED:
        conn.closing.set()  # the owner reaps the process; the next call starts a new one
        why = conn.lost or conn.refused or conn.failure
        reason = f" ({why})" if why is not None else ""
        message = f"the connection to {conn.where()} closed during the {what}{reason}"
        return ExecutorUnavailableError(conn.name, message + "; the next call restarts it", tool)
    if exc.code == UNUSABLE_REPLY and isinstance(exc.data, dict) and exc.data.get("omni"):
        return ToolError(conn.name, exc.message, tool)  # our transport's verdict on the reply
    if exc.code == types.PARSE_ERROR and conn.refused and conn.refused in exc.message:
        return ToolError(conn.name, f"{conn.refused}; the call failed", tool)  # over HTTP
    return ToolError(conn.name, f"the server refused the {what}: {exc.message} ({exc.code})", tool)


def _translate(conn: _Connection, eg: BaseExceptionGroup[Any], connected: bool) -> ExecutorError:
    """One error for a group of library errors from opening or running a connection."""
    exc = _first_leaf(eg)
    where = conn.where()
    if isinstance(exc, MCPError):
        if exc.code == types.REQUEST_TIMEOUT:
            msg = f"{where} did not answer the MCP handshake within {conn.spec.timeout:g} s"
        elif exc.code == types.CONNECTION_CLOSED:
            why = f" ({conn.lost})" if conn.lost else " (it exited?)"
            msg = f"{where} closed the connection during the MCP handshake{why}"
        else:
            msg = f"{where} refused the MCP handshake: {exc.message} ({exc.code})"
    elif isinstance(exc, httpx2.HTTPStatusError):
        msg = f"{where} answered HTTP {exc.response.status_code}"
    elif isinstance(exc, httpx2.HTTPError):
        msg = f"cannot reach {where}: {exc or type(exc).__name__}"
    elif isinstance(exc, OSError) and not (conn.spec.url or "").startswith("http"):
        detail = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror or exc
        msg = f"cannot start {conn.command!r}: {detail}"
    else:
        msg = f"{where}: {type(exc).__name__}: {exc}"
    if connected:
        msg = "connection lost: " + msg
    error = ExecutorUnavailableError(conn.name, msg)
    error.__cause__ = exc
    return error


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _text_of(content: list[types.ContentBlock]) -> str:
    if len(content) == 1 and isinstance(content[0], types.TextContent):
        return content[0].text
    return "\n".join(b.text for b in content if isinstance(b, types.TextContent))


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
        self._conns: dict[str, _Connection] = {}
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
        tools = conn.tools if conn.tools is not None else await refresh_tools(conn)
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
        client = conn.client
        if client is None:
            raise ExecutorUnavailableError(executor, "the connection closed", tool)
        limit = timeout if timeout is not None else conn.spec.timeout
        try:
            async with self._limits[executor]:
                result = await client.call_tool(
                    tool, args, limit, meta=cast("types.RequestParamsMeta | None", meta)
                )
        except MCPError as exc:
            raise _call_error(conn, tool, exc, limit) from exc
        except OSError as exc:
            # A transport that cannot even send (e.g. a server not reading its stdin)
            # is wedged: start afresh on the next call.
            conn.closing.set()
            raise ExecutorUnavailableError(executor, f"transport error: {exc!r}", tool) from exc
        except (ValidationError, RuntimeError) as exc:
            # The result broke the protocol or the tool's own output schema.
            raise ToolError(executor, f"invalid result from the server: {exc}", tool) from exc
        return ToolOutcome(_text_of(result.content), result.structured_content, result.is_error)

    async def _lookup(self, conn: _Connection, tool: str) -> ListedTool:
        # A miss may be a stale cache (a server that changes tools without notifying).
        tools = await refresh_tools(conn)
        if tool in tools:
            return tools[tool]
        names = ", ".join(sorted(tools)) or "(none)"
        raise ToolError(conn.name, f"unknown tool; the server has: {names}", tool)

    async def _connection(self, executor: str) -> _Connection:
        """The executor's open connection, starting it (in its owner task) if needed."""
        if executor not in self._specs:
            raise ExecutorUnavailableError(
                executor, f"no such executor; configured: {', '.join(self.names())}"
            )
        if self._closed:
            raise ExecutorUnavailableError(executor, "the executor pool is closed")
        conn = self._conns.get(executor)
        if conn is None or conn.closing.is_set() or (conn.ready.is_set() and conn.client is None):
            conn = _Connection(executor, self._specs[executor], self._environ, self._sandbox)
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
