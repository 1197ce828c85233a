"""Due-ness with no state database: from result files (the results branch) and now."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from runner.core.clock import iso, parse_time
from runner.core.errors import ConfigError, StoreError
from runner.core.ids import new_run_id
from runner.core.redaction import Redactor
from runner.core.states import RunState
from runner.defs.tasks import Task, TaskSpec, task_hash
from runner.planning.dueness import (
    Due,
    DueRule,
    History,
    clock_from,
    decide,
    history_for,
    history_from_runs,
)
from runner.planning.plan import Selection, close_orphans, orphans, plan, preview
from runner.state import results as result_files
from runner.state.results import RunResult
from runner.state.store import Store


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


T_RAN = "2026-11-20T00:00:00Z"


def make_task(task_id: str = "t", **fields: object) -> Task:
    spec = TaskSpec.model_validate({"tool": "echo", **fields})
    return Task(task_id, Path(f"tasks/{task_id}.yaml"), spec, task_hash(spec, task_id))


def write_result(
    results: Path, task: Task, *, slot: str | None, state: str = "completed", run: int = 1
) -> None:
    folder = results.joinpath(*task.id.split("/"))
    folder.mkdir(parents=True, exist_ok=True)
    # Named as a runner names it: created at (just after) the slot it serves.
    run_id = new_run_id(parse_time(slot or T_RAN) + timedelta(seconds=run))
    data = {"task_id": task.id, "run_id": run_id, "task_hash": task.task_hash, "slot": slot}
    times = {"started_at": slot or T_RAN, "finished_at": slot or T_RAN, "duration_s": 0.1}
    (folder / f"{run_id}.json").write_text(
        json.dumps(data | times | {"state": state, "attempt": 1})
    )


# (schedule, timezone, last served slot (UTC ISO) or None, now (UTC), verdict, slot)
CASES = [
    # On time: the 03:00 slot, five minutes late, runs once.
    ("0 3 * * *", None, "2026-11-20T03:00", "2026-11-21T03:05", Due.RUN, "2026-11-21T03:00"),
    # Early: the next slot has not come; the served one is not repeated.
    ("0 3 * * *", None, "2026-11-21T03:00", "2026-11-22T02:59", Due.SERVED, None),
    # Very late (the CI cron fired six hours late): today's slot still runs, once.
    ("0 3 * * *", None, "2026-11-20T03:00", "2026-11-21T09:00", Due.RUN, "2026-11-21T03:00"),
    # Missed slots (three days down): only the latest runs.
    ("0 3 * * *", None, "2026-11-18T03:00", "2026-11-21T04:00", Due.RUN, "2026-11-21T03:00"),
    ("every 1h", None, "2026-11-21T07:00", "2026-11-21T10:59", Due.RUN, "2026-11-21T10:00"),
    ("every 1h", None, "2026-11-21T10:00", "2026-11-21T10:59", Due.SERVED, None),
    ("*/15 * * * *", None, "2026-11-21T10:00", "2026-11-21T10:15", Due.RUN, "2026-11-21T10:15"),
    # Never ran: within misfire_grace of its latest slot it runs, past it it waits.
    ("0 3 * * *", None, None, "2026-11-21T03:30", Due.RUN, "2026-11-21T03:00"),
    ("0 3 * * *", None, None, "2026-11-21T12:00", Due.NOT_YET, None),
    # Time zones: 03:00 Berlin is 02:00 UTC in winter, 01:00 UTC in summer.
    (
        "0 3 * * *",
        "Europe/Berlin",
        "2026-11-20T02:00",
        "2026-11-21T02:00",
        Due.RUN,
        "2026-11-21T02:00",
    ),
    ("0 3 * * *", "Europe/Berlin", "2026-11-21T02:00", "2026-11-21T02:30", Due.SERVED, None),
    (
        "0 3 * * *",
        "Europe/Berlin",
        "2026-06-30T01:00",
        "2026-07-01T01:00",
        Due.RUN,
        "2026-07-01T01:00",
    ),
    (
        "0 9 * * 1-5",
        "America/New_York",
        "2026-11-20T14:00",
        "2026-11-23T14:10",
        Due.RUN,
        "2026-11-23T14:00",
    ),
    # DST spring forward (Berlin, 2026-03-29): 02:30 does not exist; the day runs once, at
    # the jump (03:00 CEST), as cron runs it.
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T01:30",
        "2026-03-29T06:00",
        Due.RUN,
        "2026-03-29T01:00",
    ),
    ("30 2 * * *", "Europe/Berlin", "2026-03-29T01:00", "2026-03-29T23:00", Due.SERVED, None),
    # ... and a slot an earlier version served later that day (03:30 CEST) is not run again.
    ("30 2 * * *", "Europe/Berlin", "2026-03-29T01:30", "2026-03-29T23:00", Due.SERVED, None),
    # Havana springs forward at midnight: the day's midnight run is at 01:00 CDT.
    (
        "0 0 * * *",
        "America/Havana",
        "2026-03-07T05:00",
        "2026-03-08T05:10",
        Due.RUN,
        "2026-03-08T05:00",
    ),
    # DST fall back (2026-10-25): 02:30 happens twice; it is one slot, served once.
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T00:30",
        "2026-10-25T00:40",
        Due.RUN,
        "2026-10-25T00:30",
    ),
    ("30 2 * * *", "Europe/Berlin", "2026-10-25T00:30", "2026-10-25T01:40", Due.SERVED, None),
    ("30 2 * * *", "Europe/Berlin", "2026-10-25T00:30", "2026-10-25T12:00", Due.SERVED, None),
    # ... but a wildcard job runs in both passes: 02:15 CEST, then 02:15 CET.
    (
        "*/15 * * * *",
        "Europe/Berlin",
        "2026-10-25T00:15",
        "2026-10-25T01:20",
        Due.RUN,
        "2026-10-25T01:15",
    ),
    # @daily and Debian's weekdays: Friday 2026-03-06 to Monday in New York, across the
    # spring-forward Sunday.
    ("@daily", None, "2026-11-20T00:00", "2026-11-21T00:30", Due.RUN, "2026-11-21T00:00"),
    (
        "0 0 * * 1-5",
        "America/New_York",
        "2026-03-06T05:00",
        "2026-03-09T04:30",
        Due.RUN,
        "2026-03-09T04:00",
    ),
    # An edited schedule: served 03:00 under "0 3"; now "0 10": runs at 10:00, not before.
    ("0 10 * * *", None, "2026-11-21T03:00", "2026-11-21T09:00", Due.SERVED, None),
    ("0 10 * * *", None, "2026-11-21T03:00", "2026-11-21T10:05", Due.RUN, "2026-11-21T10:00"),
]


@pytest.mark.parametrize(("schedule", "tz", "served", "now", "verdict", "slot"), CASES)
def test_scheduled_due_ness_from_result_files(
    tmp_path: Path,
    schedule: str,
    tz: str | None,
    served: str | None,
    now: str,
    verdict: Due,
    slot: str | None,
) -> None:
    task = make_task(schedule=schedule, timezone=tz)
    if served is not None:
        # Served under some earlier content: the slot counts whatever the hash.
        old = make_task(schedule="every 5m")
        write_result(tmp_path, old, slot=iso(at(served)))
    rule = DueRule(now=at(now), results=tmp_path)
    decision = decide(task, history_for(task, History(), rule), rule)
    assert decision.verdict is verdict, decision.reason
    assert decision.slot == (at(slot) if slot else None)


def test_a_failed_slot_is_served_but_a_waiting_one_is_not(tmp_path: Path) -> None:
    task = make_task(schedule="every 1h")
    rule = DueRule(now=at("2026-11-21T10:30"), results=tmp_path)
    write_result(tmp_path, task, slot="2026-11-21T10:00:00.000Z", state="waiting", run=1)
    assert decide(task, history_for(task, History(), rule), rule).verdict is Due.RUN
    write_result(tmp_path, task, slot="2026-11-21T10:00:00.000Z", state="failed", run=2)
    decision = decide(task, history_for(task, History(), rule), rule)
    assert decision.verdict is Due.SERVED  # never twice, even after a failure


def test_one_offs_run_once_per_content(tmp_path: Path) -> None:
    rule = DueRule(now=at("2026-11-21T10:00"), results=tmp_path)
    first = make_task(args={"text": "v1"})
    edited = make_task(args={"text": "v2"})
    assert decide(first, history_for(first, History(), rule), rule).verdict is Due.RUN
    write_result(tmp_path, first, slot=None, run=1)
    assert decide(first, history_for(first, History(), rule), rule).verdict is Due.DONE
    # An edited one-off has a new hash: it runs; edited back, it is done again.
    assert decide(edited, history_for(edited, History(), rule), rule).verdict is Due.RUN
    assert decide(first, history_for(first, History(), rule), rule).verdict is Due.DONE


def test_a_failed_one_off_waits_for_an_edit(tmp_path: Path) -> None:
    rule = DueRule(now=at("2026-11-21T10:00"), results=tmp_path)
    broken, fixed = make_task(args={"text": "v1"}), make_task(args={"text": "v2"})
    write_result(tmp_path, broken, slot=None, state="failed", run=1)
    decision = decide(broken, history_for(broken, History(), rule), rule)
    assert decision.verdict is Due.FAILED
    assert "edit the task or use --force" in decision.reason
    assert decide(fixed, history_for(fixed, History(), rule), rule).verdict is Due.RUN


def test_result_files_of_other_tasks_and_junk_are_ignored(tmp_path: Path) -> None:
    parent, child = make_task("a"), make_task("a/b")
    write_result(tmp_path, child, slot=None)  # results/a/b/... lies inside results/a/
    (tmp_path / "a" / "broken.json").write_text("{not json")
    (tmp_path / "a" / "list.json").write_text("[]")
    rule = DueRule(now=at("2026-11-21T10:00"), results=tmp_path)
    assert history_for(parent, History(), rule) == History()
    assert decide(parent, history_for(parent, History(), rule), rule).verdict is Due.RUN
    assert child.task_hash in history_for(child, History(), rule).completed_hashes
    assert decide(child, history_for(child, History(), rule), rule).verdict is Due.DONE
    missing = DueRule(now=rule.now, results=tmp_path / "missing")
    assert history_for(parent, History(), missing) == History()
    assert history_for(parent, History(), DueRule(now=rule.now, results=None)) == History()


@pytest.mark.parametrize(
    ("from_file", "newest"),
    [
        ("2026-11-21T07:00:00.000Z", "2026-11-21T08:00"),  # the store knows more
        ("2026-11-21T09:00:00.000Z", "2026-11-21T09:00"),  # a file knows more
    ],
)
def test_store_and_files_merge_to_the_newest_slot(
    tmp_path: Path, from_file: str, newest: str
) -> None:
    task = make_task(schedule="every 1h")
    rule = DueRule(now=at("2026-11-21T10:30"), results=tmp_path)
    with Store(tmp_path / "state.db") as store:
        run = store.create_run(
            task.id, task.task_hash, max_attempts=1, slot="2026-11-21T08:00:00.000Z"
        )
        store.claim(run.run_id)
        store.transition(run.run_id, RunState.EXECUTING)
        store.transition(run.run_id, RunState.COMPLETED)
        # An unfinished run does not count as served: run --once takes it up again.
        store.create_run(task.id, task.task_hash, max_attempts=1, slot="2026-11-21T10:00:00.000Z")
        from_store = history_from_runs(store.task_runs([task]).get(task.id), task)
    write_result(tmp_path, task, slot=from_file)
    merged = history_for(task, from_store, rule)
    assert merged.last_slot == at(newest)
    assert merged.completed_hashes == {task.task_hash}
    decision = decide(task, merged, rule)
    assert (decision.verdict, decision.slot) == (Due.RUN, at("2026-11-21T10:00"))
    write_result(tmp_path, task, slot="2026-11-21T10:00:00.000Z", run=2)
    assert decide(task, history_for(task, from_store, rule), rule).verdict is Due.SERVED


def test_plan_serves_the_due_slot_and_reuses_an_unfinished_run(tmp_path: Path) -> None:
    hourly = make_task("hourly", schedule="every 1h")
    once = make_task("once")
    write_result(tmp_path / "results", once, slot=None)  # done on another machine
    rule = DueRule(now=at("2026-11-21T10:20"), results=tmp_path / "results")
    with Store(tmp_path / "state.db") as store:
        runnable, skipped = plan([hourly, once], store, Selection(), rule)
        assert [(t.id, r.slot) for t, r in runnable] == [("hourly", "2026-11-21T10:00:00.000Z")]
        assert [(s.task_id, s.state) for s in skipped] == [("once", RunState.COMPLETED)]
        # Interrupted before it ran: the same run serves the slot next time.
        again, _ = plan([hourly], store, Selection(), rule)
        assert again[0][1].run_id == runnable[0][1].run_id
        forced, _ = plan([once], store, Selection(force=True), rule)
        assert forced[0][1].slot is None


def test_a_slot_is_planned_once_whoever_plans_it_and_whatever_the_content(
    tmp_path: Path,
) -> None:
    hourly = make_task("hourly", schedule="every 1h")
    edited = make_task("hourly", schedule="every 1h", args={"text": "v2"})
    rule = DueRule(now=at("2026-11-21T10:20"), results=None)
    with Store(tmp_path / "state.db") as first, Store(tmp_path / "state.db") as second:
        mine, _ = plan([hourly], first, Selection(), rule)
        theirs, _ = plan([hourly], second, Selection(), rule)  # another planner, same slot
        assert theirs[0][1].run_id == mine[0][1].run_id
        # The file changed while the slot's run is still open: the slot is not run twice.
        runnable, skipped = plan([edited], second, Selection(), rule)
        assert runnable == []
        run_id = mine[0][1].run_id
        assert [s.reason for s in skipped] == [
            f"slot 2026-11-21T10:00:00.000Z is served by run {run_id} of an earlier content"
        ]
        assert len(first.runs(task_id="hourly")) == 1


def test_a_pass_creates_its_new_runs_all_or_none(tmp_path: Path) -> None:
    # One transaction for a pass's new runs: a database that refuses one of them (here a
    # trigger) leaves none of them half-made, and a second pass creates them all, in the
    # order of the tasks.
    tasks = [make_task(name) for name in ("a", "b", "c")]
    rule = DueRule(now=at("2026-11-21T10:20"), results=None)
    with Store(tmp_path / "state.db") as store:
        with sqlite3.connect(tmp_path / "state.db") as db:
            db.execute(
                "CREATE TRIGGER refuse_b BEFORE INSERT ON runs WHEN NEW.task_id = 'b'"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        with pytest.raises(StoreError):
            plan(tasks, store, Selection(), rule)
        assert store.runs() == []
        with sqlite3.connect(tmp_path / "state.db") as db:
            db.execute("DROP TRIGGER refuse_b")
        runnable, skipped = plan(tasks, store, Selection(), rule)
        assert skipped == []
        assert [(t.id, r.state, r.seq) for t, r in runnable] == [
            ("a", RunState.IDLE, 1),
            ("b", RunState.IDLE, 2),
            ("c", RunState.IDLE, 3),
        ]


def test_a_bare_force_leaves_a_paused_task_paused(tmp_path: Path) -> None:
    paused = make_task("paused", enabled=False)
    with Store(tmp_path / "state.db") as store:
        runnable, skipped = plan([paused], store, Selection(force=True))
        assert runnable == []
        assert [(s.task_id, s.reason) for s in skipped] == [("paused", "disabled (enabled: false)")]
        named, _ = plan([paused], store, Selection(task_id="paused", force=True))
        assert [t.id for t, _ in named] == ["paused"]  # named with --task: it runs


def ci_run(root: Path, tasks: list[Task], omni_now: str) -> list[str]:
    """One scheduled CI run, as the workflow does it: a fresh machine (a new state file),
    the results branch checked out in ``root/results``, the clock from ``OMNI_NOW``. Each
    due run completes and leaves its result file; returns ``task@slot`` of what ran."""
    now = clock_from({"OMNI_NOW": omni_now})()
    rule = DueRule(now=now, results=root / "results", timezone="UTC", misfire_grace=3600)
    with Store(root / f"state-{omni_now}.db") as store:
        runnable, _ = plan(tasks, store, Selection(), rule)
    ran = []
    for task, run in runnable:
        done = RunResult(
            task_id=task.id,
            run_id=run.run_id,
            task_hash=task.task_hash,
            slot=run.slot,
            state=RunState.COMPLETED,
            attempt=1,
            started_at=iso(now),
            finished_at=iso(now),
            duration_s=0.0,
        )
        result_files.write_result(root / "results", done, Redactor([]))
        ran.append(f"{task.id}@{run.slot}")
    return ran


def ci_night(root: Path, tasks: list[Task], start: str, hours: int) -> dict[str, list[str]]:
    """CI every 15 minutes (at 5, 20, 35, 50 past) for ``hours``: each task's slots served,
    in the task's local time."""
    ran: dict[str, list[str]] = {task.id: [] for task in tasks}
    zones = {task.id: ZoneInfo(task.spec.timezone or "UTC") for task in tasks}
    moment = at(start) + timedelta(minutes=5)
    for _ in range(hours * 4):
        for item in ci_run(root, tasks, iso(moment)):
            task_id, _, slot = item.partition("@")
            local = parse_time(slot).astimezone(zones[task_id])
            ran[task_id].append(local.strftime("%d %H:%M%z"))
        moment += timedelta(minutes=15)
    return ran


def test_ci_across_a_spring_forward_night_runs_what_cron_runs(tmp_path: Path) -> None:
    tasks = [
        make_task("at-0230", schedule="30 2 * * *", timezone="Europe/Berlin"),
        make_task("hours-1-5", schedule="30 1-5 * * *", timezone="Europe/Berlin"),
        make_task("even-hours", schedule="0 */2 * * *", timezone="Europe/Berlin"),
        make_task("quarter", schedule="*/15 * * * *", timezone="Europe/Berlin"),
    ]
    # From the evening before (a new task waits for its first slot) through the night.
    ran = ci_night(tmp_path, tasks, "2026-03-28T16:00", 12)
    assert ran["at-0230"] == ["29 03:00+0200"]  # 02:30 was skipped: it runs at the jump
    assert ran["hours-1-5"] == [
        "29 01:30+0100",
        "29 03:00+0200",  # 02:30, at the jump
        "29 03:30+0200",
        "29 04:30+0200",
        "29 05:30+0200",
    ]
    # 02:00 does not exist; no run at 03:00 for it.
    assert ran["even-hours"] == [
        "28 18:00+0100",
        "28 20:00+0100",
        "28 22:00+0100",
        "29 00:00+0100",
        "29 04:00+0200",
    ]
    # Every real quarter hour, none lost, none twice.
    assert len(ran["quarter"]) == len(set(ran["quarter"])) == 12 * 4


def test_ci_across_a_fall_back_night_runs_what_cron_runs(tmp_path: Path) -> None:
    tasks = [
        make_task("at-0230", schedule="30 2 * * *", timezone="Europe/Berlin"),
        make_task("hourly", schedule="0 * * * *", timezone="Europe/Berlin"),
        make_task("troll", schedule="*/30 * * * *", timezone="Antarctica/Troll"),
    ]
    ran = ci_night(tmp_path, tasks, "2026-10-24T16:00", 12)
    assert ran["at-0230"] == ["25 02:30+0200"]  # once, in the first pass
    # A wildcard job runs in both passes of the repeated hour.
    assert ran["hourly"][-6:] == [
        "25 00:00+0200",
        "25 01:00+0200",
        "25 02:00+0200",
        "25 02:00+0100",
        "25 03:00+0100",
        "25 04:00+0100",
    ]
    # Troll repeats two hours (03:00 +02 -> 01:00 +00): every half hour of both passes.
    assert len(ran["troll"]) == len(set(ran["troll"])) == 12 * 2
    assert ran["troll"][ran["troll"].index("25 02:30+0200") + 1] == "25 01:00+0000"


def test_omni_now_sets_the_clock() -> None:
    clock = clock_from({"OMNI_NOW": "2026-11-21T10:00:00Z"})
    first = clock()
    assert at("2026-11-21T10:00") <= first < at("2026-11-21T10:00") + timedelta(seconds=5)
    assert clock() >= first
    assert clock_from({"OMNI_NOW": "2026-11-21T10:00"})().tzinfo is not None  # naive = UTC
    assert clock_from({})().tzinfo is not None
    with pytest.raises(ConfigError, match="OMNI_NOW"):
        clock_from({"OMNI_NOW": "yesterday"})


# --- state hygiene (issue 15) ------------------------------------------------------------


def waits(_task: Task) -> str:
    return "prompt task: waits (idle) until a model is configured"


def test_force_reuses_the_open_run_of_a_waiting_task(tmp_path: Path) -> None:
    task = make_task("think")
    rule = DueRule(now=at("2026-11-21T10:20"), results=tmp_path / "results")
    with Store(tmp_path / "state.db") as store:
        for _ in range(3):
            plan([task], store, Selection(task_id="think", force=True), rule, waits_for=waits)
        assert [(r.state, r.note) for r in store.runs()] == [
            (RunState.IDLE, "prompt task: waits (idle) until a model is configured")
        ]


def test_a_note_is_cleared_when_the_run_moves_on(tmp_path: Path) -> None:
    task = make_task("think")
    rule = DueRule(now=at("2026-11-21T10:20"), results=tmp_path / "results")
    with Store(tmp_path / "state.db") as store:
        plan([task], store, Selection(), rule, waits_for=waits)
        [runnable], _ = plan([task], store, Selection(), rule)  # a model is configured now
        claimed = store.claim(runnable[1])
        assert claimed is not None
        assert claimed.note is None
        done = store.transition(claimed, RunState.EXECUTING)
        assert store.transition(done, RunState.COMPLETED).note is None


def test_runs_of_a_task_whose_file_is_gone_are_closed_skipped(tmp_path: Path) -> None:
    kept = make_task("kept")
    gone_file = tmp_path / "tasks" / "gone.yaml"
    gone_file.parent.mkdir()
    gone_file.write_text("tool: echo\n")
    gone = Task("gone", gone_file, kept.spec, task_hash(kept.spec, "gone"))
    rule = DueRule(now=at("2026-11-21T10:20"), results=tmp_path / "results")
    with Store(tmp_path / "state.db") as store:
        plan([kept, gone], store, Selection(), rule)
        assert orphans([kept, gone], store) == []
        gone_file.unlink()
        found = orphans([kept], store)
        assert len(found) == 1
        orphan = found[0]
        assert orphan.reason == f"task file {gone_file} is gone"
        closed_now = close_orphans([orphan], store)
        assert len(closed_now) == 1
        closed = closed_now[0]
        assert (closed.task_id, closed.state, closed.note) == (
            "gone",
            RunState.SKIPPED,
            f"task file {gone_file} is gone",
        )
        assert store.events(closed.run_id)[-1]["detail"] == f"task file {gone_file} is gone"
        assert orphans([kept], store) == []  # closed once
        assert [r.state for r in store.runs(task_id="kept")] == [RunState.IDLE]


def test_an_orphan_another_runner_claimed_meanwhile_is_left_to_it(tmp_path: Path) -> None:
    gone_file = tmp_path / "tasks" / "gone.yaml"
    gone_file.parent.mkdir()
    gone_file.write_text("tool: echo\n")
    gone = Task("gone", gone_file, make_task().spec, "h")
    rule = DueRule(now=at("2026-11-21T10:20"), results=tmp_path / "results")
    with Store(tmp_path / "state.db") as store, Store(tmp_path / "state.db") as other:
        plan([gone], store, Selection(), rule)
        gone_file.unlink()
        found = orphans([], store)
        assert len(found) == 1
        orphan = found[0]
        claimed = other.claim(orphan.run.run_id)  # e.g. an instance still holding the file
        assert claimed is not None
        assert close_orphans([orphan], store) == []
        assert store.get_run(orphan.run.run_id) == claimed


def test_an_invalid_but_present_task_file_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "tasks" / "broken.yaml"
    path.parent.mkdir()
    path.write_text("tool: echo\n")
    task = Task("broken", path, make_task().spec, "h")
    rule = DueRule(now=at("2026-11-21T10:20"), results=tmp_path / "results")
    with Store(tmp_path / "state.db") as store:
        plan([task], store, Selection(), rule)
        path.write_text("tool: [echo\n")  # invalid now: no task loads from it
        assert orphans([], store) == []


def test_preview_writes_nothing(tmp_path: Path) -> None:
    task = make_task("once")
    rule = DueRule(now=at("2026-11-21T10:20"), results=tmp_path / "results")
    due, skipped = preview([task], None, Selection(), rule)
    assert [(p.task.id, p.reason) for p in due] == [("once", "new or changed content")]
    assert skipped == []
    assert list(tmp_path.iterdir()) == []


def _timed_result(results: Path, task: Task, at_: str, *, content: str | None = None) -> str:
    """A completed result file whose run id says it was created at ``at_`` (as omni's
    own do); returns its name."""
    run_id = new_run_id(at(at_))
    data = {"task_id": task.id, "run_id": run_id, "task_hash": content or task.task_hash}
    times = {"started_at": T_RAN, "finished_at": T_RAN, "duration_s": 0.1, "attempt": 1}
    folder = results.joinpath(*task.id.split("/"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run_id}.json").write_text(json.dumps(data | times | {"state": "completed"}))
    return f"{run_id}.json"


def test_a_pass_reads_only_the_result_files_that_can_change_a_verdict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = tmp_path / "results"
    rule = DueRule(now=at("2026-11-21T10:30"), results=results)
    done, hourly = make_task("done"), make_task("hourly", schedule="every 1h")
    # Older than what decides each verdict: a broken file nobody needs to read.
    for task in (done, hourly):
        (results / task.id).mkdir(parents=True)
        (results / task.id / f"{new_run_id(at('2026-11-19T00:00'))}.json").write_text("{bad")
    _timed_result(results, done, "2026-11-20T00:00")  # its current content completed
    _timed_result(results, done, "2026-11-20T01:00", content="an-older-edit")  # newer, other
    with Store(tmp_path / "state.db") as store:
        run = store.create_run(
            hourly.id, hourly.task_hash, max_attempts=1, slot="2026-11-21T10:00:00.000Z"
        )
        store.claim(run.run_id)
        store.transition(run.run_id, RunState.EXECUTING)
        store.transition(run.run_id, RunState.COMPLETED)
        with caplog.at_level("WARNING"):
            due, skipped = preview([done, hourly], store, Selection(), rule)
            alone, _ = preview([done], None, Selection(), rule)  # no state file: files only
    assert due == alone == []
    assert [(s.task_id, s.state) for s in skipped] == [
        ("done", RunState.COMPLETED),
        ("hourly", None),
    ]
    assert "slot 2026-11-21T10:00:00.000Z ran" in skipped[1].reason
    assert [r.getMessage() for r in caplog.records] == []  # the broken files were not read
