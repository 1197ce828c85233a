"""Due-ness: does a task run now? From the store *and* from the result files on disk.

A fresh CI machine has no state database: the result files on the results branch are
its memory (DESIGN §4). So every decision merges two histories, the store's rows and
the files under ``results/<task-id>/``, and takes whichever knows more:

* a **one-off** task (no ``schedule``) is done when a run of its current content
  (``task_hash``) *completed*, by the store or by a result file; a changed file has a
  new hash and runs again; a run that failed with every attempt used is not run again
  for the same content (a broken task must not fail, or spend, every 15 minutes):
  edit the file or use ``--force``;
* a **scheduled** task runs the slot :func:`runner.planning.slots.due` picks, given the
  latest slot any earlier run served (completed or failed, whatever the content: an
  edited schedule does not re-serve a slot). Missed slots coalesce into the latest one,
  which runs once however late the runner wakes; a task that never ran waits for its
  next slot unless its latest one is within ``schedule.misfire_grace``.

``OMNI_NOW`` (a testing aid) makes the runner's clock start at a given ISO time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import takewhile
from typing import TYPE_CHECKING

from runner.core.clock import iso, parse_time, utc_now
from runner.core.errors import ConfigError
from runner.core.ids import time_prefix
from runner.core.states import RunState
from runner.planning.cron import fire_times
from runner.planning.slots import due
from runner.state.resultcheck import DEFAULT_RESULT_BYTES, ResultCheck
from runner.state.results import result_folder

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    from runner.defs.tasks import Task
    from runner.state.records import TaskRuns
    from runner.state.results import RunResult

#: The environment variable that sets the runner's clock (a testing aid).
NOW_VARIABLE = "OMNI_NOW"

#: The characters of a run id that say when it was created.
_PREFIX = 10
# A slot counts as served once a run for it ended, well or badly: never run it twice.
_SERVED = frozenset({RunState.COMPLETED, RunState.FAILED})


class Due(StrEnum):
    """The verdict on one task."""

    RUN = "run"
    """Runnable now (a new or changed one-off, or a scheduled task's unserved slot)."""
    DONE = "done"
    """A one-off already completed for its current content."""
    SERVED = "served"
    """A scheduled task whose latest slot already ran; it waits for the next one."""
    FAILED = "failed"
    """A one-off whose current content already failed with every attempt used."""
    NOT_YET = "not_yet"
    """A scheduled task that never ran and whose latest slot is past the grace period."""


@dataclass(frozen=True, slots=True)
class History:
    """What earlier runs of one task left: the latest slot served, hashes completed."""

    last_slot: datetime | None = None
    completed_hashes: frozenset[str] = field(default_factory=frozenset)
    failed_hashes: frozenset[str] = field(default_factory=frozenset)
    """Contents whose run failed with every attempt used."""

    def merge(self, other: History) -> History:
        """What both histories know together."""
        slots = [s for s in (self.last_slot, other.last_slot) if s is not None]
        return History(
            last_slot=max(slots) if slots else None,
            completed_hashes=self.completed_hashes | other.completed_hashes,
            failed_hashes=self.failed_hashes | other.failed_hashes,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict, the slot to serve (scheduled tasks that run) and why, in words."""

    verdict: Due
    slot: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class DueRule:
    """The inputs every decision of one ``run --once`` shares."""

    now: datetime
    results: Path | None
    """The results folder; ``None`` decides from the store alone."""
    timezone: str = "UTC"
    misfire_grace: float = 3600.0
    result_bytes: int = DEFAULT_RESULT_BYTES
    """The size cap of a result file (config ``limits.result_file_bytes``)."""

    def check(self) -> ResultCheck:
        """The checks a result file passes before it counts, at this rule's ``now``."""
        return ResultCheck(self.now, self.result_bytes)


def history_from_runs(runs: TaskRuns | None, task: Task) -> History:
    """The history the state database's :class:`TaskRuns` of ``task`` hold (``None``: no
    finished run)."""
    if runs is None:
        return History()
    current = frozenset({task.task_hash})
    return History(
        last_slot=parse_time(runs.last_slot) if runs.last_slot else None,
        completed_hashes=current if runs.completed else frozenset(),
        failed_hashes=current if runs.failed else frozenset(),
    )


def history_for(task: Task, known: History, rule: DueRule) -> History:
    """``known`` (what the state database holds of ``task``) with what ``task``'s result
    files add, reading only the files that can change the verdict of :func:`decide`:

    * a one-off whose current content ``known`` shows completed is done whatever the
      files say: none is read. Otherwise its files are read newest first (a run id
      begins with its creation time), up to a completed run of its current content;
    * a scheduled task's verdict depends only on the latest slot served: when ``known``
      shows its latest slot (at or before now) served, none is read. Otherwise, as a
      run is created at or after the slot it serves, files created before the latest
      slot known so far (from the database, then from the files read, newest first)
      cannot hold a later one and are not read.

    So the history may leave out what cannot matter (older hashes, a one-off's slots).
    """
    if rule.results is None:
        return known
    files = _Files(result_folder(rule.results, task.id), rule.check(), task.id)
    schedule = task.spec.schedule
    if schedule is None:
        return _one_off_history(task, known, files)
    latest = fire_times(schedule, task.spec.timezone or rule.timezone).latest_at(rule.now)
    if known.last_slot is not None and latest is not None and known.last_slot >= latest:
        return known  # its latest slot ran: no file can change the verdict
    return _scheduled_history(known, files)


def _one_off_history(task: Task, known: History, files: _Files) -> History:
    if task.task_hash in known.completed_hashes:
        return known
    done: set[str] = set()
    failed: set[str] = set()
    for found in files.newest_first(str):
        if found.state is RunState.COMPLETED:
            done.add(found.task_hash)
            if found.task_hash == task.task_hash:
                break
        elif found.state is RunState.FAILED:
            failed.add(found.task_hash)
    return known.merge(History(completed_hashes=frozenset(done), failed_hashes=frozenset(failed)))


def _scheduled_history(known: History, files: _Files) -> History:
    last = known.last_slot

    def floor() -> str:
        return time_prefix(last) if last is not None else ""

    for found in files.newest_first(floor):
        if found.state in _SERVED and found.slot is not None:
            served = parse_time(found.slot)  # the check made sure it parses
            if last is None or served > last:
                last = served
    return known.merge(History(last_slot=last))


@dataclass(frozen=True, slots=True)
class _Files:
    """One task's result files: its ``folder`` (a plain path: this runs for every task)."""

    folder: str
    check: ResultCheck
    task_id: str

    def newest_first(self, floor: Callable[[], str]) -> Iterator[RunResult]:
        """The files that pass the checks, newest first (by name: a run id begins with
        its creation time), up to the first whose run id begins below ``floor()``
        (created earlier). The folder is listed once; a file is read only when reached."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        names.sort(reverse=True)
        # Lazily: the floor may rise with each file read.
        wanted = takewhile(lambda name: name[:_PREFIX] >= floor(), names)
        yield from self.check.in_folder(self.folder, self.task_id, wanted)


def decide(task: Task, history: History, rule: DueRule) -> Decision:
    """Whether ``task`` runs now, given what earlier runs left (see the module rule)."""
    schedule = task.spec.schedule
    if schedule is None:
        if task.task_hash in history.completed_hashes:
            return Decision(Due.DONE, None, "already completed for this content")
        if task.task_hash in history.failed_hashes:
            return Decision(
                Due.FAILED, None, "failed for this content; edit the task or use --force"
            )
        return Decision(Due.RUN, None, "new or changed content")
    zone = task.spec.timezone or rule.timezone
    # One walk gives both slots around now: the due rule needs the latest, the reason the next.
    around = fire_times(schedule, zone).around(rule.now)
    slot = due(around.latest, rule.now, history.last_slot, rule.misfire_grace)
    if slot is not None:
        late = (rule.now - slot).total_seconds()
        return Decision(Due.RUN, slot, f"slot {iso(slot)} due ({late:.0f} s ago)")
    when = f"next slot {iso(around.next)}" if around.next is not None else "no later slot"
    if history.last_slot is not None and (
        around.latest is None or history.last_slot >= around.latest
    ):
        return Decision(Due.SERVED, None, f"not due: slot {iso(history.last_slot)} ran; {when}")
    return Decision(
        Due.NOT_YET, None, f"not due: new schedule, first run at the {when} ({schedule})"
    )


def fixed_start_clock(start: datetime) -> Callable[[], datetime]:
    """A clock that reads ``start`` now and runs on at real speed from there."""
    origin = time.monotonic()

    def clock() -> datetime:
        return datetime.fromtimestamp(start.timestamp() + time.monotonic() - origin, UTC)

    return clock


def clock_from(environ: Mapping[str, str]) -> Callable[[], datetime]:
    """The runner's clock: real UTC time, or from ``OMNI_NOW`` on when that is set."""
    text = environ.get(NOW_VARIABLE, "").strip()
    if not text:
        return utc_now
    try:
        start = parse_time(text)
    except ValueError:
        raise ConfigError(
            f"{NOW_VARIABLE}={text!r} is not an ISO 8601 time like 2026-11-21T10:00:00Z"
        ) from None
    return fixed_start_clock(start)
