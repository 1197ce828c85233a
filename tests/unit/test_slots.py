"""The slot rule shared by service mode and CI: latest slot, coalescing, grace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from runner.planning.slots import due_slot, latest_slot, next_slot


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "tz", "now", "expected"),
    [
        ("every 10m", "UTC", "2026-11-21T10:17:30", "2026-11-21T10:10:00"),
        ("every 10m", "UTC", "2026-11-21T10:20:00", "2026-11-21T10:20:00"),
        ("every 1h", "UTC", "2026-11-21T10:59:59", "2026-11-21T10:00:00"),
        ("0 3 * * *", "UTC", "2026-11-21T10:00:00", "2026-11-21T03:00:00"),
        ("0 3 * * *", "UTC", "2026-11-21T02:59:00", "2026-11-20T03:00:00"),
        # 03:00 in Berlin is 02:00 UTC in winter.
        ("0 3 * * *", "Europe/Berlin", "2026-11-21T10:00:00", "2026-11-21T02:00:00"),
        # Summer time: 03:00 in Berlin is 01:00 UTC.
        ("0 3 * * *", "Europe/Berlin", "2026-07-01T10:00:00", "2026-07-01T01:00:00"),
        # Crontab weekdays: 1-5 is Monday to Friday; 2026-11-21 is a Saturday.
        ("0 9 * * 1-5", "UTC", "2026-11-21T12:00:00", "2026-11-20T09:00:00"),
        ("0 0 1 1 *", "UTC", "2026-11-21T12:00:00", "2026-01-01T00:00:00"),
        ("*/15 * * * *", "UTC", "2026-11-21T10:44:59", "2026-11-21T10:30:00"),
    ],
)
def test_latest_slot(schedule: str, tz: str, now: str, expected: str) -> None:
    assert latest_slot(schedule, tz, at(now)) == at(expected)


def test_dst_spring_forward_gap_runs_at_the_jump() -> None:
    # 2026-03-29 02:30 does not exist in Berlin; the day's run is at the jump, 03:00 CEST.
    slot = latest_slot("30 2 * * *", "Europe/Berlin", at("2026-03-29T12:00:00"))
    assert slot == at("2026-03-29T01:00:00")


@pytest.mark.parametrize(
    ("schedule", "step", "tz", "start"),
    [
        ("*/15 * * * *", 15, "Europe/Berlin", "2026-10-24T23:00:00"),  # 03:00 CEST -> 02:00 CET
        ("*/30 * * * *", 30, "America/New_York", "2026-11-01T04:00:00"),  # 02:00 EDT -> 01:00 EST
        ("0 * * * *", 60, "Europe/Berlin", "2026-10-24T23:00:00"),
    ],
)
def test_a_fall_back_night_serves_a_wildcard_job_in_both_passes(
    schedule: str, step: int, tz: str, start: str
) -> None:
    # A runner waking every 5 minutes through the night, as CI or the service would.
    served: list[datetime] = []
    now = at(start)
    while now < at(start) + timedelta(hours=5):
        slot = due_slot(schedule, tz, now, served[-1] if served else None, 600)
        if slot is not None:
            served.append(slot)
        now += timedelta(minutes=5)
    # Five hours of real time, a slot every step, none skipped, none twice; the
    # repeated hour's wall times are served in both passes, as cron runs them.
    assert len(served) == len(set(served)) == 5 * 60 // step
    assert {b - a for a, b in pairwise(served)} == {timedelta(minutes=step)}
    walls = [s.astimezone(ZoneInfo(tz)).strftime("%H:%M") for s in served]
    assert len(set(walls)) == 4 * 60 // step


def test_a_fall_back_night_serves_a_fixed_time_job_once() -> None:
    served: list[datetime] = []
    now = at("2026-10-24T22:00:00")
    while now < at("2026-10-25T04:00:00"):
        slot = due_slot("30 2 * * *", "Europe/Berlin", now, served[-1] if served else None, 600)
        if slot is not None:
            served.append(slot)
        now += timedelta(minutes=5)
    assert served == [at("2026-10-25T00:30:00")]  # 02:30 CEST, the first pass


def test_next_slot() -> None:
    assert next_slot("every 10m", "UTC", at("2026-11-21T10:10:00")) == at("2026-11-21T10:20:00")
    assert next_slot("0 3 * * *", "UTC", at("2026-11-21T03:00:00")) == at("2026-11-22T03:00:00")


def test_due_once_per_slot() -> None:
    now = at("2026-11-21T03:05:00")
    slot = due_slot("0 3 * * *", "UTC", now, None, 3600)
    assert slot == at("2026-11-21T03:00:00")
    assert due_slot("0 3 * * *", "UTC", now, slot, 3600) is None


def test_missed_slots_coalesce_into_the_latest_however_late() -> None:
    served = at("2026-11-18T03:00:00")
    now = at("2026-11-21T09:00:00")  # three days down, six hours past today's slot
    assert due_slot("0 3 * * *", "UTC", now, served, 3600) == at("2026-11-21T03:00:00")


def test_a_new_task_waits_for_its_next_slot_unless_within_grace() -> None:
    assert due_slot("0 3 * * *", "UTC", at("2026-11-21T12:00:00"), None, 3600) is None
    assert due_slot("0 3 * * *", "UTC", at("2026-11-21T03:30:00"), None, 3600) is not None


def test_edited_schedule_uses_its_own_latest_slot() -> None:
    served = at("2026-11-21T03:00:00")  # served under the old "0 3 * * *"
    now = at("2026-11-21T10:05:00")
    assert due_slot("0 10 * * *", "UTC", now, served, 3600) == at("2026-11-21T10:00:00")
    assert due_slot("0 10 * * *", "UTC", now + timedelta(minutes=1), now, 3600) is None
