"""The state database's file: what may be opened as one, how a new one is made, and what
a broken one says.

SQLite takes any empty file for a new database, and reports damage in the middle of a
query as a bare ``sqlite3.DatabaseError``. Neither may reach a user as such:

* A new state database is made whole under a temporary name and then linked into place
  (:func:`create_database`), so a state file omni made is never empty. An empty (0-byte)
  file at the path is therefore not omni's: it was truncated, or made by something else,
  and is refused rather than silently taken as a new, empty history. So is a path that
  is not a regular file, and a non-empty file that does not begin with SQLite's header.
* Every ``sqlite3.DatabaseError`` while the store is used becomes a
  :class:`~runner.core.errors.StoreError` that names the file and says what to do
  (:func:`translated`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import stat
from contextlib import contextmanager
from typing import TYPE_CHECKING

from runner.core.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

#: The first 16 bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
_WHAT_TO_DO = (
    "restore it from a backup, or move it aside and let omni start a new one (the result"
    " files still say what ran; `sqlite3 FILE .recover` may save its rows)"
)


def existing_database(path: Path) -> bool:
    """True when ``path`` holds a state database to open, False when there is none yet.

    Raises :class:`StoreError` saying what to do when there is something else: not a
    regular file, an empty file, or a file that is not an SQLite database.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the state file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"{path}: the state file is not a regular file; point --state at a file")
    if info.st_size == 0:
        raise StoreError(
            f"{path}: the state file is empty (0 bytes). omni never leaves one empty, so it"
            " was truncated or made by something else; delete it to start a new state"
            " database (the result files still say what ran), or restore it from a backup"
        )
    try:
        with path.open("rb") as stream:
            header = stream.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the state file: {exc.strerror}") from None
    if header != SQLITE_HEADER:
        raise StoreError(
            f"{path}: not a usable SQLite state database (it does not begin with SQLite's"
            " header); move it aside or point --state elsewhere"
        )
    return True


def create_database(path: Path, prepare: Callable[[sqlite3.Connection], None]) -> None:
    """Make a new database at ``path`` whole: ``prepare`` builds it under a temporary
    name, then it is linked into place. If another process made one meanwhile, theirs is
    kept. Raises :class:`StoreError`."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            prepare(conn)
        finally:
            conn.close()
        _link_no_replace(temp, path)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"{path}: cannot create the state database: {exc}") from exc
    finally:
        for leftover in (temp, *(temp.with_name(temp.name + s) for s in ("-wal", "-shm"))):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _link_no_replace(source: Path, target: Path) -> None:
    """Give ``source`` the name ``target`` unless ``target`` exists (then keep it)."""
    try:
        os.link(source, target)
    except FileExistsError:
        return
    except OSError:
        # A file system without hard links: a rename, never over an existing file.
        if not os.path.lexists(target):
            os.rename(source, target)


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """Turn an ``sqlite3.DatabaseError`` raised inside into a :class:`StoreError` that
    names ``path`` and says what to do."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise store_error(path, exc) from exc


def store_error(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    """The :class:`StoreError` for an SQLite error on the state database at ``path``."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}:
        return StoreError(f"{path}: state database is busy: {exc}")
    if code == sqlite3.SQLITE_NOTADB:
        return StoreError(
            f"{path}: not a usable SQLite state database ({exc}); move it aside or point"
            " --state elsewhere"
        )
    if code == sqlite3.SQLITE_CORRUPT:
        return StoreError(f"{path}: the state database is damaged ({exc}): {_WHAT_TO_DO}")
    if code == sqlite3.SQLITE_FULL:
        return StoreError(f"{path}: the disk holding the state database is full ({exc})")
    if code in {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM}:
        return StoreError(f"{path}: the state database cannot be written ({exc})")
    return StoreError(f"{path}: state database error: {exc}")
