"""Schedule slots: when a scheduled task was last due, and whether it is due now.

One rule, used by service mode at start-up and by ``run --once`` in CI (DESIGN §4):

* a task's *latest slot* is its most recent fire time at or before ``now``;
* it is due when that slot has not been served yet (no run with that ``slot``);
* missed slots are coalesced: after downtime only the latest one runs, once;
* a task that has never been served runs its latest slot only when that slot lies
  within ``schedule.misfire_grace`` of now, so committing a daily 03:00 task at noon
  does not run it at once; a task that has run before always catches up its latest
  missed slot, however late the runner wakes (a delayed CI cron never skips a day).

``every N`` schedules fire on multiples of N since the Unix epoch (UTC), so every
machine agrees on the slots without sharing state. At a DST fall-back the hour that
repeats is served once: a wall time that occurs twice is one slot, its first occurrence
(so ``30 2 * * *`` runs once that night, as cron does).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from runner.defs.tasks import cron_trigger, every_seconds

# How far back to look for a cron's latest fire time, widening until one is found.
_WINDOWS = (
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=8),
    timedelta(days=32),
    timedelta(days=367),
    timedelta(days=4 * 366 + 1),
)


# A repeated hour holds at most 60 minute-resolution fire times to skip.
_MAX_REPEATS = 62


def latest_slot(schedule: str, timezone: str, now: datetime) -> datetime | None:
    """The most recent fire time at or before ``now`` (UTC), or ``None`` if none in 4 years."""
    now = now.astimezone(UTC)
    interval = every_seconds(schedule)
    if interval is not None:
        epoch = int(now.timestamp())
        return datetime.fromtimestamp(epoch - epoch % interval, UTC)
    trigger = cron_trigger(schedule, timezone)
    zone = ZoneInfo(timezone)
    for window in _WINDOWS:
        fire = _fire_after(trigger, now - window)
        last = None
        while fire is not None and fire <= now:
            last = fire
            fire = _fire_after(trigger, fire)
        if last is not None:
            return _first_occurrence(last, zone)
    return None


def next_slot(schedule: str, timezone: str, now: datetime) -> datetime | None:
    """The first fire time strictly after ``now`` (UTC)."""
    now = now.astimezone(UTC)
    interval = every_seconds(schedule)
    if interval is not None:
        epoch = int(now.timestamp())
        return datetime.fromtimestamp(epoch - epoch % interval + interval, UTC)
    trigger = cron_trigger(schedule, timezone)
    return _fire_after(trigger, now, skip_repeats_in=ZoneInfo(timezone))


def _is_repeat(fire: datetime, zone: ZoneInfo) -> bool:
    """True for the second occurrence of a wall time repeated at a DST fall-back."""
    local = fire.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def _first_occurrence(fire: datetime, zone: ZoneInfo) -> datetime:
    """``fire`` in UTC, moved to the first occurrence of its wall time if repeated."""
    if _is_repeat(fire, zone):
        return fire.astimezone(zone).replace(fold=0).astimezone(UTC)
    return fire.astimezone(UTC)


def _fire_after(
    trigger: Any, moment: datetime, skip_repeats_in: ZoneInfo | None = None
) -> datetime | None:
    """The trigger's first fire time strictly after ``moment``, in UTC (and, given a
    zone, not the second occurrence of a repeated wall time).

    Everything stays in UTC: datetimes that share a ZoneInfo add and compare by wall
    time and ignore ``fold``, so at a DST fall-back the repeated hour's second
    occurrence would read as earlier than the first, and a walk through it would run
    backwards (it skipped the slots after it, or looped).
    """
    probe = moment.astimezone(UTC) + timedelta(seconds=1)
    for _ in range(_MAX_REPEATS):
        fire = trigger.get_next_fire_time(None, probe)
        if fire is None:
            return None
        fire = fire.astimezone(UTC)
        if not (skip_repeats_in and _is_repeat(fire, skip_repeats_in)):
            return fire
        probe = fire + timedelta(seconds=1)
    return None


def due_slot(
    schedule: str,
    timezone: str,
    now: datetime,
    last_served: datetime | None,
    misfire_grace: float,
) -> datetime | None:
    """The slot to run now, or ``None`` when nothing is due (see the module rule)."""
    slot = latest_slot(schedule, timezone, now)
    if slot is None:
        return None
    if last_served is not None and last_served >= slot:
        return None
    if last_served is None and (now - slot).total_seconds() > misfire_grace:
        return None
    return slot
