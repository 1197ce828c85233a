"""Schedule slots: when a scheduled task was last due, and whether it is due now.

One rule, used by service mode at start-up and by ``run --once`` in CI (DESIGN §4):

* a task's *latest slot* is its most recent fire time at or before ``now``;
* it is due when that slot has not been served yet (no run with that ``slot``);
* missed slots are coalesced: after downtime only the latest one runs, once;
* a task that has never been served runs its latest slot only when that slot lies
  within ``schedule.misfire_grace`` of now, so committing a daily 03:00 task at noon
  does not run it at once; a task that has run before always catches up its latest
  missed slot, however late the runner wakes (a delayed CI cron never skips a day).

The slots themselves, of cron and ``every N`` schedules, come from
:mod:`runner.planning.cron`: Debian cron's rules, the days the clock changes included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.planning.cron import fire_times

if TYPE_CHECKING:
    from datetime import datetime


def latest_slot(schedule: str, timezone: str, now: datetime) -> datetime | None:
    """The most recent fire time at or before ``now`` (UTC), or ``None`` if none in 50 years."""
    return fire_times(schedule, timezone).latest_at(now)


def next_slot(schedule: str, timezone: str, now: datetime) -> datetime | None:
    """The first fire time strictly after ``now`` (UTC)."""
    return fire_times(schedule, timezone).next_after(now)


def due(
    latest: datetime | None, now: datetime, last_served: datetime | None, misfire_grace: float
) -> datetime | None:
    """The slot to run now, given the schedule's ``latest`` slot at ``now``, or ``None``
    when nothing is due (see the module rule)."""
    if latest is None:
        return None
    if last_served is not None and last_served >= latest:
        return None
    if last_served is None and (now - latest).total_seconds() > misfire_grace:
        return None
    return latest


def due_slot(
    schedule: str,
    timezone: str,
    now: datetime,
    last_served: datetime | None,
    misfire_grace: float,
) -> datetime | None:
    """The slot to run now, or ``None`` when nothing is due (see the module rule)."""
    return due(latest_slot(schedule, timezone, now), now, last_served, misfire_grace)
