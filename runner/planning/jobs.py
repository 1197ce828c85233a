"""The scheduled jobs' record: what each scheduled task's job is scheduled by, saved in
the store's metadata by the service so ``omni status`` can show next fire times.

Apart from :mod:`runner.planning.schedule` (the APScheduler wiring) so that ``omni
status`` reads the record without loading APScheduler.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from runner.core.clock import iso
from runner.planning.cron import fire_times

if TYPE_CHECKING:
    from datetime import datetime

    from runner.defs.tasks import Task
    from runner.state.interface import StateStore

#: The store metadata key holding the scheduled jobs (for ``omni status``).
JOBS_KEY = "service.schedules"


@dataclass(frozen=True, slots=True)
class Plan:
    """What a task's job is scheduled by; a change of either field reschedules it."""

    task_id: str
    schedule: str
    timezone: str

    def next_fire(self, now: datetime) -> datetime | None:
        """The first fire time at or after ``now`` (UTC)."""
        return fire_times(self.schedule, self.timezone).at_or_after(now)


def plan_of(task: Task, default_timezone: str) -> Plan | None:
    """The task's schedule plan, or ``None`` for a one-off or a disabled task."""
    spec = task.spec
    if spec.schedule is None or not spec.enabled:
        return None
    return Plan(task.id, spec.schedule, spec.timezone or default_timezone)


def save_plans(store: StateStore, plans: list[Plan]) -> None:
    """Record the scheduled jobs in the store for ``omni status``."""
    store.meta_set(JOBS_KEY, json.dumps([asdict(p) for p in plans]))


def next_fire_times(store: StateStore, now: datetime) -> list[dict[str, Any]]:
    """The jobs the service last scheduled, each with its next fire time, soonest first."""
    raw = store.meta_get(JOBS_KEY)
    rows = []
    for item in json.loads(raw) if raw else []:
        plan = Plan(**item)
        try:
            fire = plan.next_fire(now)
        except ValueError:  # a zone or cron this version no longer accepts
            fire = None
        rows.append(asdict(plan) | {"next_fire": None if fire is None else iso(fire)})
    return sorted(rows, key=lambda row: (row["next_fire"] is None, row["next_fire"] or ""))
