"""Transports to MCP servers, with the limits an untrusted server needs.

**stdio** (:func:`capped_stdio`) speaks the SDK's newline-delimited JSON-RPC (like
``mcp.client.stdio``), and:

- **a message is at most** ``max_message_bytes``: a longer line is read past, never
  kept; the request it answers (when its id can be read at the line's start or end) gets
  an error reply, so only that call fails; when no id can be read, the connection ends
  (its pending calls fail at once). Memory stays bounded whatever the server sends;
- **bad UTF-8 is replaced** (U+FFFD), never an exception in the reader; a line that is
  not JSON-RPC fails the request it names, like an oversized one;
- **the server's stderr** is captured and logged a line a record naming the executor
  (the log handler redacts it), never passed raw to omni's stderr; at most
  :data:`STDERR_BUDGET` bytes of it a connection, the rest is read and dropped;
- **when the transport dies** (stdout closes, a read or write fails) the session's read
  stream closes at once, so every pending call fails then, not at its timeout; and
  ``on_lost`` is told why.

Shutdown follows the MCP spec (close stdin, wait, then end the process group), shielded
from cancellation, each wait bounded.

**HTTP** (streamable HTTP and SSE): :class:`CappedHttpTransport` under the SDK's
``httpx2`` client caps each message the same way (a JSON body whole, an event stream
between events; a body past the cap fails its request, or ends an event stream), asks for
uncompressed bodies and refuses compressed ones (a compressed body would escape the cap),
and replaces bad UTF-8.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import httpx2
import mcp_types as types
from mcp.client.stdio import get_default_environment
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from anyio.streams.memory import MemoryObjectSendStream
    from mcp.client._transport import TransportStreams
    from mcp.client.stdio import StdioServerParameters

log = logging.getLogger(__name__)

#: The JSON-RPC error code omni answers a request with when its reply was unusable.
UNUSABLE_REPLY = -32098
#: Bytes of an executor's stderr logged a connection; the rest is read and dropped.
STDERR_BUDGET = 1 << 20
#: Characters of one stderr line logged; the rest of the line is dropped.
STDERR_LINE = 2000
_EXIT_GRACE = 2.0  # the server's time to exit after its stdin closes
_KILL_GRACE = 2.0  # after SIGTERM to its process group, before SIGKILL
_FLUSH_GRACE = 0.5  # the writer's time to flush accepted messages on close
_EDGE = 4096  # bytes of an oversized line kept from its start (and 256 from its end)
_HEAD_ID = re.compile(
    rb'^\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(-?\d{1,18}|"[^"\\]{0,200}")'
)
_TAIL_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"[^"\\]{0,200}")\s*\}\s*$')


class _Ended(Exception):
    """The connection must end; the message says why."""


@dataclass(slots=True)
class _Oversized:
    """A line past the cap, being read past: its start, its end so far, its size."""

    head: bytes
    tail: bytes
    size: int


def _request_id(head: bytes, tail: bytes) -> types.RequestId | None:
    """The id of the response a (broken or oversized) line is, if it can be read."""
    found = _HEAD_ID.match(head) or _TAIL_ID.search(tail)
    if found is None:
        return None
    value = json.loads(found.group(1))
    return value if isinstance(value, int | str) else None


def _error_reply(request_id: types.RequestId, message: str) -> SessionMessage:
    error = types.ErrorData(code=UNUSABLE_REPLY, message=message, data={"omni": "unusable"})
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


class _Reader:  # pylint: disable=too-few-public-methods  # one job: the stdout loop
    """Reads the server's stdout into the session: lines capped, text repaired."""

    def __init__(
        self,
        sender: MemoryObjectSendStream[SessionMessage | Exception],
        limit: int,
        lost: Callable[[str], None],
    ) -> None:
        self._sender = sender
        self._limit = limit
        self._lost = lost
        self._delivering = True

    async def run(self, stdout: anyio.abc.ByteReceiveStream) -> None:
        """Deliver every line until stdout ends; then (or on a failure) close the
        session's read stream, which fails the pending calls."""
        try:
            await self._lines(stdout)
            self._lost("the server exited or closed its stdout")
        except _Ended as exc:
            self._lost(str(exc))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            self._lost(f"reading the server's stdout failed: {exc!r}")
        finally:
            await self._sender.aclose()

    async def _lines(self, stdout: anyio.abc.ByteReceiveStream) -> None:
        buffer = bytearray()
        over: _Oversized | None = None
        with suppress(anyio.EndOfStream):
            while True:
                chunk = await stdout.receive()
                start = 0
                while True:
                    end = chunk.find(b"\n", start)
                    piece = chunk[start:] if end < 0 else chunk[start:end]
                    if over is not None:
                        over.tail = (over.tail + piece)[-256:]
                        over.size += len(piece)
                    elif len(buffer) + len(piece) > self._limit:
                        whole = bytes(buffer[:_EDGE]) + piece[:_EDGE]
                        over = _Oversized(whole[:_EDGE], piece[-256:], len(buffer) + len(piece))
                        buffer.clear()
                    elif end >= 0 and not buffer:
                        await self._line(piece)  # the common case: no copy
                    else:
                        buffer += piece
                    if end < 0:
                        break
                    if over is not None:
                        await self._oversized(over)
                        over = None
                    elif buffer:
                        await self._line(bytes(buffer))
                        buffer.clear()
                    start = end + 1

    async def _deliver(self, message: SessionMessage | Exception) -> None:
        if not self._delivering:
            return  # the session is gone: read on (so the server can exit), drop
        try:
            await self._sender.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._delivering = False

    async def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace")
        if not text or text.isspace():
            return
        try:
            message = types.jsonrpc_message_adapter.validate_json(text, by_name=False)
        except ValueError as exc:
            request_id = _request_id(raw[:_EDGE], raw[-256:])
            if request_id is None:
                await self._deliver(exc)  # as the SDK does: the session logs it
                return
            why = f"the server's reply is not valid JSON-RPC ({type(exc).__name__})"
            await self._deliver(_error_reply(request_id, why))
            return
        await self._deliver(SessionMessage(message))

    async def _oversized(self, over: _Oversized) -> None:
        what = (
            f"the server sent a message of {over.size:,} bytes, over max_message_bytes"
            f" ({self._limit:,})"
        )
        request_id = _request_id(over.head, over.tail)
        if request_id is None:
            raise _Ended(what + " with no readable request id")
        await self._deliver(_error_reply(request_id, what + "; the call failed"))


async def _log_stderr(stderr: anyio.abc.ByteReceiveStream, executor: str) -> None:
    """Log the server's stderr a line a record; past the budget, read and drop it."""
    budget = STDERR_BUDGET
    pending = b""
    with suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        while True:
            chunk = await stderr.receive()
            if budget <= 0:
                continue
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > STDERR_LINE * 4:  # one endless line: log what there is
                lines.append(pending)
                pending = b""
            for raw in lines:
                line = raw.decode("utf-8", errors="replace").rstrip()
                if not line:
                    continue
                budget -= len(raw)
                if len(line) > STDERR_LINE:
                    line = f"{line[:STDERR_LINE]} … [{len(line) - STDERR_LINE:,} characters cut]"
                log.info(
                    "executor %r stderr: %s",
                    executor,
                    line,
                    extra={"omni": {"event": "executor_stderr", "executor": executor}},
                )
                if budget <= 0:
                    log.warning(
                        "executor %r: more than %d bytes of stderr; the rest is dropped",
                        executor,
                        STDERR_BUDGET,
                    )
                    break


async def _stop(process: anyio.abc.Process) -> None:
    """Close stdin, give the server time to exit, then end its whole process group."""
    assert process.stdin is not None
    with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        await process.stdin.aclose()
    with anyio.move_on_after(_EXIT_GRACE):
        # Not process.wait(): it also waits for the pipes, which a child may hold.
        while process.returncode is None:  # noqa: ASYNC110 - nothing to wait on but this
            await anyio.sleep(0.01)
    if process.returncode is None:
        await terminate_posix_process_tree(process, _KILL_GRACE)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await pipe.aclose()


@asynccontextmanager
async def capped_stdio(
    server: StdioServerParameters,
    *,
    executor: str,
    max_message_bytes: int,
    on_lost: Callable[[str], None],
) -> AsyncIterator[TransportStreams]:
    """Start ``server`` and connect to it over stdin/stdout (see the module docstring).

    Raises OSError when the program cannot be started.
    """
    process = await anyio.open_process(
        [server.command, *server.args],
        env=get_default_environment() | (server.env or {}),
        cwd=server.cwd,
        start_new_session=True,  # its own process group: ended whole on close
    )
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    sender, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, outgoing = anyio.create_memory_object_stream[SessionMessage](0)
    writer_done = anyio.Event()
    stdin = process.stdin

    async def write() -> None:
        try:
            async with outgoing:
                async for message in outgoing:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await stdin.send((data + "\n").encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            on_lost(f"writing to the server's stdin failed: {exc!r}")
            await sender.aclose()  # the pending calls fail now, not at their timeout
        finally:
            writer_done.set()

    reader = _Reader(sender, max_message_bytes, on_lost)
    async with anyio.create_task_group() as group:
        group.start_soon(reader.run, process.stdout)
        group.start_soon(_log_stderr, process.stderr, executor)
        group.start_soon(write)
        try:
            yield read_stream, write_stream
        finally:
            with anyio.CancelScope(shield=True):
                read_stream.close()
                write_stream.close()
                with anyio.move_on_after(_FLUSH_GRACE):
                    await writer_done.wait()
                await _stop(process)
                for stream in (read_stream, write_stream, sender, outgoing):
                    await stream.aclose()
            group.cancel_scope.cancel()


class MessageTooLarge(httpx2.StreamError):
    """An HTTP body or event past ``max_message_bytes``, or one omni cannot cap."""


class _CappedBody(httpx2.AsyncByteStream):
    """A response body, capped (a whole body, or each event of an event stream) and with
    bad UTF-8 replaced."""

    def __init__(
        self,
        inner: httpx2.AsyncByteStream,
        limit: int,
        refused: Callable[[str], None],
        *,
        events: bool,
    ) -> None:
        self._inner = inner
        self._limit = limit
        self._refused = refused
        self._events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        size, tail = 0, b""
        async for chunk in self._inner:
            if self._events:  # bytes since the last blank line (the end of an event)
                window = tail + chunk
                ends = [
                    i + len(mark)
                    for mark in (b"\n\n", b"\r\n\r\n")
                    if (i := window.rfind(mark)) >= 0
                ]
                size = len(window) - max(ends) if ends else size + len(chunk)
                tail = window[-3:]
            else:
                size += len(chunk)
            if size > self._limit:
                why = f"the server sent a message over max_message_bytes ({self._limit:,})"
                self._refused(why)
                raise MessageTooLarge(why)
            yield decoder.decode(chunk).encode("utf-8")
        yield decoder.decode(b"", final=True).encode("utf-8")

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Refused(httpx2.AsyncByteStream):
    """The body of a response omni will not read."""

    def __init__(
        self, inner: httpx2.AsyncByteStream, why: str, refused: Callable[[str], None]
    ) -> None:
        self._inner = inner
        self._why = why
        self._refused = refused

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._refused(self._why)
        raise MessageTooLarge(self._why)
        yield b""  # pylint: disable=unreachable  # makes this an async generator

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedHttpTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport whose response bodies are capped (see the module docstring);
    ``on_refused`` is told why a body was refused (the SDK's own error says less)."""

    def __init__(self, max_message_bytes: int, on_refused: Callable[[str], None]) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._limit = max_message_bytes
        self._on_refused = on_refused

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` asking for an uncompressed answer; cap the answer's body."""
        request.headers["Accept-Encoding"] = "identity"
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in {"", "identity"}:
            why = f"the server sent a {encoding!r}-compressed body after omni asked for none"
            response.stream = _Refused(stream, why, self._on_refused)
        else:
            kind = response.headers.get("content-type", "").lower()
            events = kind.startswith("text/event-stream")
            response.stream = _CappedBody(stream, self._limit, self._on_refused, events=events)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
