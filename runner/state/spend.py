"""Model spend: today's total from the state database and the result files, and a
running total per process so a prompt run does not walk the results folder.

Today's spend is the store's figure plus that of the result files of runs the store has
no row for (the files are written first, and a CI run starts from the results branch
with no database, or with one that never saw the branch's runs): a file whose run the
store holds is not read, its cost being the row's (which counts every attempt).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from runner.core.clock import iso, parse_time
from runner.core.ids import time_prefix
from runner.state.resultcheck import ResultCheck

if TYPE_CHECKING:
    from collections.abc import Container
    from datetime import datetime
    from pathlib import Path

    from runner.state.interface import StateStore


def spend_in_results(
    results_root: Path,
    moment: datetime,
    check: ResultCheck,
    *,
    known: Container[str] = frozenset(),
) -> float:
    """Total ``usage.cost_usd`` of the result files of runs created and finished at or
    after ``moment``, but for the runs in ``known`` (the store's).

    Run ids begin with their creation time, so older files are skipped by name without
    being read, and so are the runs in ``known``. A run created before ``moment`` and
    finished after it counts only by its row (the store's figure is by finish time). A
    file that does not pass ``check`` (a cost that is not a finite number from 0 to a
    sane maximum among others) does not count.
    """
    floor = time_prefix(moment)
    width = len(floor)
    total = 0.0
    root = os.fspath(results_root)
    for folder, _dirs, names in os.walk(root):
        fresh = [
            name
            for name in names
            if name[:width] >= floor and name.endswith(".json") and name[:-5] not in known
        ]
        if not fresh:
            continue
        inside = os.path.relpath(folder, root)
        where = "" if inside == "." else inside.replace(os.sep, "/")
        for found in check.in_folder(folder, where, fresh):
            cost = found.usage.cost_usd
            if cost is not None and parse_time(found.finished_at) >= moment:
                total += cost
    return total


def midnight_of(now: datetime) -> datetime:
    """The start of ``now``'s day (UTC when ``now`` is UTC)."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def spent_today(
    store: StateStore | None,
    results_root: Path,
    now: datetime,
    result_bytes: int,
) -> float:
    """Today's (the UTC day of ``now``) model spend; result files over ``result_bytes``
    do not count."""
    midnight = midnight_of(now)
    check = ResultCheck(now, result_bytes)
    if store is None:
        return spend_in_results(results_root, midnight, check)
    known = store.run_ids_since(time_prefix(midnight))
    in_files = spend_in_results(results_root, midnight, check, known=known)
    return store.spend_since(iso(midnight)) + in_files


class DailySpend:
    """Today's spend for one process: read once a day, then kept up to date as runs
    finish (:meth:`add`)."""

    def __init__(self, store: StateStore | None, results_root: Path, result_bytes: int) -> None:
        self._store = store
        self._results = results_root
        self._result_bytes = result_bytes
        self._day: datetime | None = None
        self._total = 0.0

    def today(self, now: datetime) -> float:
        """Spend so far on ``now``'s day."""
        day = midnight_of(now)
        if day != self._day:
            self._day = day
            self._total = spent_today(self._store, self._results, now, self._result_bytes)
        return self._total

    def add(self, cost_usd: float | None, now: datetime) -> None:
        """Count a finished run's cost (ignored unless a finite number > 0)."""
        if cost_usd is None or not math.isfinite(cost_usd) or cost_usd <= 0:
            return
        self.today(now)
        self._total += cost_usd
