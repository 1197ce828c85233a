"""The parsed-task cache: a task file unchanged since an earlier pass is not parsed again.

It lives beside the state file (``.omni/task-cache.json``): local state, written only by
a pass that keeps state (``run --once``, never ``--dry-run``), read by the passes that
look; never taken from the results branch or the repository. A file is answered from
the cache only when its path, size, mtime, ctime, inode and device are what they were
when it was read, and it had not changed for :data:`SETTLED_NS` before it was read
(timestamps can be as coarse as 2 s, so a rewrite within the same tick would not show
in its stat). A fresh checkout gives every file a new inode and ctime, so a cache that
came with one answers nothing.

What is cached is the task as JSON (validated again by the task model on every hit, and
kept only when that gives back the very task the file gave: no dates) and its content
hash. The file is keyed by its
format, omni's version, a fingerprint of the task model, the tasks folder and the size
cap, and carries a checksum of its entries: a cache that is corrupt, from another
version or for other limits is ignored (and rewritten). A miss only costs the parse.
Invalid files are never cached: they are read again, and keep their problems.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from runner.core.errors import FileRefusedError
from runner.core.files import atomic_write, read_regular, read_regular_stat
from runner.core.version import omni_version
from runner.defs.tasks import PullRequest, Task, TaskSpec, default_id, load_task_file

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

#: The cache file's name, beside the state file.
CACHE_NAME = "task-cache.json"
#: How long a file must have been unchanged before it was read for its parse to be kept.
SETTLED_NS = 2_000_000_000
#: A cache file larger than this is ignored (50,000 tasks take ~15 MB).
MAX_CACHE_BYTES = 256 << 20
_FORMAT = 1


def _fingerprint() -> str:
    """What the task model looks like: its fields, their types and defaults."""
    shape = [
        (model.__name__, name, repr(info))
        for model in (TaskSpec, PullRequest)
        for name, info in model.model_fields.items()
    ]
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:16]


def _stamp(info: os.stat_result) -> list[int]:
    """What must not have changed for an entry to answer: size, mtime, ctime, inode, device."""
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]


class TaskCache:
    """One pass's view of the cache file: answers :meth:`read` and remembers new parses."""

    def __init__(
        self, path: Path, root: Path, max_bytes: int, *, wall_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self._path = path
        self._wall_ns = wall_ns
        self._key = {
            "format": _FORMAT,
            "omni": omni_version(),
            "model": _fingerprint(),
            "root": str(root),
            "task_file_bytes": max_bytes,
        }
        self._old = self._open()
        self._new: dict[str, list[Any]] = {}
        self.hits = 0
        """Tasks answered from the cache this pass."""

    def _open(self) -> dict[str, Any]:
        try:
            raw = read_regular(self._path, MAX_CACHE_BYTES, follow_symlinks=False)
            head, _, body = raw.partition(b"\n")
            header = json.loads(head)
            if header.get("key") != self._key:
                return {}
            if header.get("sha256") != hashlib.sha256(body).hexdigest():
                return {}
            entries = json.loads(body)
        except (OSError, FileRefusedError, ValueError, AttributeError, RecursionError):
            return {}  # missing, unreadable, corrupt: read every file
        return entries if isinstance(entries, dict) else {}

    def read(self, path: Path, root: Path, max_bytes: int) -> Task:
        """The task in ``path``, as :func:`load_task_file` gives it."""
        shown = str(path)
        looked = self._wall_ns()
        entry = self._old.get(shown)
        if entry is not None:
            try:
                task = self._answer(entry, _stamp(os.stat(path)), path, root)
            except OSError:
                task = None
            if task is not None:
                self.hits += 1
                self._new[shown] = entry
                return task
        try:
            # The stamp kept is the read file's own: a folder renamed or a link flipped
            # between a stat and the read would give one file's stamp another's content.
            raw, info = read_regular_stat(path, max_bytes)
        except (OSError, FileRefusedError):
            return load_task_file(path, root, max_bytes)  # it says why
        task = load_task_file(path, root, max_bytes, raw=raw)
        stamp = _stamp(info)
        if max(stamp[1], stamp[2]) < looked - SETTLED_NS:
            text = task.spec.model_dump_json(exclude_unset=True)
            if TaskSpec.model_validate_json(text) == task.spec:  # JSON keeps no dates
                self._new[shown] = [*stamp, task.task_hash, text]
        return task

    @staticmethod
    def _answer(entry: Any, stamp: list[int], path: Path, root: Path) -> Task | None:
        if not isinstance(entry, list) or len(entry) != 7 or entry[:5] != stamp:
            return None
        task_hash, text = entry[5], entry[6]
        if not isinstance(task_hash, str) or not isinstance(text, str):
            return None
        try:
            spec = TaskSpec.model_validate_json(text)
        except ValidationError:
            return None
        return Task(spec.id or default_id(path, root), path, spec, task_hash)

    def save(self) -> None:
        """Write what this pass read, when it differs from the file (atomically; a
        failure to write only costs the next pass its parses)."""
        if self._new == self._old:
            return
        body = json.dumps(self._new, separators=(",", ":")).encode()
        header = {"key": self._key, "sha256": hashlib.sha256(body).hexdigest()}
        with contextlib.suppress(OSError):
            atomic_write(self._path, json.dumps(header).encode() + b"\n" + body)
