"""runner.state.taskcache: unchanged, settled task files come from the cache; a change,
a young file, a corrupt or foreign cache only cost a parse, never a different task."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from datetime import date
from typing import TYPE_CHECKING

import pytest

from runner.defs.tasks import LoadResult, load_tasks
from runner.state import taskcache
from runner.state.taskcache import CACHE_NAME, SETTLED_NS, TaskCache

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

HELLO = "description: say hello\ntool: echo\nargs: {text: hello}\n"
HOURLY = 'schedule: "every 1h"\ntool: list_dir\nargs: {path: .}\n'
LATER = 10 * SETTLED_NS  # the clock of a pass long after the files were written


def later() -> int:
    return time.time_ns() + LATER


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    (folder / "sub").mkdir(parents=True)
    (folder / "hello.yaml").write_text(HELLO)
    (folder / "sub" / "hourly.yaml").write_text(HOURLY)
    (folder / "named.yaml").write_text("id: custom/name\nprompt: summarise\n")
    return folder


def a_pass(
    tasks: Path, *, wall_ns: Callable[[], int] = later, max_bytes: int = 1_048_576
) -> LoadResult:
    """One pass that reads through the cache and writes it back."""
    cache = TaskCache(tasks.parent / ".omni" / CACHE_NAME, tasks, max_bytes, wall_ns=wall_ns)
    loaded = load_tasks(tasks, max_bytes, read=cache.read)
    loaded.cached = cache.hits
    cache.save()
    return loaded


def summary(loaded: LoadResult) -> list[tuple[str, str, str, object]]:
    return [(t.id, str(t.path), t.task_hash, t.spec) for t in loaded.tasks]


@pytest.fixture(autouse=True)
def state_folder(tmp_path: Path) -> None:
    (tmp_path / ".omni").mkdir()


def test_unchanged_settled_files_are_not_parsed_again(tasks: Path) -> None:
    fresh = load_tasks(tasks)
    first = a_pass(tasks)
    second = a_pass(tasks)
    assert (first.cached, second.cached) == (0, 3)
    assert summary(second) == summary(first) == summary(fresh)
    assert [t.id for t in second.tasks] == ["hello", "custom/name", "sub/hourly"]


def test_a_file_read_before_it_settled_is_read_again(tasks: Path) -> None:
    now = time.time_ns
    assert a_pass(tasks, wall_ns=now).cached == 0  # every file was written just now
    assert a_pass(tasks, wall_ns=now).cached == 0
    assert not (tasks.parent / ".omni" / CACHE_NAME).exists()  # nothing to remember


def test_an_edit_of_the_same_size_with_the_old_mtime_is_read(tasks: Path) -> None:
    a_pass(tasks)
    path = tasks / "hello.yaml"
    before = path.stat()
    path.write_text(HELLO.replace("hello}", "HELLO}"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    again = a_pass(tasks)
    assert again.cached == 2
    hello = next(t for t in again.tasks if t.id == "hello")
    assert hello.spec.args == {"text": "HELLO"}
    assert hello.task_hash == next(t for t in load_tasks(tasks).tasks if t.id == "hello").task_hash


def test_a_file_replaced_by_another_inode_is_read(tasks: Path) -> None:
    a_pass(tasks)
    path = tasks / "hello.yaml"
    before = path.stat()
    other = tasks / "other.tmp"
    other.write_text(HELLO.replace("hello}", "howdy}"))
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, path)
    again = a_pass(tasks)
    assert next(t for t in again.tasks if t.id == "hello").spec.args == {"text": "howdy"}


def test_a_renamed_file_gets_its_new_id(tasks: Path) -> None:
    a_pass(tasks)
    (tasks / "hello.yaml").rename(tasks / "greet.yaml")
    again = a_pass(tasks)
    assert sorted(t.id for t in again.tasks) == ["custom/name", "greet", "sub/hourly"]
    assert again.cached == 2


def test_invalid_files_keep_their_problems(tasks: Path) -> None:
    (tasks / "bad.yaml").write_text("tool: echo\nprompt: both\n")
    first = a_pass(tasks)
    second = a_pass(tasks)
    shown = [str(p) for p in second.problems]
    assert shown == [str(p) for p in first.problems] == [str(p) for p in load_tasks(tasks).problems]
    assert [p.path for p in second.problems] == [str(tasks / "bad.yaml")]
    assert second.cached == 3


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # cut short
        lambda raw: b"\x00" * len(raw),
        lambda raw: raw.replace(b"say hello", b"say HELLO"),  # its checksum no longer fits
        lambda raw: b"[" * 100_000 + b"]" * 100_000,
        lambda raw: b'{"key": 1}\n{}',
        lambda raw: b"",
    ],
)
def test_a_corrupt_cache_is_ignored(tasks: Path, damage: Callable[[bytes], bytes]) -> None:
    a_pass(tasks)
    cache = tasks.parent / ".omni" / CACHE_NAME
    cache.write_bytes(damage(cache.read_bytes()))
    again = a_pass(tasks)
    assert again.cached == 0
    assert summary(again) == summary(load_tasks(tasks))
    assert a_pass(tasks).cached == 3  # rewritten whole


def test_a_cache_with_bad_entries_reads_those_files(tasks: Path) -> None:
    a_pass(tasks)
    cache = tasks.parent / ".omni" / CACHE_NAME
    head, body = cache.read_bytes().split(b"\n", 1)
    entries = json.loads(body)
    entries[str(tasks / "hello.yaml")][6] = {"tool": "x", "prompt": "both"}  # not a task
    entries[str(tasks / "named.yaml")] = "nonsense"
    body = json.dumps(entries).encode()
    header = json.loads(head)
    header["sha256"] = hashlib.sha256(body).hexdigest()
    cache.write_bytes(json.dumps(header).encode() + b"\n" + body)
    again = a_pass(tasks)
    assert again.cached == 1
    assert summary(again) == summary(load_tasks(tasks))


def test_a_cache_from_another_version_is_ignored(tasks: Path) -> None:
    a_pass(tasks)
    cache = tasks.parent / ".omni" / CACHE_NAME
    head, body = cache.read_bytes().split(b"\n", 1)
    header = json.loads(head)
    header["key"]["omni"] = "0.0.1"
    cache.write_bytes(json.dumps(header).encode() + b"\n" + body)
    assert a_pass(tasks).cached == 0


def test_a_lower_size_cap_is_not_answered_from_the_cache(tasks: Path) -> None:
    a_pass(tasks)
    small = a_pass(tasks, max_bytes=53)  # hello.yaml is 54 bytes, the others fewer
    assert small.cached == 0
    assert [p.path for p in small.problems] == [str(tasks / "hello.yaml")]
    assert "over the 53-byte cap" in small.problems[0].message


def test_values_json_cannot_carry_are_not_cached(tasks: Path) -> None:
    (tasks / "dated.yaml").write_text("tool: echo\nargs: {when: 2026-01-01}\n")
    (tasks / "endless.yaml").write_text("tool: echo\nargs: {n: .inf}\n")
    a_pass(tasks)
    again = a_pass(tasks)
    assert again.cached == 3
    args = {t.id: t.spec.args for t in again.tasks}
    assert args["dated"] == {"when": date(2026, 1, 1)}
    assert args["endless"] == {"n": math.inf}


@pytest.mark.timeout(30)  # a FIFO read would wait for a writer for ever
@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_a_cache_that_is_not_a_regular_file_is_not_read(tasks: Path, kind: str) -> None:
    a_pass(tasks)
    cache = tasks.parent / ".omni" / CACHE_NAME
    elsewhere = tasks.parent / "planted.json"
    cache.rename(elsewhere)
    planted = elsewhere.read_bytes()
    if kind == "symlink":
        cache.symlink_to(elsewhere)
    elif kind == "fifo":
        os.mkfifo(cache)
    else:
        cache.mkdir()
    again = a_pass(tasks)
    assert again.cached == 0
    assert summary(again) == summary(load_tasks(tasks))
    if kind != "folder":  # replaced by a file of its own; the link's target untouched
        assert cache.is_file() and not cache.is_symlink()
        assert elsewhere.read_bytes() == planted
        assert a_pass(tasks).cached == 3


def test_a_folder_swapped_while_a_file_is_read_never_gives_it_the_others_content(
    tasks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        (tasks / name).mkdir()
        (tasks / name / "t.yaml").write_text(f"tool: echo\nargs: {{text: {name * 3}}}\n")

    def swap() -> None:  # another process flipping two folders (a deploy, a rollback)
        os.rename(tasks / "a", tasks / "tmp")
        os.rename(tasks / "b", tasks / "a")
        os.rename(tasks / "tmp", tasks / "b")

    real = taskcache.load_task_file

    def racing(path: Path, root: Path, max_bytes: int, **kwargs: object) -> object:
        if path == tasks / "a" / "t.yaml":
            swap()  # between the stat that made its stamp and the read, before
        return real(path, root, max_bytes, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(taskcache, "load_task_file", racing)
    a_pass(tasks)  # its a/t.yaml stamp must be the stamp of the file whose content it keeps
    monkeypatch.setattr(taskcache, "load_task_file", real)
    swap()  # flipped back: a/t.yaml is the very file the first pass stamped
    texts = {t.id: t.spec.args["text"] for t in a_pass(tasks).tasks if t.id in ("a/t", "b/t")}
    assert texts == {"a/t": "aaa", "b/t": "bbb"}
