"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
import os


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
