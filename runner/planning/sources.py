"""Where task files come from in service mode: the watched tasks folder (here) and a
git source (``runner.planning.gitsource``).

Both report lists of :class:`SourceChange` (a task file changed, or is gone) to one
callback; the service loads the files into a :class:`TaskRegistry` (one task an id, one
id a file) and decides what runs.

The folder source watches with watchfiles and reads a file only once it has been
quiet for ``service.settle_ms``: its modification time is that old and its size,
times and inode have not changed meanwhile. A file renamed into place after it was
written (write-then-rename) is therefore read as soon as it appears, or at most
``settle_ms`` after its last write (on a file system whose timestamps are whole
seconds, a second more: the last write may hide in it); a writer pausing longer than
that mid-file should write elsewhere and rename. Editors' temp and swap files, hidden
files and folders are ignored, a change that leaves a file's size, times and inode as
they were is no change (a file read within the second its whole-second time stamps
name is read again at the next event or rescan: a same-size write later in that second
would leave them as they were), and a full rescan every ``service.rescan_interval``
catches events the watcher missed: it stats every file and reads only the new and
changed ones. Watch errors become :class:`SourceError`, logged once per distinct
message; the source keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from watchfiles import Change, awatch

from runner.core.errors import SourceError, TaskFileError
from runner.defs.tasks import TASK_SUFFIXES, Task, find_task_files

log = logging.getLogger(__name__)

# Names editors and desktop tools write next to the real file while saving.
_TEMP_PREFIXES = (".", "#", "~")
_TEMP_SUFFIXES = (".tmp", ".temp", ".swp", ".swo", ".swx", ".bak", ".part", "~", "#")
_TEMP_MARKERS = ("___jb_tmp___", "___jb_old___", ".goutputstream-", ".kate-swp")


class ChangeKind(StrEnum):
    """What happened to a task file."""

    CHANGED = "changed"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class SourceChange:
    """A task file that changed (settled, ready to read) or is gone; ``root`` is the
    folder its default id is relative to."""

    kind: ChangeKind
    path: Path
    root: Path


OnChanges = Callable[[list[SourceChange]], None]


def is_ignored_name(name: str) -> bool:
    """True for hidden files and editors' temp, swap and backup files."""
    return (
        name.startswith(_TEMP_PREFIXES)
        or name.endswith(_TEMP_SUFFIXES)
        or any(marker in name for marker in _TEMP_MARKERS)
    )


def is_task_file(path: Path, root: Path) -> bool:
    """True for a ``.yaml``/``.yml`` file under ``root`` with no ignored part."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False
    return path.suffix in TASK_SUFFIXES and not any(is_ignored_name(p) for p in parts)


def task_files(root: Path) -> list[Path]:
    """Every task file under ``root`` the sources would read, sorted."""
    if not root.is_dir():
        return []
    return [p for p in find_task_files(root) if is_task_file(p, root)]


@dataclass(slots=True)
class Walk:
    """What one walk of the tasks folder found: each task file's path (a string: a
    rescan compares 10,000s of them) with its ``stat``, the files that look meant as
    task files but are not read (``.YAML``), and the folders that could not be listed."""

    found: dict[str, os.stat_result]
    ignored: list[str]
    unreadable: list[TaskFileError]


def walk(root: Path) -> Walk:
    """The task files under ``root`` with their ``stat`` (as
    :func:`runner.defs.tasks.scan_task_files` finds them, less any with a part an ignored
    name; symlinked folders followed, each folder once): one ``stat`` a file and no
    parsing, so a rescan costs little per unchanged file."""
    result = Walk({}, [], [])
    visited: set[tuple[int, int]] = set()
    folders = [os.fspath(root)]
    while folders:
        folder = folders.pop()
        try:
            here = os.stat(folder)
            if (here.st_dev, here.st_ino) in visited:  # a symlink loop
                continue
            visited.add((here.st_dev, here.st_ino))
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:  # unreadable, or gone since its parent was listed
            problem = f"cannot list: {exc.strerror}"
            result.unreadable.append(TaskFileError(folder, None, "(folder)", problem))
            continue
        for entry in entries:
            if is_ignored_name(entry.name):
                continue
            if _is_folder(entry):
                folders.append(entry.path)
            elif entry.name.endswith(TASK_SUFFIXES):
                with contextlib.suppress(OSError):  # gone since it was listed
                    result.found[entry.path] = entry.stat()
            elif entry.name.lower().endswith(TASK_SUFFIXES):
                result.ignored.append(entry.path)
    return result


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # a symlink to a folder too
    except OSError:
        return False


Signature = tuple[int, int, int, int]


def _signature(info: os.stat_result) -> Signature:
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


#: Seconds a whole-second modification time may hide: file systems with coarse
#: timestamps (ext4 with 128-byte inodes) round the last write down to the second.
_COARSE_MTIME_S = 1.0


#: The signature of a file read while its coarse time stamps could still hide a write.
_UNSURE: Signature = (-1, -1, -1, -1)


def _last_write(info: os.stat_result) -> float:
    """When the file was last written, at the latest (wall-clock seconds)."""
    if info.st_mtime_ns % 1_000_000_000 == 0:  # a coarse clock, or a write exactly on it
        return info.st_mtime + _COARSE_MTIME_S
    return info.st_mtime


@dataclass(slots=True)
class _Pending:
    """A file seen changing: its last observed signature and since when (monotonic)."""

    signature: Signature | None = None
    since: float = 0.0


class FolderSource:  # pylint: disable=too-many-instance-attributes  # one watcher's state
    """The tasks folder: watchfiles events, settling, periodic rescans."""

    def __init__(
        self,
        root: Path,
        *,
        on_changes: OnChanges,
        settle_ms: int,
        rescan_interval: float,
        on_started: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        # Absolute: watchfiles reports absolute paths, and ids are relative to this.
        self.root = root.resolve()
        self._on_changes = on_changes
        self._on_started = on_started
        self._settle = settle_ms / 1000
        self._rescan_interval = rescan_interval
        self._monotonic = monotonic
        self._wall = wall
        # Paths as strings: a rescan compares every file's, and 10,000s of Path objects
        # cost more than the stat calls.
        self._known: dict[str, Signature] = {}  # as last reported
        self._pending: dict[str, _Pending] = {}
        self._named: set[str] = set()  # files named once as not read (``.YAML``)
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Watch (after one full scan) until ``stop`` is set."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch(stop))
            group.create_task(self._settle_loop(stop))
            group.create_task(self._rescan_loop(stop))

    def rescan(self) -> None:
        """Compare the folder with what was reported: new or changed files start
        settling, vanished ones are reported removed."""
        found = walk(self.root) if self.root.is_dir() else Walk({}, [], [])
        for path in found.ignored:
            if path not in self._named:  # once, not at every rescan
                self._named.add(path)
                log.warning("%s is not read: task files end in .yaml or .yml (lowercase)", path)
        for problem in found.unreadable:
            if problem.path not in self._named:
                self._named.add(problem.path)
                log.warning("%s", problem.render())
        files = found.found
        gone = [p for p in self._known if p not in files]
        known, pending = self._known, self._pending
        for path, info in files.items():
            if path not in pending and known.get(path) != _signature(info):
                pending[path] = _Pending()
        self._report_removed(gone)
        self._wake.set()

    def settle(self) -> float | None:
        """Report the pending files that are quiet now; seconds until the next check."""
        now, wall = self._monotonic(), self._wall()
        ready: list[SourceChange] = []
        gone: list[str] = []
        delay: float | None = None
        for path, pending in sorted(self._pending.items()):  # in order: the first of an id wins
            try:
                info = os.stat(path)
            except OSError:
                del self._pending[path]
                gone.append(path)
                continue
            signature = _signature(info)
            if not stat.S_ISREG(info.st_mode):
                # A FIFO, a device, a folder: nothing to settle. Reported as changed, so
                # the loader says once that it is not read (it was dropped unnamed).
                del self._pending[path]
                if self._known.get(path) != signature:
                    self._known[path] = signature
                    ready.append(SourceChange(ChangeKind.CHANGED, Path(path), self.root))
                continue
            if signature != pending.signature:
                pending.signature, pending.since = signature, now
            quiet = max(wall - _last_write(info), now - pending.since)
            if quiet < self._settle:
                wait = self._settle - quiet
                delay = wait if delay is None else min(delay, wait)
                continue
            del self._pending[path]
            if self._known.get(path) != signature:
                # Read within the second its whole-second time stamps name: a write later
                # in that second may leave them, and the size, as they are. Such a file
                # keeps no signature, so the next event or rescan reads it again.
                self._known[path] = signature if wall >= _last_write(info) else _UNSURE
                ready.append(SourceChange(ChangeKind.CHANGED, Path(path), self.root))
        self._report_removed(gone)
        if ready:
            self._on_changes(ready)
        return delay

    def on_batch(self, batch: Iterable[tuple[Change, str]]) -> None:
        """Take one batch of watchfiles events: what exists settles, what is gone is
        reported at once (a folder's files with it)."""
        gone: list[str] = []
        for _change, raw in batch:
            path = Path(raw)
            if path.is_dir():
                for found in task_files(path):
                    self._pending[str(found)] = _Pending()
            elif path.exists():
                if is_task_file(path, self.root):
                    self._pending[str(path)] = _Pending()
            else:
                self._pending.pop(str(path), None)
                gone.append(str(path))
        self._report_removed(gone)
        self._wake.set()

    def _report_removed(self, paths: list[str]) -> None:
        removed: list[SourceChange] = []
        for path in paths:
            below = path + os.sep
            inside = [k for k in self._known if k == path or k.startswith(below)]
            for known in inside:
                del self._known[known]
                removed.append(SourceChange(ChangeKind.REMOVED, Path(known), self.root))
        if removed:
            self._on_changes(removed)

    def _accepts(self, _change: Change, raw: str) -> bool:
        try:
            parts = Path(raw).relative_to(self.root).parts
        except ValueError:
            return False
        return not any(is_ignored_name(p) for p in parts)

    async def _watch(self, stop: asyncio.Event) -> None:
        on_started, failure = self._on_started, ""
        try:
            while not stop.is_set():
                try:
                    changes = awatch(self.root, watch_filter=self._accepts, stop_event=stop)
                    step = asyncio.ensure_future(anext(changes))
                    # One turn of the loop runs the generator up to its first wait, by
                    # which point its inotify watches exist: scanning after that misses
                    # nothing written in between.
                    await asyncio.sleep(0)
                    self.rescan()
                    self.settle()
                    if on_started is not None:
                        on_started()
                        on_started = None
                    while True:
                        self.on_batch(await step)
                        step = asyncio.ensure_future(anext(changes))
                        failure = ""
                except StopAsyncIteration:
                    return
                except (OSError, RuntimeError) as exc:
                    if str(exc) != failure:  # once per distinct failure, not every second
                        failure = str(exc)
                        message = f"tasks folder {self.root}: watching failed: {exc}; retrying"
                        log.error("%s", SourceError(message))
                    await sleep_until(stop, 1.0)
        finally:
            self._wake.set()

    async def _settle_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            delay = self.settle()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _rescan_loop(self, stop: asyncio.Event) -> None:
        while not await sleep_until(stop, self._rescan_interval):
            self.rescan()


class TaskRegistry:
    """The tasks the service knows: one task an id, one id a file."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._ids: dict[Path, str] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, task_id: str) -> Task | None:
        """The task with this id, or ``None``."""
        return self._tasks.get(task_id)

    def id_at(self, path: Path) -> str | None:
        """The id of the task loaded from ``path``, or ``None``."""
        return self._ids.get(path)

    def put(self, task: Task) -> None:
        """Register (or replace) a task."""
        self._tasks[task.id] = task
        self._ids[task.path] = task.id

    def drop(self, task_id: str) -> Task | None:
        """Forget a task; returns it, or ``None`` if unknown."""
        task = self._tasks.pop(task_id, None)
        if task is not None and self._ids.get(task.path) == task_id:
            del self._ids[task.path]
        return task


async def sleep_until(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop``; True if stopped."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True
