"""Model spend: today's total from the state database and the result files, and a
running total per process so a prompt run does not walk the results folder.

Today's spend is the larger of the store's figure and the result files' (the files are
written first, and a CI run starts from the results branch with no database).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core.clock import iso
from runner.core.ids import is_run_id, time_prefix
from runner.state.results import read_result

if TYPE_CHECKING:
    from datetime import datetime

    from runner.state.store import Store


def spend_in_results(results_root: Path, moment: datetime) -> float:
    """Total ``usage.cost_usd`` of the result files of runs finished at or after ``moment``.

    Run ids begin with their creation time, so older files are skipped by name without
    being read. A cost that is not a finite number ≥ 0 does not count.
    """
    floor, since = time_prefix(moment), iso(moment)
    total = 0.0
    for folder, _dirs, files in os.walk(results_root):
        for name in files:
            stem, dot, suffix = name.rpartition(".")
            if suffix != "json" or not dot or not is_run_id(stem) or stem[:10] < floor:
                continue
            found = read_result(Path(folder, name))
            if found is None or found.finished_at < since:
                continue
            cost = found.usage.cost_usd
            if cost is not None and math.isfinite(cost) and cost > 0:
                total += cost
    return total


def midnight_of(now: datetime) -> datetime:
    """The start of ``now``'s day (UTC when ``now`` is UTC)."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def spent_today(store: Store | None, results_root: Path, now: datetime) -> float:
    """Today's (the UTC day of ``now``) model spend."""
    midnight = midnight_of(now)
    from_store = store.spend_since(iso(midnight)) if store is not None else 0.0
    return max(from_store, spend_in_results(results_root, midnight))


class DailySpend:
    """Today's spend for one process: read once a day, then kept up to date as runs
    finish (:meth:`add`)."""

    def __init__(self, store: Store | None, results_root: Path) -> None:
        self._store = store
        self._results = results_root
        self._day: datetime | None = None
        self._total = 0.0

    def today(self, now: datetime) -> float:
        """Spend so far on ``now``'s day."""
        day = midnight_of(now)
        if day != self._day:
            self._day, self._total = day, spent_today(self._store, self._results, now)
        return self._total

    def add(self, cost_usd: float | None, now: datetime) -> None:
        """Count a finished run's cost (ignored unless a finite number > 0)."""
        if cost_usd is None or not math.isfinite(cost_usd) or cost_usd <= 0:
            return
        self.today(now)
        self._total += cost_usd
