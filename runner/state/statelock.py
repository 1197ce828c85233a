"""One runner a state file: ``omni run`` and ``omni run --once`` take the same lock.

Both resume runs a dead process left in flight; a second live process on the same
state file would take the first one's in-flight runs for dead ones and run them twice.
The lock is an exclusive ``flock`` the kernel drops when the process dies, even by
``kill -9``, so a crash never leaves it stale.
"""

from __future__ import annotations

import fcntl
import os
from typing import IO, TYPE_CHECKING

from runner.core.errors import ServiceError

if TYPE_CHECKING:
    from pathlib import Path


class StateLock:
    """Held for a runner's life; ``who`` names it in the other process's message."""

    def __init__(self, state: Path, who: str) -> None:
        self.path = state.with_name(state.name + ".service.lock")
        self._who = who
        self._file: IO[str] | None = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(200).strip() or "pid unknown"
            handle.close()
            raise ServiceError(
                f"another omni {holder} is using {self.path.parent}; stop it first, or use "
                "another --state (two runners on one state file would run tasks twice)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{self._who} (pid {os.getpid()})\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None
