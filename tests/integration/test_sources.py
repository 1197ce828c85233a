"""The task sources on their own: real watchfiles on temp folders, real git repositories
with a local bare remote. What they report, when, and what they ignore."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from runner.defs.config import GitSource as GitSourceConfig
from runner.planning.gitsource import GitSource
from runner.planning.sources import ChangeKind, FolderSource, SourceChange, is_ignored_name
from runner.state.store import Store
from tests.support.service import Remote, drop, echo_task, git, wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration


class Seen:
    """What a source reported: each change with the file's content at that moment."""

    def __init__(self) -> None:
        self.changes: list[SourceChange] = []
        self.contents: list[str | None] = []
        self.at: list[float] = []

    def __call__(self, changes: list[SourceChange]) -> None:
        for change in changes:
            self.changes.append(change)
            exists = change.kind is ChangeKind.CHANGED and change.path.exists()
            self.contents.append(change.path.read_text() if exists else None)
            self.at.append(time.monotonic())

    def of(self, path: Path) -> list[ChangeKind]:
        return [c.kind for c in self.changes if c.path == path.resolve()]

    def names(self) -> list[tuple[str, str]]:
        return [(c.kind.value, c.path.name) for c in self.changes]


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    return folder


@asynccontextmanager
async def watching(
    root: Path, *, settle_ms: int = 100, rescan_interval: float = 60.0
) -> AsyncIterator[Seen]:
    seen, started, stop = Seen(), asyncio.Event(), asyncio.Event()
    source = FolderSource(
        root,
        on_changes=seen,
        settle_ms=settle_ms,
        rescan_interval=rescan_interval,
        on_started=started.set,
    )
    job = asyncio.create_task(source.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    try:
        yield seen
    finally:
        stop.set()
        await asyncio.wait_for(job, 10)


async def test_a_dropped_file_is_read_once_after_settle_ms_without_change(tasks: Path) -> None:
    async with watching(tasks, settle_ms=250) as seen:
        written = time.monotonic()
        (tasks / "a.yaml").write_text(echo_task("a"))
        await wait_for(lambda: seen.of(tasks / "a.yaml"), what="a.yaml")
        assert seen.at[0] - written >= 0.24
        await asyncio.sleep(0.4)
    assert seen.of(tasks / "a.yaml") == [ChangeKind.CHANGED]


async def test_write_then_rename_is_read_at_once_not_after_settle_ms(tasks: Path) -> None:
    async with watching(tasks, settle_ms=1000) as seen:
        tmp = tasks / ".b.yaml.tmp"
        tmp.write_text(echo_task("b"))
        # The writer took its time (longer than settle_ms plus the second a coarse
        # timestamp may hide), then renamed into place.
        await asyncio.sleep(2.05)
        renamed = time.monotonic()
        os.replace(tmp, tasks / "b.yaml")
        await wait_for(lambda: seen.of(tasks / "b.yaml"), what="b.yaml")
        assert seen.at[0] - renamed < 0.5
    assert seen.names() == [("changed", "b.yaml")]


async def test_a_slow_writer_is_read_only_when_it_is_done(tasks: Path) -> None:
    full = "tool: echo\n" + "".join(f"# line {i}\n" for i in range(8)) + "args: {text: done}\n"
    async with watching(tasks, settle_ms=300) as seen:
        with (tasks / "slow.yaml").open("w") as handle:
            for line in full.splitlines(keepends=True):
                handle.write(line)
                handle.flush()
                await asyncio.sleep(0.1)  # pauses shorter than settle_ms
        await wait_for(lambda: seen.changes, what="slow.yaml")
        await asyncio.sleep(0.4)
    assert seen.of(tasks / "slow.yaml") == [ChangeKind.CHANGED]
    assert seen.contents == [full]


@pytest.mark.parametrize(
    "name",
    [
        ".a.yaml.swp",
        ".a.yaml.swx",
        "a.yaml~",
        "#a.yaml#",
        ".#a.yaml",
        "4913",
        "a.yaml.tmp",
        ".goutputstream-X1Y2Z3",
        "a.yaml___jb_tmp___",
        "a.yaml.kate-swp",
        ".hidden.yaml",
    ],
)
def test_editor_names_are_ignored(name: str) -> None:
    assert is_ignored_name(name) or not name.endswith((".yaml", ".yml"))


async def test_swap_temp_and_hidden_files_are_ignored(tasks: Path) -> None:
    names = [
        ".a.yaml.swp",
        "a.yaml~",
        "#a.yaml#",
        ".#a.yaml",
        "4913",
        "a.yaml.tmp",
        ".goutputstream-ABC123",
        ".hidden.yaml",
        ".git/x.yaml",
        ".cache/deep/y.yaml",
        "notes.txt",
    ]
    async with watching(tasks, settle_ms=50) as seen:
        for name in names:
            (tasks / name).parent.mkdir(parents=True, exist_ok=True)
            (tasks / name).write_text(echo_task(name))
        (tasks / "4913").unlink()
        # vim's save: the file moves to a backup, the new one is written, the backup goes.
        (tasks / "real.yaml").write_text(echo_task("v1"))
        await wait_for(lambda: seen.changes, what="real.yaml")
        os.replace(tasks / "real.yaml", tasks / "real.yaml~")
        (tasks / "real.yaml").write_text(echo_task("v2"))
        (tasks / "real.yaml~").unlink()
        await wait_for(lambda: len(seen.changes) >= 2, what="the save")
        await asyncio.sleep(0.3)
    assert seen.names() == [("changed", "real.yaml"), ("changed", "real.yaml")]
    assert seen.contents[-1] == echo_task("v2")


async def test_delete_rename_and_folders_moving(tasks: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "team").mkdir(parents=True)
    (outside / "team" / "t1.yaml").write_text(echo_task("t1"))
    (outside / "team" / "t2.yaml").write_text(echo_task("t2"))
    async with watching(tasks, settle_ms=50) as seen:
        drop(tasks / "a.yaml", echo_task("a"))
        await wait_for(lambda: len(seen.changes) == 1, what="a.yaml")
        os.replace(tasks / "a.yaml", tasks / "b.yaml")
        await wait_for(lambda: len(seen.changes) == 3, what="the rename")
        (tasks / "b.yaml").unlink()
        await wait_for(lambda: len(seen.changes) == 4, what="the delete")
        os.replace(outside / "team", tasks / "team")  # a folder moved in
        await wait_for(lambda: len(seen.changes) == 6, what="the folder moving in")
        os.replace(tasks / "team", outside / "team")  # and out again
        await wait_for(lambda: len(seen.changes) == 8, what="the folder moving out")
        await asyncio.sleep(0.2)
    names = seen.names()
    assert names[:4] == [
        ("changed", "a.yaml"),
        ("removed", "a.yaml"),
        ("changed", "b.yaml"),
        ("removed", "b.yaml"),
    ]
    assert sorted(names[4:6]) == [("changed", "t1.yaml"), ("changed", "t2.yaml")]
    assert sorted(names[6:]) == [("removed", "t1.yaml"), ("removed", "t2.yaml")]


async def test_a_file_deleted_before_it_settles_is_never_read(tasks: Path) -> None:
    async with watching(tasks, settle_ms=400) as seen:
        (tasks / "gone.yaml").write_text(echo_task("gone"))
        await asyncio.sleep(0.1)
        (tasks / "gone.yaml").unlink()
        await asyncio.sleep(0.7)
    assert seen.changes == []


def test_rescan_finds_new_changed_and_vanished_files_without_events(tasks: Path) -> None:
    seen = Seen()
    source = FolderSource(tasks, on_changes=seen, settle_ms=100, rescan_interval=60)
    old = time.time() - 10

    def write(name: str, text: str) -> None:
        (tasks / name).write_text(text)
        os.utime(tasks / name, (old, old))  # written a while ago: settled

    write("a.yaml", echo_task("a"))
    source.rescan()
    assert source.settle() is None
    assert seen.names() == [("changed", "a.yaml")]
    source.rescan()  # nothing changed: nothing reported
    assert source.settle() is None
    write("a.yaml", echo_task("a2"))
    (tasks / "fresh.yaml").write_text(echo_task("fresh"))  # just written: not yet
    source.rescan()
    wait = source.settle()
    assert wait is not None and 0 < wait <= 0.1
    assert seen.names()[1:] == [("changed", "a.yaml")]
    (tasks / "a.yaml").unlink()
    source.rescan()
    assert ("removed", "a.yaml") in seen.names()


def test_a_whole_second_mtime_is_not_taken_for_quiet(tasks: Path) -> None:
    # Coarse timestamps (ext4 with 128-byte inodes, FAT) round a write down to the
    # second: a file written 0.1 s ago may look 0.9 s old and be read half-written.
    second = float(int(time.time()) - 5)
    clock = {"wall": second + 0.95, "monotonic": 100.0}
    seen = Seen()
    source = FolderSource(
        tasks,
        on_changes=seen,
        settle_ms=300,
        rescan_interval=60,
        wall=lambda: clock["wall"],
        monotonic=lambda: clock["monotonic"],
    )
    (tasks / "half.yaml").write_text("tool: echo\n")
    os.utime(tasks / "half.yaml", (second, second))
    source.rescan()
    wait = source.settle()
    assert seen.changes == [] and wait is not None
    clock["monotonic"] += 0.31  # quiet for settle_ms since it was first seen: read now
    assert source.settle() is None
    assert seen.names() == [("changed", "half.yaml")]


async def test_rescans_run_on_their_interval(tasks: Path) -> None:
    async with watching(tasks, settle_ms=0, rescan_interval=0.3) as seen:
        # Hidden from the watcher: written into a hidden folder, then made visible by a
        # rename of the folder, which the watcher reports only for the folder itself.
        (tasks / ".staging").mkdir()
        (tasks / ".staging" / "x.yaml").write_text(echo_task("x"))
        shutil.move(tasks / ".staging", tasks / "visible")
        await wait_for(lambda: seen.changes, within=3, what="x.yaml")
    assert seen.names() == [("changed", "x.yaml")]


# -- git source -----------------------------------------------------------------------


@asynccontextmanager
async def git_source(
    tmp_path: Path, url: str, poll: float = 0.2
) -> AsyncIterator[tuple[Seen, Store]]:
    seen, stop = Seen(), asyncio.Event()
    with Store(tmp_path / "state.db") as store:
        source = GitSource(
            GitSourceConfig(url=url, branch="main", poll_interval=poll),
            clone_dir=tmp_path / "clone",
            store=store,
            on_changes=seen,
        )
        job = asyncio.create_task(source.run(stop))
        try:
            yield seen, store
        finally:
            stop.set()
            await asyncio.wait_for(job, 30)


async def test_git_source_reports_task_files_changed_since_the_processed_commit(
    tmp_path: Path,
) -> None:
    remote = Remote.serving(
        tmp_path / "git", {"tasks/a.yaml": echo_task("a"), "README.md": "not a task\n"}
    )
    async with git_source(tmp_path, str(remote.bare)) as (seen, store):
        await wait_for(lambda: seen.changes, what="the first poll")
        assert seen.names() == [("changed", "a.yaml")]
        head = remote.commit(
            {
                "tasks/a.yaml": echo_task("a2"),
                "tasks/sub/b.yaml": echo_task("b"),
                "other/c.yaml": echo_task("not under tasks/"),
            }
        )
        remote.push()
        await wait_for(lambda: len(seen.changes) == 3, what="the second commit")
        assert sorted(seen.names()[1:]) == [("changed", "a.yaml"), ("changed", "b.yaml")]
        await wait_for(lambda: store.meta_get(GitSource.COMMIT_KEY) == head, what="the commit")
        remote.commit({"tasks/a.yaml": None})
        remote.push()
        await wait_for(lambda: len(seen.changes) == 4, what="the deletion")
        assert seen.names()[-1] == ("removed", "a.yaml")
    assert seen.changes[1].root == tmp_path / "clone" / "tasks"
    # Each poll closes its clone: no `git cat-file --batch` helper outlives it.
    assert [c for c in child_commands() if "cat-file" in c] == []


def child_commands() -> list[str]:
    """The command lines of this process's living children."""
    pids = [
        pid
        for task in Path("/proc/self/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]
    found = []
    for pid in pids:
        try:
            found.append((Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" "))
        except OSError:
            continue  # ended meanwhile
    return [c.decode(errors="replace") for c in found]


async def test_a_force_push_is_a_logged_error_and_the_new_history_is_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = Remote.serving(tmp_path / "git", {"tasks/a.yaml": echo_task("a")})
    async with git_source(tmp_path, str(remote.bare)) as (seen, store):
        await wait_for(lambda: store.meta_get(GitSource.COMMIT_KEY), what="the first poll")
        remote.commit({"tasks/a.yaml": echo_task("a, rewritten")})
        (remote.work / "tasks" / "a.yaml").write_text(echo_task("a, rewritten again"))
        remote.push()
        await wait_for(lambda: len(seen.changes) == 2, what="the second commit")
        # Rewrite the last commit and force-push it.
        (remote.work / "tasks" / "b.yaml").write_text(echo_task("b"))
        git(remote.work, "add", "-A")
        git(remote.work, "commit", "-q", "--amend", "-m", "rewritten")
        remote.push(force=True)
        await wait_for(lambda: len(seen.changes) >= 4, what="the rewritten history")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("force-pushed" in e and "following the new history" in e for e in errors), errors
    assert ("changed", "b.yaml") in seen.names()


async def test_an_unreachable_remote_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runner")
    remote = Remote.serving(tmp_path / "git", {"tasks/a.yaml": echo_task("a")})
    away = tmp_path / "away.git"
    remote.bare.rename(away)
    async with git_source(tmp_path, str(remote.bare), poll=0.1) as (seen, _):
        await asyncio.sleep(0.8)  # several polls fail
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors
        assert "git source" in errors[0] and "`git fetch` failed" in errors[0]
        assert seen.changes == []
        away.rename(remote.bare)
        await wait_for(lambda: seen.changes, what="the remote coming back")
    assert seen.names() == [("changed", "a.yaml")]
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_a_file_read_within_its_whole_second_is_read_again_at_the_next_rescan(
    tasks: Path,
) -> None:
    # On a file system with whole-second time stamps a same-size write later in the
    # second a file was read in leaves its size, times and inode as they were: a rescan
    # could not tell. Such a file is read again once that second is over; a file whose
    # time stamps are sure is not read again.
    second = float(int(time.time()) - 5)
    clock = {"wall": second + 0.5, "monotonic": 100.0}
    seen = Seen()
    source = FolderSource(
        tasks,
        on_changes=seen,
        settle_ms=100,
        rescan_interval=60,
        wall=lambda: clock["wall"],
        monotonic=lambda: clock["monotonic"],
    )
    coarse, fine = tasks / "coarse.yaml", tasks / "fine.yaml"
    coarse.write_text(echo_task("coarse"))
    os.utime(coarse, (second, second))
    fine.write_text(echo_task("fine"))
    os.utime(fine, (second - 9.25, second - 9.25))
    source.rescan()
    source.settle()
    clock["monotonic"] += 0.2  # quiet for settle_ms: read, within its second
    assert source.settle() is None
    assert seen.names() == [("changed", "fine.yaml"), ("changed", "coarse.yaml")]
    clock["wall"], clock["monotonic"] = second + 3, 160.0
    source.rescan()
    assert source.settle() is None
    assert seen.names()[2:] == [("changed", "coarse.yaml")]
    source.rescan()  # sure of both now: neither is read again
    assert source.settle() is None
    assert len(seen.changes) == 3
