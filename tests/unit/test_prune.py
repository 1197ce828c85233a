"""`omni prune --keep N`: which result files go, read no more than the choice needs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from runner.core.clock import iso
from runner.core.ids import new_run_id
from runner.core.states import RunState
from runner.state.store import Store
from tests.support.cli import run_omni

if TYPE_CHECKING:
    from pathlib import Path

T0 = "2026-11-20T00:00:00.000Z"


def run_id(run: int) -> str:
    return f"01K{run:023d}"


def plant(
    results: Path, task_id: str, run: int, state: str = "completed", **fields: object
) -> None:
    folder = results / task_id
    folder.mkdir(parents=True, exist_ok=True)
    data = {"task_id": task_id, "run_id": run_id(run), "task_hash": "h", "state": state}
    times = {"attempt": 1, "started_at": T0, "finished_at": T0, "duration_s": 0.1}
    (folder / f"{run_id(run)}.json").write_text(json.dumps(data | times | fields))
    (folder / f"{run_id(run)}.md").write_text(f"# {task_id}\n")


def test_prune_ranks_by_name_and_reads_only_what_could_go(tmp_path: Path) -> None:
    results = tmp_path / "results"
    plant(results, "busy", 7)  # the newest: completed, the proof its content ran
    # Second newest, kept by its name alone: never read, so never refused.
    (results / "busy" / f"{run_id(6)}.json").write_text("{not a result")
    plant(results, "busy", 5, "failed")
    plant(results, "busy", 4, slot="9999-01-01T00:00:00Z")  # refused: never pruned
    plant(results, "busy", 3)
    plant(results, "busy", 2, "waiting")  # an unfinished run is never pruned
    plant(results, "busy", 1)
    # No completed result among the newest two: the newest completed one stays too.
    for run, state in ((5, "failed"), (4, "failed"), (3, "completed"), (2, "completed")):
        plant(results, "repair/x", run, state)
    (results / "notes.json").write_text("{}")  # not a result file: left alone, unread
    done = run_omni(tmp_path, "prune", "--keep", "2", "--dry-run")
    assert done.returncode == 0, done.stderr
    gone = [("busy", 1), ("busy", 3), ("busy", 5), ("repair/x", 2)]
    assert done.stdout.splitlines() == [
        *(f"would remove results/{task}/{run_id(run)}.json" for task, run in gone),
        "would remove 4 result file(s), kept 7",
    ]
    warned = [line for line in done.stderr.splitlines() if "skipped" in line]
    assert len(warned) == 1
    assert f"result file busy/{run_id(4)}.json skipped: slot lies in the future" in warned[0]
    done = run_omni(tmp_path, "prune", "--keep", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == [
        f"results/{task}/{run_id(run)}.json" for task, run in gone
    ]
    left = sorted(p.relative_to(results).as_posix() for p in results.rglob("*.json"))
    assert left == [
        *(f"busy/{run_id(run)}.json" for run in (2, 4, 6, 7)),
        "notes.json",
        *(f"repair/x/{run_id(run)}.json" for run in (3, 4, 5)),
    ]
    assert not (results / "busy" / f"{run_id(1)}.md").exists()


def test_a_finished_run_the_state_file_holds_goes_by_its_row_unread(tmp_path: Path) -> None:
    results = tmp_path / "results"
    with Store(tmp_path / ".omni" / "state.db") as store:
        for run in range(1, 5):
            plant(results, "busy", run)
            store.create_run("busy", "h", max_attempts=1, run_id=run_id(run))
            store.claim(run_id(run), executor="builtin", tool="echo")
            store.transition(run_id(run), RunState.COMPLETED)
    # A file the row vouches for is not read: mangled, it goes all the same, unwarned.
    (results / "busy" / f"{run_id(2)}.json").write_text("{mangled")
    dry = run_omni(tmp_path, "prune", "--keep", "1", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert "skipped" not in dry.stderr
    gone = [f"results/busy/{run_id(run)}.json" for run in (1, 2, 3)]
    assert json.loads(dry.stdout) == {"removed": gone, "kept": 1, "rows_deleted": 0}
    done = run_omni(tmp_path, "prune", "--keep", "1", "--json")
    assert json.loads(done.stdout) == {"removed": gone, "kept": 1, "rows_deleted": 3}
    assert sorted(p.name for p in (results / "busy").iterdir()) == [
        f"{run_id(4)}.json",
        f"{run_id(4)}.md",
    ]


def test_a_pruned_runs_patch_goes_too_and_what_cannot_go_stays_with_a_warning(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    for run in range(1, 4):
        plant(results, "busy", run)
    # A model-driven run's patch beside its result: left behind, publish refused it
    # ("no result file beside it") on every later run.
    (results / "busy" / f"{run_id(1)}.patch").write_text("diff --git a/x b/x\n")
    # A folder where a companion file would be (anyone able to push the results branch
    # could make one): unlink raised, the prune stopped half-way with a traceback.
    (results / "busy" / f"{run_id(2)}.md").unlink()
    (results / "busy" / f"{run_id(2)}.md").mkdir()
    done = run_omni(tmp_path, "prune", "--keep", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout)["removed"] == [
        f"results/busy/{run_id(run)}.json" for run in (1, 2)
    ]
    assert f"prune: busy/{run_id(2)}.md left in place: " in done.stderr
    assert sorted(p.name for p in (results / "busy").iterdir()) == [
        f"{run_id(2)}.md",
        f"{run_id(3)}.json",
        f"{run_id(3)}.md",
    ]


def test_runs_of_today_and_yesterday_stay_so_pruning_never_lowers_todays_spend(
    tmp_path: Path,
) -> None:
    now = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)
    results = tmp_path / "results"
    made = {
        "old": now - timedelta(days=3),
        "yesterday": now - timedelta(days=1, hours=9),  # 2026-11-20 01:05
        "crossed": now - timedelta(hours=10, minutes=10),  # created 23:55, finished today
        "today-1": now - timedelta(hours=2),
        "today-2": now - timedelta(hours=1),
    }
    ids = {name: new_run_id(moment) for name, moment in made.items()}
    clock = [now]
    with Store(tmp_path / ".omni" / "state.db", clock=lambda: clock[0]) as store:
        for name, run in ids.items():
            clock[0] = made[name] + timedelta(minutes=10)  # when it finished
            store.create_run("paid", "h", max_attempts=1, run_id=run)
            store.claim(run, executor="builtin", tool="echo")
            store.transition(run, RunState.COMPLETED, cost_usd=1.0)
            (results / "paid").mkdir(parents=True, exist_ok=True)
            data = {"task_id": "paid", "run_id": run, "task_hash": "h", "state": "completed"}
            times = {"attempt": 1, "started_at": T0, "finished_at": T0, "duration_s": 0.1}
            (results / "paid" / f"{run}.json").write_text(json.dumps(data | times))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMNI_NOW": iso(now)}
    before = json.loads(run_omni(tmp_path, "status", "--json", env=env).stdout)
    assert before["spend_today_usd"] == 3.0  # crossed, today-1, today-2
    done = run_omni(tmp_path, "prune", "--keep", "1", "--json", env=env)
    assert done.returncode == 0, done.stderr
    # Only the run older than yesterday goes; --keep 1 would have left one.
    assert json.loads(done.stdout)["removed"] == [f"results/paid/{ids['old']}.json"]
    after = json.loads(run_omni(tmp_path, "status", "--json", env=env).stdout)
    assert after["spend_today_usd"] == before["spend_today_usd"]
