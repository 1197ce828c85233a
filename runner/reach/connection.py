"""One MCP connection: opened over stdio (sandboxed or not), streamable HTTP or SSE,
owned by one task, with its tool cache; calls on it, and the translation of library
errors.

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

This module is the one place the pool meets the ``mcp`` SDK (a few hundred
milliseconds of imports): :class:`~runner.reach.executors.ExecutorPool` imports it when
it opens its first connection, so a run that starts no executor never loads the SDK.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import tempfile
from contextlib import AsyncExitStack
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
from runner.reach.tools import ListedTool, ToolOutcome
from runner.reach.transports import UNUSABLE_REPLY, CappedHttpTransport, capped_stdio

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.defs.config import McpServer
    from runner.reach.sandbox import Confinement

log = logging.getLogger(__name__)

#: A tools/list paginator that never ends must not hang a refresh.
_MAX_PAGES = 100
_LIBRARY_ERRORS = (MCPError, OSError, httpx2.HTTPError)


class Connection:  # pylint: disable=too-many-instance-attributes  # one connection's state
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
                    await self.refresh_tools(client)
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

    async def refresh_tools(self, client: Client | None = None) -> dict[str, ListedTool]:
        """List the server's tools (all pages) into the cache, unless a change raced
        the list."""
        client = client or self.client
        if client is None:
            raise ExecutorUnavailableError(self.name, "the connection is closed")
        version = self.tools_version
        tools: dict[str, ListedTool] = {}
        cursor: str | None = None
        try:
            for _ in range(_MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.update((t.name, ListedTool.of(t)) for t in page.tools)
                if (cursor := page.next_cursor) is None:
                    break
        except MCPError as exc:
            raise _call_error(self, None, exc, self.spec.timeout) from exc
        if version == self.tools_version:
            self.tools = tools
        return tools

    async def call(
        self, tool: str, args: dict[str, Any], limit: float, meta: dict[str, Any] | None
    ) -> ToolOutcome:
        """Call ``tool`` on the open session, within ``limit`` seconds; library errors
        come out as :mod:`runner.core.errors`."""
        client = self.client
        if client is None:
            raise ExecutorUnavailableError(self.name, "the connection closed", tool)
        try:
            result = await client.call_tool(
                tool, args, limit, meta=cast("types.RequestParamsMeta | None", meta)
            )
        except MCPError as exc:
            raise _call_error(self, tool, exc, limit) from exc
        except OSError as exc:
            # A transport that cannot even send (e.g. a server not reading its stdin)
            # is wedged: start afresh on the next call.
            self.closing.set()
            raise ExecutorUnavailableError(self.name, f"transport error: {exc!r}", tool) from exc
        except (ValidationError, RuntimeError) as exc:
            # The result broke the protocol or the tool's own output schema.
            raise ToolError(self.name, f"invalid result from the server: {exc}", tool) from exc
        return ToolOutcome(_text_of(result.content), result.structured_content, result.is_error)

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


def _call_error(conn: Connection, tool: str | None, exc: MCPError, limit: float) -> ExecutorError:
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


def _translate(conn: Connection, eg: BaseExceptionGroup[Any], connected: bool) -> ExecutorError:
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
