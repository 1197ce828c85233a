"""Service mode in-process: real watchfiles, real APScheduler, the real built-in executor
over stdio, real SQLite, real git. Each task runs exactly once, none while incomplete;
schedules fire on their slots, never overlap, follow edits, stop when told."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from runner.core.clock import iso
from runner.planning.jobs import JOBS_KEY
from runner.state.store import Store
from tests.support.service import (
    Remote,
    drop,
    echo_task,
    git,
    results_of,
    rows,
    running,
    wait_for,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def outputs(root: Path, task_id: str) -> list[object]:
    return [r["output"] for r in results_of(root, task_id)]


def completed(root: Path) -> int:
    return sum(1 for row in rows(root) if row["state"] == "completed")


async def test_drops_run_once_per_content(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    async with running(tmp_path, service={"settle_ms": 50}):
        (tasks / "direct.yaml").write_text(echo_task("direct"))
        drop(tasks / "renamed.yaml", echo_task("renamed"))
        drop(tasks / "nested" / "deep.yaml", echo_task("deep"))
        await wait_for(lambda: completed(tmp_path) == 3, what="three runs")
        (tasks / "direct.yaml").touch()  # same content: nothing runs
        drop(tasks / "renamed.yaml", "# re-saved\n" + echo_task("renamed"))  # same values
        drop(tasks / "nested" / "deep.yaml", echo_task("deep, changed"))
        await wait_for(lambda: completed(tmp_path) == 4, what="the changed file")
        await asyncio.sleep(0.4)
    assert outputs(tmp_path, "direct") == ["direct"]
    assert outputs(tmp_path, "renamed") == ["renamed"]
    assert sorted(outputs(tmp_path, "nested/deep")) == ["deep", "deep, changed"]  # type: ignore[type-var]
    assert len(rows(tmp_path)) == 4


async def test_a_slow_partial_write_never_runs_half_a_file(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    async with running(tmp_path, service={"settle_ms": 300}):
        with (tasks / "slow.yaml").open("w") as handle:
            handle.write("tool: echo\n")  # a valid YAML mapping, but no `args` yet
            for i in range(6):  # a slow writer, pausing less than settle_ms each time
                handle.write(f"# part {i}\n")
                handle.flush()
                await asyncio.sleep(0.12)
            handle.write("args: {text: complete}\n")
        await wait_for(lambda: completed(tmp_path) == 1, what="the run")
        await asyncio.sleep(0.5)
    assert [(r["state"], r["output"]) for r in results_of(tmp_path, "slow")] == [
        ("completed", "complete")
    ]
    assert len(rows(tmp_path)) == 1


async def test_swap_files_deletes_and_renames(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    async with running(tmp_path, service={"settle_ms": 100}):
        for name in (
            ".a.yaml.swp",
            "a.yaml~",
            "#a.yaml#",
            ".goutputstream-Q1W2E3",
            "a.yaml.tmp",
            ".hidden.yaml",
            ".drafts/b.yaml",
        ):
            (tasks / name).parent.mkdir(exist_ok=True)
            (tasks / name).write_text(echo_task(name))
        (tasks / "deleted-early.yaml").write_text(echo_task("never"))
        await asyncio.sleep(0.03)
        (tasks / "deleted-early.yaml").unlink()  # gone before it settled
        # gedit's save: write a hidden temp file, rename it into place.
        (tasks / ".goutputstream-ABCDEF").write_text(echo_task("saved by gedit"))
        os.replace(tasks / ".goutputstream-ABCDEF", tasks / "gedit.yaml")
        drop(tasks / "keep-id.yaml", echo_task("explicit id", id="kept"))
        drop(tasks / "old-name.yaml", echo_task("default id"))
        await wait_for(lambda: completed(tmp_path) == 3, what="three runs")
        # A rename keeps an explicit id (nothing runs); a default id follows the name.
        os.replace(tasks / "keep-id.yaml", tasks / "moved.yaml")
        os.replace(tasks / "old-name.yaml", tasks / "new-name.yaml")
        (tasks / "gedit.yaml").unlink()
        await wait_for(lambda: completed(tmp_path) == 4, what="the renamed one")
        await asyncio.sleep(0.5)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "gedit",
        "kept",
        "new-name",
        "old-name",
    ]
    assert outputs(tmp_path, "new-name") == ["default id"]
    assert len(rows(tmp_path)) == 4


async def test_two_hundred_files_dropped_at_once_each_run_once_and_complete(
    tmp_path: Path,
) -> None:
    tasks = tmp_path / "tasks"
    async with running(tmp_path, service={"settle_ms": 300}, dispatch={"concurrency": 8}):
        handles = []
        for i in range(100):  # written in place, in two parts
            handle = (tasks / f"direct-{i:03}.yaml").open("w")
            handle.write("tool: echo\n")
            handle.flush()
            handles.append(handle)
        for i in range(100):  # written elsewhere and renamed into place
            drop(tasks / "batch" / f"renamed-{i:03}.yaml", echo_task(f"renamed {i}"))
        await asyncio.sleep(0.05)
        for i, handle in enumerate(handles):
            handle.write(f"args: {{text: direct {i}}}\n")
            handle.close()
        await wait_for(lambda: completed(tmp_path) == 200, within=40, what="200 runs")
        await asyncio.sleep(0.5)
    found = rows(tmp_path)
    assert len(found) == 200
    assert {row["state"] for row in found} == {"completed"}
    for i in range(100):
        assert outputs(tmp_path, f"direct-{i:03}") == [f"direct {i}"]
        assert outputs(tmp_path, f"batch/renamed-{i:03}") == [f"renamed {i}"]


# -- schedules ------------------------------------------------------------------------


def spans(root: Path, task_id: str) -> list[tuple[datetime, datetime, str]]:
    """(started, finished, slot) of each run of the task from its result files."""
    return sorted(
        (
            datetime.fromisoformat(r["started_at"]),
            datetime.fromisoformat(r["finished_at"]),
            r["slot"],
        )
        for r in results_of(root, task_id)
    )


async def test_a_schedule_fires_on_its_slots_and_never_overlaps(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    async with running(tmp_path):
        slow = "tool: run\nargs: {command: [sleep, '1.2']}\nschedule: every 1s\n"
        drop(tasks / "slow.yaml", slow)
        await wait_for(lambda: len(results_of(tmp_path, "slow")) >= 3, within=12, what="3 runs")
    found = spans(tmp_path, "slow")
    slots = [slot for _, _, slot in found]
    assert len(set(slots)) == len(slots)  # every slot served once
    for slot in slots:  # whole seconds: every 1s fires on multiples of a second
        assert datetime.fromisoformat(slot).microsecond == 0
    for (_, finished, _), (started, _, _) in itertools.pairwise(found):
        assert started >= finished  # one run of a task at a time
    assert {r["state"] for r in rows(tmp_path, "slow")} == {"completed"}


async def test_edits_reschedule_and_disable_or_delete_unschedule(tmp_path: Path) -> None:
    tasks, task = tmp_path / "tasks", tmp_path / "tasks" / "tick.yaml"
    async with running(tmp_path) as _:
        drop(task, echo_task("tick", schedule='"0 0 1 1 *"'))  # 1 January: not now
        await asyncio.sleep(0.6)
        assert results_of(tmp_path, "tick") == []
        with Store(tmp_path / ".omni" / "state.db") as store:
            assert "0 0 1 1 *" in (store.meta_get(JOBS_KEY) or "")
        drop(task, echo_task("tick", schedule='"every 1s"'))
        await wait_for(lambda: len(results_of(tmp_path, "tick")) >= 2, what="two ticks")
        drop(task, echo_task("tick", schedule='"every 1s"', enabled="false"))
        await asyncio.sleep(0.3)  # a run in flight finishes
        paused = len(results_of(tmp_path, "tick"))
        await asyncio.sleep(1.6)
        assert len(results_of(tmp_path, "tick")) == paused
        drop(task, echo_task("tick", schedule='"every 1s"'))
        await wait_for(lambda: len(results_of(tmp_path, "tick")) > paused, what="re-enabled")
        task.unlink()
        await asyncio.sleep(0.3)
        gone = len(results_of(tmp_path, "tick"))
        await asyncio.sleep(1.6)
        assert len(results_of(tmp_path, "tick")) == gone
        drop(tasks / "other.yaml", echo_task("still serving"))
        await wait_for(lambda: results_of(tmp_path, "other"), what="a later drop")
    slots = [r["slot"] for r in results_of(tmp_path, "tick")]
    assert len(set(slots)) == len(slots)


async def test_a_restart_after_missed_slots_runs_the_latest_once(tmp_path: Path) -> None:
    drop(tmp_path / "tasks" / "hourly.yaml", echo_task("hourly", schedule='"every 1h"'))
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)

    def three_hours_ago() -> datetime:
        return datetime.now(UTC) - timedelta(hours=3)

    async with running(tmp_path, clock=three_hours_ago):  # a new task: its slot is within grace
        await wait_for(lambda: len(results_of(tmp_path, "hourly")) == 1, what="the first slot")
    # Down for three hours: two slots missed, only the latest runs, once.
    for _ in range(2):
        async with running(tmp_path):
            await wait_for(lambda: len(results_of(tmp_path, "hourly")) == 2, what="catch-up")
            await asyncio.sleep(0.4)
    assert [r["slot"] for r in results_of(tmp_path, "hourly")] == [
        iso(hour - timedelta(hours=3)),
        iso(hour),
    ]


# -- git source -----------------------------------------------------------------------


async def test_git_source_runs_new_commits_and_survives_force_pushes_and_outages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runner")
    remote = Remote.serving(tmp_path / "git", {"tasks/from-git.yaml": echo_task("first")})
    git_source = {"git": {"url": str(remote.bare), "poll_interval": 0.2}}
    async with running(tmp_path, sources=git_source):
        await wait_for(lambda: results_of(tmp_path, "from-git"), what="the first commit")
        remote.commit({"tasks/second.yaml": echo_task("second")})
        remote.push()
        await wait_for(lambda: results_of(tmp_path, "second"), what="the pushed commit")
        # A force-push: history rewritten. Logged as an error; the service goes on.
        (remote.work / "tasks" / "second.yaml").write_text(echo_task("second, rewritten"))
        remote.commit({"tasks/third.yaml": echo_task("third")})
        git(remote.work, "reset", "-q", "--hard", "HEAD~2")
        remote.commit({"tasks/third.yaml": echo_task("third, forced")})
        remote.push(force=True)
        await wait_for(lambda: results_of(tmp_path, "third"), what="the forced history")
        # The remote goes away: logged; local drops still run.
        remote.bare.rename(tmp_path / "moved.git")
        await asyncio.sleep(0.6)
        drop(tmp_path / "tasks" / "local.yaml", echo_task("local"))
        await wait_for(lambda: results_of(tmp_path, "local"), what="a local drop")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("force-pushed" in e for e in errors), errors
    assert any("does not appear to be a git repository" in e for e in errors), errors
    assert outputs(tmp_path, "third") == ["third, forced"]
    assert outputs(tmp_path, "from-git") == ["first"]


async def test_deleting_a_waiting_task_closes_its_run_skipped(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    async with running(tmp_path, service={"settle_ms": 50}):
        drop(tasks / "think.yaml", "prompt: summarise\n")  # no model: it waits, idle
        await wait_for(lambda: [r["state"] for r in rows(tmp_path)] == ["idle"], what="idle")
        (tasks / "think.yaml").unlink()
        await wait_for(lambda: [r["state"] for r in rows(tmp_path)] == ["skipped"], what="closed")
    [row] = rows(tmp_path)
    assert row["note"] == f"task file {tasks / 'think.yaml'} is gone"


async def test_a_file_not_read_is_named_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = tmp_path / "tasks"
    drop(tasks / "Loud.YAML", echo_task("loud"))
    with caplog.at_level(logging.WARNING, logger="runner.planning.sources"):
        async with running(tmp_path, service={"settle_ms": 50, "rescan_interval": 0.1}):
            drop(tasks / "quiet.yaml", echo_task("quiet"))
            await wait_for(lambda: completed(tmp_path) == 1, what="the lowercase one")
            await asyncio.sleep(0.5)  # several rescans
    named = [r.getMessage() for r in caplog.records if "Loud.YAML" in r.getMessage()]
    assert named == [
        f"{tasks.resolve() / 'Loud.YAML'} is not read: task files end in .yaml or .yml (lowercase)"
    ]


def task_rows(root: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(root / ".omni" / "state.db") as conn:
        return conn.execute("SELECT id, updated_at FROM tasks ORDER BY id").fetchall()


async def test_a_start_over_many_files_logs_a_summary_and_rewrites_no_unchanged_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = tmp_path / "tasks"
    for i in range(60):
        drop(tasks / "many" / f"t{i:02}.yaml", echo_task(f"t{i}", schedule='"0 0 1 1 *"'))
    drop(tasks / "hourly.yaml", echo_task("hourly", schedule='"every 1h"'))
    old = time.time() - 10
    for path in tasks.rglob("*.yaml"):  # settled before the start: one batch
        os.utime(path, (old, old))
    with caplog.at_level(logging.INFO, logger="runner"):
        async with running(tmp_path):  # new: the hourly one's slot is within the grace
            await wait_for(lambda: completed(tmp_path) == 1, what="the hourly catch-up")
        first = task_rows(tmp_path)
        async with running(tmp_path):
            await asyncio.sleep(0.4)
    assert len(first) == 61
    assert task_rows(tmp_path) == first  # the restart rewrote no row of an unchanged task
    assert [r["slot"] is not None for r in results_of(tmp_path, "hourly")] == [True]
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    summary = "tasks: 61 loaded or changed (0 one-off, 61 scheduled; 61 jobs in all)"
    assert messages.count(summary) == 2
    assert not [m for m in messages if m.startswith("task many/")]  # no line a task


async def test_a_task_file_replaced_by_a_fifo_is_named_once_as_an_invalid_edit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task = tmp_path / "tasks" / "tick.yaml"
    drop(task, echo_task("tick", schedule='"every 1s"'))
    with caplog.at_level(logging.WARNING):
        async with running(tmp_path, service={"settle_ms": 50, "rescan_interval": 0.1}):
            await wait_for(lambda: len(results_of(tmp_path, "tick")) >= 1, what="a tick")
            task.unlink()
            os.mkfifo(task)  # nothing to settle: it was dropped unnamed
            await wait_for(
                lambda: any("tick.yaml" in r.getMessage() for r in caplog.records),
                what="the FIFO named",
            )
            await asyncio.sleep(0.5)  # several rescans
            # As after any invalid edit, the task keeps its last valid version.
            ticks = len(results_of(tmp_path, "tick"))
            await wait_for(lambda: len(results_of(tmp_path, "tick")) > ticks, what="a tick")
    named = [r.getMessage() for r in caplog.records if "tick.yaml" in r.getMessage()]
    assert len(named) == 1, named
    assert named[0].startswith("invalid task file: ")
    assert named[0].endswith(
        "tick.yaml:1: (file): not a regular file (a FIFO); only files are read"
        " (task 'tick' keeps its last valid version)"
    )
