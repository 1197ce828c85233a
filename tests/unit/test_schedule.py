"""APScheduler wiring: triggers fire exactly on runner.planning.slots' slots (asked of the
engine in runner.planning.cron); jobs follow plans; a fire serves what is due, one run at
a time."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from runner.core.clock import iso
from runner.core.errors import StoreError
from runner.core.states import RunState
from runner.defs.tasks import Task, load_task_file
from runner.dispatch.dispatcher import Finished
from runner.planning.jobs import Plan, next_fire_times, plan_of, save_plans
from runner.planning.schedule import Firing, SlotTrigger, TaskScheduler, trigger_for
from runner.planning.slots import latest_slot, next_slot
from runner.state.store import Store

if TYPE_CHECKING:
    from pathlib import Path

    from runner.state.records import RunRecord

UTC_TIME = "%Y-%m-%dT%H:%M:%S"


def at(text: str) -> datetime:
    """A UTC time from ``YYYY-MM-DDTHH:MM:SS[.fff]``."""
    whole, _, fraction = text.partition(".")
    moment = datetime.strptime(whole, UTC_TIME).replace(tzinfo=UTC)
    return moment + timedelta(milliseconds=int(fraction or 0))


def task_file(folder: Path, extra: str = "") -> Task:
    """``tick``: an echo task written to ``folder`` and loaded as the service would."""
    path = folder / "tick.yaml"
    path.write_text("tool: echo\nargs: {text: x}\n" + extra, encoding="utf-8")
    return load_task_file(path, folder, 4096)


@pytest.mark.parametrize("schedule", ["every 1s", "every 7s", "every 10m", "every 1h", "every 1d"])
@pytest.mark.parametrize(
    "now", ["2026-11-21T10:17:30.250", "2026-11-21T00:00:00", "2026-03-29T01:59:59.999"]
)
def test_every_fires_on_the_slots(schedule: str, now: str) -> None:
    trigger = trigger_for(schedule, "Europe/Berlin")
    assert isinstance(trigger, SlotTrigger)
    moment = at(now)
    first = trigger.get_next_fire_time(None, moment)
    latest = latest_slot(schedule, "UTC", moment)
    assert first == (latest if latest == moment else next_slot(schedule, "UTC", moment))
    following = trigger.get_next_fire_time(first, first)
    assert following == next_slot(schedule, "UTC", first)


def test_every_realigns_after_a_fire_at_an_odd_moment() -> None:
    trigger = trigger_for("every 10s", "UTC")
    catch_up = at("2026-11-21T10:00:03.700")  # a catch-up fired at once, off the grid
    assert trigger.get_next_fire_time(catch_up, catch_up) == at("2026-11-21T10:00:10")


@pytest.mark.parametrize(
    ("schedule", "tz"),
    [
        ("0 3 * * *", "Europe/Berlin"),
        ("0 9 * * 1-5", "UTC"),
        ("*/15 * * * *", "UTC"),
        ("30 2 * * *", "Europe/Berlin"),
        ("0 0 1 1 *", "America/New_York"),
        ("*/20 * * * *", "Europe/Berlin"),
        ("@daily", "America/Havana"),
    ],
)
@pytest.mark.parametrize("start", ["2026-03-27T10:17:30", "2026-10-24T23:40:00"])
def test_cron_fires_on_the_slots(schedule: str, tz: str, start: str) -> None:
    # Across Berlin's spring-forward and fall-back nights too.
    trigger = trigger_for(schedule, tz)
    moment = at(start)
    for _ in range(8):
        fire = trigger.get_next_fire_time(None, moment + timedelta(seconds=1))
        assert fire is not None
        assert fire == next_slot(schedule, tz, moment)
        assert latest_slot(schedule, tz, fire) == fire
        assert trigger.get_next_fire_time(fire, fire) == next_slot(schedule, tz, fire)
        moment = fire


def test_a_trigger_counts_the_fires_it_missed() -> None:
    # APScheduler asks for the fire after each missed one, with `now` later still.
    trigger = trigger_for("*/15 * * * *", "Europe/Berlin")
    fire = at("2026-10-25T00:30:00")  # 02:30 CEST
    missed = []
    while fire is not None and fire <= at("2026-10-25T02:00:00"):
        missed.append(fire)
        fire = trigger.get_next_fire_time(fire, at("2026-10-25T02:00:00"))
    assert len(missed) == 7  # 02:30, 02:45 CEST; 02:00 ... 02:45 CET; 03:00 CET
    assert str(trigger) == "slots[*/15 * * * *, Europe/Berlin]"


def test_plans_and_next_fire_times_for_status(tmp_path: Path) -> None:
    assert plan_of(task_file(tmp_path), "UTC") is None  # a one-off
    assert plan_of(task_file(tmp_path, "schedule: every 1s\nenabled: false\n"), "UTC") is None
    assert plan_of(task_file(tmp_path, "schedule: '0 3 * * *'\n"), "Asia/Tokyo") == Plan(
        "tick", "0 3 * * *", "Asia/Tokyo"
    )
    now = at("2026-11-21T10:17:30")
    with Store(tmp_path / "state.db") as store:
        assert next_fire_times(store, now) == []
        save_plans(store, [Plan("b", "every 10m", "UTC"), Plan("a", "0 3 * * *", "Asia/Tokyo")])
        b_row = {"task_id": "b", "schedule": "every 10m", "timezone": "UTC"}
        a_row = {"task_id": "a", "schedule": "0 3 * * *", "timezone": "Asia/Tokyo"}
        assert next_fire_times(store, now) == [
            b_row | {"next_fire": "2026-11-21T10:20:00.000Z"},
            a_row | {"next_fire": "2026-11-21T18:00:00.000Z"},
        ]
        # A plan saved by an older version whose schedule no longer validates.
        save_plans(store, [Plan("old", "0 0 30 2 *", "UTC")])
        assert next_fire_times(store, now) == [
            {"task_id": "old", "schedule": "0 0 30 2 *", "timezone": "UTC", "next_fire": None}
        ]


async def test_jobs_follow_plans_and_fire_one_instance_at_a_time() -> None:
    fired: list[str] = []
    running = 0
    most = 0

    async def fire(task_id: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        fired.append(task_id)
        await asyncio.sleep(0.3)
        running -= 1

    scheduler = TaskScheduler(fire=fire, misfire_grace=0)
    scheduler.start()
    try:
        hourly = Plan("slow", "every 1h", "UTC")
        assert scheduler.set(hourly)
        assert not scheduler.set(hourly)  # unchanged: not rescheduled
        assert scheduler.set(Plan("slow", "0 3 * * *", "UTC"))
        assert scheduler.next_fire("slow") is not None
        scheduler.fire_now("slow")
        await asyncio.sleep(0.05)
        scheduler.fire_now("slow")  # while the first still runs: skipped, not stacked
        await asyncio.sleep(0.4)
        assert fired == ["slow"]
        assert most == 1
        assert [p.task_id for p in scheduler.plans()] == ["slow"]
        assert scheduler.remove("slow")
        assert not scheduler.remove("slow")
        assert "slow" not in [plan.task_id for plan in scheduler.plans()]
    finally:
        scheduler.shutdown()
        await asyncio.sleep(0)


class FakeRuns:
    """What Firing needs of the service: due runs from a real store, a start that
    finishes each run in the given state."""

    def __init__(self, store: Store, finish_as: RunState = RunState.COMPLETED) -> None:
        self.store = store
        self.finish_as = finish_as
        self.started: list[str] = []
        self.slots = iter([iso(at("2026-11-21T10:00:00")), iso(at("2026-11-21T10:00:01"))])

    def due(self, task: Task) -> list[tuple[Task, RunRecord]]:
        slot = next(self.slots, None)
        if slot is None:
            return []
        return [(task, self.store.create_run(task.id, task.task_hash, max_attempts=1, slot=slot))]

    async def start(self, task: Task, run: RunRecord) -> Finished | None:
        self.started.append(run.slot or "")
        claimed = self.store.claim(run.run_id)
        assert claimed is not None
        if self.finish_as is RunState.COMPLETED:
            self.store.transition(run.run_id, RunState.EXECUTING)
        final = self.store.transition(run.run_id, self.finish_as)
        return Finished(task, final, None)


async def test_a_fire_serves_what_is_due_then_looks_once_more(tmp_path: Path) -> None:
    task = task_file(tmp_path, "schedule: every 1s\n")
    with Store(tmp_path / "state.db") as store:
        runs = FakeRuns(store)
        firing = Firing(lookup={task.id: task}.get, due=runs.due, start=runs.start, timezone="UTC")
        await firing.fire(task.id)
        assert runs.started == [iso(at("2026-11-21T10:00:00")), iso(at("2026-11-21T10:00:01"))]
        await firing.fire("unknown")  # deleted meanwhile: nothing
        firing.stopped = True
        runs.slots = iter([iso(at("2026-11-21T10:00:02"))])
        await firing.fire(task.id)  # shutting down: nothing
        assert len(runs.started) == 2


async def test_a_fire_stops_when_a_run_did_not_finish(tmp_path: Path) -> None:
    task = task_file(tmp_path, "schedule: every 1s\n")
    with Store(tmp_path / "state.db") as store:
        runs = FakeRuns(store, finish_as=RunState.WAITING)
        firing = Firing(lookup={task.id: task}.get, due=runs.due, start=runs.start, timezone="UTC")
        await firing.fire(task.id)
        assert len(runs.started) == 1


async def test_a_fire_logs_errors_instead_of_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task = task_file(tmp_path, "schedule: every 1s\n")

    def broken(_task: Task) -> list[tuple[Task, RunRecord]]:
        raise StoreError("state.db: state database is busy")

    async def never(_task: Task, _run: RunRecord) -> Finished | None:
        raise AssertionError("nothing should start")

    firing = Firing(lookup={task.id: task}.get, due=broken, start=never, timezone="UTC")
    with caplog.at_level(logging.ERROR):
        await firing.fire(task.id)
    assert "cannot start its scheduled run: state.db: state database is busy" in caplog.text
