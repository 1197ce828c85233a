"""Rate-limited models, remembered across processes.

A model that answered HTTP 429 is skipped until its reset (``runner.reach.modelclient``). The
memory is the state database's ``rate_limits`` table *and* the result files: a prompt
run's result records each rate-limited step with its ``until``, so a CI run that starts
from the results branch with no database skips the exhausted model too. Only result
files of runs created within the last :data:`~runner.defs.config.MAX_RATE_LIMIT_S`
seconds are read (run ids begin with their time: older files are skipped by name), and
a file's ``until`` counts at most that far past the file's own run (result files are
input from outside).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.clock import iso, parse_time
from runner.core.ids import time_prefix
from runner.defs.config import MAX_RATE_LIMIT_S
from runner.state.resultcheck import ResultCheck

if TYPE_CHECKING:
    from collections.abc import Iterator

    from runner.state.interface import StateStore

#: The outcome a result file's model call carries when its model was rate-limited.
RATE_LIMITED = "rate_limited"


class RateLimits:
    """The rate-limit memory of one process (a ``runner.reach.modelclient.RateLimitBook``):
    read from the store and the result files on first use, written through to the
    store."""

    def __init__(self, store: StateStore | None, results_root: Path, result_bytes: int) -> None:
        self._store = store
        self._results = results_root
        self._result_bytes = result_bytes
        """The size cap of a result file (``limits.result_file_bytes``)."""
        self._known: dict[str, tuple[datetime, str]] | None = None

    def until(self, model: str, now: datetime) -> tuple[datetime, str] | None:
        """``(until, why)`` while ``model`` is rate-limited at ``now``, else ``None``."""
        if self._known is None:
            self._known = self._load(now)
        found = self._known.get(model)
        return found if found is not None and found[0] > now else None

    def mark(self, model: str, until: datetime, why: str) -> None:
        """Remember that ``model`` is rate-limited until ``until``."""
        known = self._known if self._known is not None else {}
        if model not in known or known[model][0] < until:
            known[model] = (until, why)
        self._known = known
        if self._store is not None:
            self._store.set_rate_limit(model, iso(until), why)

    def _load(self, now: datetime) -> dict[str, tuple[datetime, str]]:
        found: dict[str, tuple[datetime, str]] = {}

        def keep(model: str, until: datetime, why: str) -> None:
            if until > now and (model not in found or found[model][0] < until):
                found[model] = (until, why)

        if self._store is not None:
            for model, (text, why) in self._store.rate_limits(iso(now)).items():
                if (moment := _time(text)) is not None:
                    keep(model, min(moment, now + timedelta(seconds=MAX_RATE_LIMIT_S)), why)
        check = ResultCheck(now, self._result_bytes)
        for model, moment, why in rate_limits_in_results(self._results, now, check):
            keep(model, moment, why)
        return found


def rate_limits_in_results(
    results_root: Path, now: datetime, check: ResultCheck
) -> Iterator[tuple[str, datetime, str]]:
    """``(model, until, why)`` for each rate-limited step the recent result files that
    pass ``check`` record."""
    window = timedelta(seconds=MAX_RATE_LIMIT_S)
    floor = time_prefix(now - window)
    for folder, _dirs, names in os.walk(results_root):
        for result in check.scan(Path(folder), results_root, names=names, since=floor):
            written = parse_time(result.finished_at)
            for call in _model_calls(result.model_extra or {}):
                until = _time(call.get("until"))
                model = call.get("model")
                if until is None or not isinstance(model, str) or not model:
                    continue
                why = f"HTTP 429 recorded in result {result.run_id}"
                yield model, min(until, written + window, now + window), why


def _model_calls(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    agent = data.get("agent")
    calls = agent.get("model_calls") if isinstance(agent, dict) else None
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, dict) and call.get("outcome") == RATE_LIMITED:
            yield call


def _time(text: Any) -> datetime | None:
    """An ISO time with a time zone, else ``None``."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
