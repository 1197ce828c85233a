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
machine agrees on the slots without sharing state.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from runner.tasks import cron_trigger, every_seconds

# How far back to look for a cron's latest fire time, widening until one is found.
_WINDOWS = (
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=8),
    timedelta(days=32),
    timedelta(days=367),
    timedelta(days=4 * 366 + 1),
)


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
        fire = trigger.get_next_fire_time(None, (now - window).astimezone(zone))
        last = None
        while fire is not None and fire <= now:
            last = fire
            fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        if last is not None:
            return last.astimezone(UTC)
    return None


def next_slot(schedule: str, timezone: str, now: datetime) -> datetime | None:
    """The first fire time strictly after ``now`` (UTC)."""
    now = now.astimezone(UTC)
    interval = every_seconds(schedule)
    if interval is not None:
        epoch = int(now.timestamp())
        return datetime.fromtimestamp(epoch - epoch % interval + interval, UTC)
    trigger = cron_trigger(schedule, timezone)
    fire = trigger.get_next_fire_time(None, now + timedelta(seconds=1))
    return None if fire is None else fire.astimezone(UTC)


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
