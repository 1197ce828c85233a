"""APScheduler wiring for ``schedule:`` in service mode.

One APScheduler 3 job a scheduled task on an ``AsyncIOScheduler``, each with a
:class:`SlotTrigger` that asks :mod:`runner.planning.cron` (the engine due-ness in CI
uses too) for its next fire time, so the jobs fire exactly at the slots
:mod:`runner.planning.slots` serves: cron in the task's time zone by Debian cron's
rules, ``every N`` on multiples of N seconds since the Unix epoch. A job decides nothing
itself: when it fires, the service plans the task with :mod:`runner.planning.plan`
(due-ness from :mod:`runner.planning.dueness`, the rule ``run --once`` uses in CI). A
fire, a restart after downtime and an edited schedule therefore agree on what is due,
and a slot is served at most once however often a job fires.

Jobs run at most one instance at a time (``max_instances=1``), coalesce missed fires,
and live only in memory: the store is the record of what ran. The jobs' definitions
are also saved in the store's metadata so ``omni status`` can show next fire times.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.base import BaseTrigger

from runner.core.errors import OmniError
from runner.core.states import TERMINAL
from runner.defs.tasks import Task
from runner.planning.cron import FireTimes, fire_times
from runner.planning.jobs import Plan, plan_of
from runner.state.records import RunRecord

log = logging.getLogger(__name__)

#: A live fire is never refused for lateness below this many seconds, whatever
#: ``schedule.misfire_grace`` says: the grace is for catching up after downtime.
LIVE_GRACE = 60.0
_TICK = timedelta(microseconds=1)


class SlotTrigger(BaseTrigger):
    """Fires on a schedule's slots, as :mod:`runner.planning.cron` computes them; after
    a fire at an odd moment (a catch-up run started at once) it goes back to the slots."""

    __slots__ = ("_label", "_times")

    def __init__(self, times: FireTimes, label: str) -> None:
        self._times = times
        self._label = label

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The first slot at or after ``now``, or, after a fire, the first slot after it
        (which may lie before ``now``: APScheduler counts the fires it missed)."""
        start = now
        if previous_fire_time is not None:
            start = min(now, previous_fire_time + _TICK)
            if start == previous_fire_time:
                start += _TICK
        return self._times.at_or_after(start)

    def __str__(self) -> str:
        return f"slots[{self._label}]"

    def __repr__(self) -> str:
        return f"<SlotTrigger ({self._label})>"


def trigger_for(schedule: str, timezone: str) -> SlotTrigger:
    """The APScheduler trigger whose fire times are the schedule's slots."""
    return SlotTrigger(fire_times(schedule, timezone), f"{schedule}, {timezone}")


Fire = Callable[[str], Awaitable[None]]


Lookup = Callable[[str], "Task | None"]
Due = Callable[[Task], list[tuple[Task, RunRecord]]]


class Ended(Protocol):
    """What a started run gives back when it is over (the dispatcher's ``Finished``)."""

    @property
    def run(self) -> RunRecord:
        """The run's final row."""


Start = Callable[[Task, RunRecord], Awaitable[Ended | None]]


class Firing:
    """What a task's job does when it fires: run what the due rule says is due, then
    look again once (a newer slot may have passed while it ran)."""

    def __init__(self, *, lookup: Lookup, due: Due, start: Start, timezone: str) -> None:
        self._lookup = lookup
        self._due = due
        self._start = start
        self._timezone = timezone
        self.stopped = False

    async def fire(self, task_id: str) -> None:
        """Serve the due slot, if any; an error is logged, never raised to APScheduler."""
        for _ in range(2):
            task = self._lookup(task_id)
            if task is None or self.stopped or plan_of(task, self._timezone) is None:
                return
            try:
                runnable = self._due(task)
            except OmniError as exc:
                log.error("task %s: cannot start its scheduled run: %s", task_id, exc)
                return
            if not runnable:
                return
            # Shielded: stopping the scheduler cancels this job, never the run itself.
            run = asyncio.ensure_future(self._start(*runnable[0]))
            try:
                finished = await asyncio.shield(run)
            except asyncio.CancelledError:
                if run.cancelled():  # the run itself was cancelled (shutdown): done here
                    return
                raise
            if finished is None or finished.run.state not in TERMINAL:
                return


class TaskScheduler:
    """One APScheduler job a scheduled task; a fire awaits ``fire(task_id)``."""

    def __init__(self, *, fire: Fire, misfire_grace: float) -> None:
        self._fire = fire
        self._plans: dict[str, Plan] = {}
        self.version = 0
        """Counts the changes of :meth:`plans` (a set, reschedule or removal)."""
        self._batching = False
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "max_instances": 1,
                "coalesce": True,
                # APScheduler wants a positive whole number of seconds.
                "misfire_grace_time": max(1, math.ceil(misfire_grace)),
            },
        )

    def start(self) -> None:
        """Start firing; call from inside the running event loop."""
        self._scheduler.start()

    def pause(self) -> None:
        """Fire nothing more; jobs already running go on."""
        if self._scheduler.running:
            self._scheduler.pause()

    def shutdown(self) -> None:
        """Stop the scheduler (jobs still running are cancelled)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make many changes at once: APScheduler looks at its jobs once at the end, not
        after each change (10,000 tasks at start-up: one look, not 10,000)."""
        if self._batching or self._scheduler.state != STATE_RUNNING:  # not started, or paused
            yield
            return
        self._batching = True
        self._scheduler.pause()
        try:
            yield
        finally:
            self._batching = False
            self._scheduler.resume()

    def has(self, plan: Plan) -> bool:
        """True when the task's job is scheduled by exactly this plan."""
        return self._plans.get(plan.task_id) == plan

    def plans(self) -> list[Plan]:
        """Every scheduled job's plan, by task id."""
        return [self._plans[key] for key in sorted(self._plans)]

    def set(self, plan: Plan) -> bool:
        """Add or reschedule the task's job; ``False`` when the plan is unchanged."""
        if self._plans.get(plan.task_id) == plan:
            return False
        trigger = trigger_for(plan.schedule, plan.timezone)
        if plan.task_id in self._plans:
            self._scheduler.reschedule_job(plan.task_id, trigger=trigger)
        else:
            self._scheduler.add_job(
                self._fire, trigger, args=[plan.task_id], id=plan.task_id, name=plan.task_id
            )
        self._plans[plan.task_id] = plan
        self.version += 1
        return True

    def remove(self, task_id: str) -> bool:
        """Remove the task's job (a run in flight goes on); ``False`` if it had none."""
        if self._plans.pop(task_id, None) is None:
            return False
        self._scheduler.remove_job(task_id)
        self.version += 1
        return True

    def fire_now(self, task_id: str) -> None:
        """Fire the task's job at once (a catch-up); it then follows its trigger again."""
        self._scheduler.modify_job(task_id, next_run_time=datetime.now(UTC))

    def next_fire(self, task_id: str) -> datetime | None:
        """When the task's job fires next, or ``None``."""
        job = self._scheduler.get_job(task_id)
        return None if job is None else job.next_run_time
