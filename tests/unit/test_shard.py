"""`--shard K/N`: a matrix of N jobs covers every task exactly once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.app.once import OnceOptions, OnceReport
from runner.defs.tasks import Task, TaskSpec, task_hash
from runner.planning.dueness import DueRule
from runner.planning.plan import Shard, Skipped, plan
from runner.state.results import result_dir
from runner.state.store import Store


def tasks(count: int) -> list[Task]:
    made = []
    for i in range(count):
        task_id = f"team-{i % 10}/task-{i}"
        spec = TaskSpec(tool="echo", args={"text": str(i)}, schedule="every 1h" if i % 3 else None)
        made.append(Task(task_id, Path(f"tasks/{task_id}.yaml"), spec, task_hash(spec, task_id)))
    return made


def test_1000_tasks_over_7_shards_each_run_exactly_once(tmp_path: Path) -> None:
    every = tasks(1000)
    rule = DueRule(now=datetime(2026, 11, 21, 10, 5, tzinfo=UTC), results=tmp_path / "results")
    seen: Counter[str] = Counter()
    folders: dict[Path, int] = {}
    for k in range(1, 8):
        # Each shard is its own CI job: its own machine, its own state database.

        with Store(tmp_path / f"shard-{k}.db") as store:
            runnable, skipped = plan(every, store, OnceOptions(shard=Shard(k, 7)), rule)
        assert not skipped
        assert runnable, f"shard {k}/7 got no task"
        for task, run in runnable:
            seen[task.id] += 1
            assert run.slot == ("2026-11-21T10:00:00.000Z" if task.spec.schedule else None)
            # Result files of different shards never share a folder.
            folder = result_dir(tmp_path / "results", task.id)
            assert folders.setdefault(folder, k) == k
    assert set(seen) == {t.id for t in every}
    assert set(seen.values()) == {1}


def test_shard_assignment_is_stable_and_balanced() -> None:
    ids = [t.id for t in tasks(1000)]
    owners = [[k for k in range(1, 8) if Shard(k, 7).owns(i)] for i in ids]
    assert all(len(o) == 1 for o in owners)
    sizes = Counter(o[0] for o in owners)
    assert min(sizes.values()) > 1000 / 7 * 0.7
    assert [Shard(3, 7).owns(i) for i in ids] == [Shard(3, 7).owns(i) for i in ids]


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "a/b", "3", "1/2/3"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--shard"):
        Shard.parse(text)


def test_a_pass_report_shows_its_counts_not_every_task() -> None:
    # asyncio formats the main task's result when asyncio.run restores SIGINT's handler:
    # a repr of every task of a large pass was paid at the end of every run --once.
    skipped = [Skipped(f"t{i:05d}", "already completed for this content") for i in range(3)]
    report = OnceReport(skipped=skipped)
    assert repr(report) == (
        "OnceReport(problems=0, finished=0, skipped=3, closed=0, ignored=0, exit_code=0)"
    )
