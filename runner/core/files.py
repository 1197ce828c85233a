"""Files in and out: reading only regular files up to a cap, and writing so that a
reader never sees half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from runner.core.errors import FileRefusedError

#: Bytes read from a file in one call.
_CHUNK = 1 << 20
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def read_regular(
    path: str | os.PathLike[str], max_bytes: int, *, follow_symlinks: bool = True
) -> bytes:
    """The content of the regular file ``path``, at most ``max_bytes`` long
    (:func:`read_regular_stat`, without the ``stat``)."""
    return read_regular_stat(path, max_bytes, follow_symlinks=follow_symlinks)[0]


def read_regular_stat(
    path: str | os.PathLike[str], max_bytes: int, *, follow_symlinks: bool = True
) -> tuple[bytes, os.stat_result]:
    """The content of the regular file ``path``, at most ``max_bytes`` long, and the
    ``stat`` of the very file read (taken on its descriptor as it was opened: a path
    ``stat``-ed before or after may name another file by then).

    Anything else is refused before a byte is read (:class:`FileRefusedError`): a FIFO
    (reading one would wait for a writer for ever), a device (``/dev/zero`` never ends),
    a folder, a file over the cap, and, with ``follow_symlinks=False``, a symbolic link.
    The file is read in chunks up to the cap, so neither a huge cap nor a file that grows
    meanwhile can take more memory than the cap. Other failures raise ``OSError``.
    """
    shown = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(shown, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise FileRefusedError(shown, "a symbolic link; it is not followed") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            raise FileRefusedError(shown, f"not a regular file ({kind}); only files are read")
        if info.st_size > max_bytes:
            raise FileRefusedError(shown, _over(info.st_size, max_bytes))
        chunks: list[bytes] = []
        total = 0
        while True:
            # Up to the size the file had, plus one byte to see that it has not grown.
            room = info.st_size - total
            wanted = min(_CHUNK, max_bytes + 1 - total, room + 1 if room >= 0 else _CHUNK)
            chunk = os.read(fd, wanted)
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise FileRefusedError(shown, _over(max(total, info.st_size), max_bytes))
            if len(chunk) < wanted:  # a short read of a regular file: its end
                return b"".join(chunks), info
    finally:
        os.close(fd)


def _over(size: int, max_bytes: int) -> str:
    return f"file is {size:,} bytes, over the {max_bytes:,}-byte cap"


def atomic_write(path: str | os.PathLike[str], text: str | bytes) -> None:
    """Write via a temp file and rename: a reader never sees half a file. The folder
    must exist (creating folders costs more than the write on some file systems).

    No fsync: this survives a killed process, not a power cut (DESIGN §4).
    """
    # Plain os calls and str paths: this is on the dispatch path twice a run, where
    # pathlib objects and text-mode files cost more than the writes.
    target = os.fspath(path)
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        # A full disk must not leave a temp file for `--commit` to pick up.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
