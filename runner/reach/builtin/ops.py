"""The built-in executor's work, as plain functions (the MCP layer is ``server.py``).

Every path a caller gives is resolved against the workspace, following symlinks, and
refused when the result is not inside it: ``..``, an absolute path elsewhere, and a
symlink pointing out all end up outside after resolution. The file tools also refuse
*protected* paths (``.git``, ``.github``, ``.omni``, the tasks and results folders,
the config file, and what the config adds), checked on the path as given and as
resolved, so a symlink into ``.git`` is refused too. A check-then-open race with a
symlink swapped in between is out of scope: the workspace belongs to the runner, not
to an adversary racing it (a model's own ``run`` commands execute in a sandbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from runner.core.pathglob import PathRules, normalize

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Output kept from a ``run`` (stdout and stderr together); the rest is counted, not kept.
OUTPUT_LIMIT = 65536
#: ``read_file`` refuses larger files rather than pushing them through the MCP pipe.
READ_LIMIT = 8 * 1024 * 1024
#: Seconds a killed command gets to be reaped before we stop waiting for it.
_REAP_GRACE = 5.0


class BuiltinError(Exception):
    """A request the built-in executor refuses; the message says why."""


class OutsideWorkspaceError(BuiltinError):
    """A path that resolves to somewhere outside the workspace."""


class ProtectedPathError(BuiltinError):
    """A path the file tools never touch (``.git``, the tasks folder, …)."""


#: Protected in every workspace, whatever the config says.
ALWAYS_PROTECTED = (".git", ".github", ".omni")


def confine(
    workspace: Path, path: str | os.PathLike[str], protected: PathRules | None = None
) -> Path:
    """The absolute, symlink-free form of ``path`` (relative to ``workspace``), or
    :class:`OutsideWorkspaceError` when that is not inside the workspace, or
    :class:`ProtectedPathError` when ``protected`` covers it (as given or resolved)."""
    root = workspace.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise OutsideWorkspaceError(f"path {str(path)!r} is outside the workspace {root}")
    if protected:
        given = Path(path)
        lexical = os.path.relpath(root / given, root) if not given.is_absolute() else None
        for rel in (lexical, target.relative_to(root).as_posix()):
            clean = normalize(str(rel)) if rel is not None else None
            if clean is not None and (pattern := protected.match(clean)) is not None:
                raise ProtectedPathError(
                    f"path {str(path)!r} is protected ({pattern!r}): the file tools never "
                    "read or write it"
                )
    return target


def read_file(workspace: Path, path: str, protected: PathRules | None = None) -> str:
    """The text of a workspace file (UTF-8; undecodable bytes become U+FFFD)."""
    target = confine(workspace, path, protected)
    try:
        size = target.stat().st_size
        if target.is_dir():
            raise BuiltinError(f"{path!r} is a folder; use list_dir")
        if size > READ_LIMIT:
            raise BuiltinError(f"{path!r} is {size} bytes; read_file stops at {READ_LIMIT}")
        return target.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise BuiltinError(f"no such file: {path!r}") from None
    except OSError as exc:
        raise BuiltinError(f"cannot read {path!r}: {exc.strerror}") from None


def write_file(workspace: Path, path: str, content: str, protected: PathRules | None = None) -> int:
    """Write ``content`` (UTF-8) to a workspace file, creating parent folders; the
    number of bytes written."""
    target = confine(workspace, path, protected)
    data = content.encode("utf-8")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except IsADirectoryError:
        raise BuiltinError(f"{path!r} is a folder") from None
    except OSError as exc:
        raise BuiltinError(f"cannot write {path!r}: {exc.strerror}") from None
    return len(data)


def list_dir(workspace: Path, path: str = ".", protected: PathRules | None = None) -> list[str]:
    """Sorted entry names of a workspace folder; folders end with ``/``."""
    target = confine(workspace, path, protected)
    try:
        entries = list(os.scandir(target))
    except FileNotFoundError:
        raise BuiltinError(f"no such folder: {path!r}") from None
    except NotADirectoryError:
        raise BuiltinError(f"{path!r} is a file, not a folder") from None
    except OSError as exc:
        raise BuiltinError(f"cannot list {path!r}: {exc.strerror}") from None
    return sorted(e.name + "/" if e.is_dir() else e.name for e in entries)


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a command did: ``exit_code`` is None when it was killed on timeout."""

    argv: list[str]
    exit_code: int | None
    output: str
    truncated_bytes: int
    timed_out: bool

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0 in time."""
        return self.exit_code == 0 and not self.timed_out

    def text(self) -> str:
        """The output, headed by a status line unless the command succeeded."""
        if self.timed_out:
            head = "timed out (killed)\n"
        elif self.exit_code is not None and self.exit_code < 0:
            head = f"killed by signal {-self.exit_code}\n"
        elif self.exit_code:
            head = f"exit code {self.exit_code}\n"
        else:
            head = ""
        return head + self.output


def split_command(command: Sequence[str] | str) -> list[str]:
    """The argv for ``command``: a string is split like a shell would, without one."""
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise BuiltinError(f"cannot split command {command!r}: {exc}") from None
    else:
        argv = [str(part) for part in command]
    if not argv:
        raise BuiltinError("empty command")
    return argv


async def run_command(
    workspace: Path,
    command: Sequence[str] | str,
    timeout: float = 60.0,  # noqa: ASYNC109 - the command's own time limit, enforced here
    limit: int = OUTPUT_LIMIT,
) -> RunResult:
    """Run ``command`` in the workspace (no shell), stdout and stderr merged and capped
    at ``limit`` bytes, killed (with its process group) after ``timeout`` seconds."""
    argv = split_command(command)
    if timeout <= 0:
        raise BuiltinError(f"timeout must be positive, got {timeout}")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=workspace,
            # stdin and stdout of this process are the MCP pipe: the child must not touch them.
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own process group, so a timeout kills whatever it started too.
            start_new_session=True,
        )
    except FileNotFoundError:
        raise BuiltinError(f"command not found: {argv[0]!r}") from None
    except OSError as exc:
        raise BuiltinError(f"cannot run {argv[0]!r}: {exc.strerror}") from None

    kept = bytearray()
    dropped = 0
    timed_out = False
    try:
        async with asyncio.timeout(timeout):
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                room = max(limit - len(kept), 0)
                kept += chunk[:room]
                dropped += len(chunk) - min(room, len(chunk))
            await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)
            # Shielded: a cancelled call must still reap its child (no zombie, no
            # unclosed-transport warning); bounded in case a grandchild keeps the pipe.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_REAP_GRACE):
                await proc.wait()
    output = kept.decode("utf-8", errors="replace")
    if dropped:
        output += f"\n[output truncated: {dropped} more bytes not shown]"
    return RunResult(
        argv=argv,
        exit_code=None if timed_out else proc.returncode,
        output=output,
        truncated_bytes=dropped,
        timed_out=timed_out,
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signal.SIGKILL)
