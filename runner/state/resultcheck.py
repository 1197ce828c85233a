"""Result files are input: the checks a result file passes before it counts.

The result files on disk are omni's memory (due-ness, today's spend, crash recovery),
and on a CI machine they come from the results branch, which anyone who can push it
controls. So every reader takes them through :class:`ResultCheck`, which refuses a file

* larger than ``limits.result_file_bytes``, or not a regular file (a FIFO, a symbolic
  link);
* that is not a :class:`~runner.state.results.RunResult` (the schema);
* whose folder under the results root is not its ``task_id`` (or whose id is not a
  valid task id), whose name is not ``<run_id>.json``, or whose ``run_id`` is not a run
  id;
* whose ``slot``, ``started_at`` or ``finished_at`` is not an ISO time, or lies in the
  future by more than :data:`CLOCK_SKEW` (a slot in 9999 would stop a schedule for
  ever);
* whose ``usage.cost_usd`` is not a finite number between 0 and
  :data:`MAX_RUN_COST_USD` (NaN, a negative or an absurd cost would disable or exhaust
  the daily budget), or whose ``attempt`` or ``duration_s`` is negative or not finite.

A refused file is skipped with a warning naming it and why; it never counts. What the
checks cannot catch is a well-formed lie (a plausible cost, a completed run that never
happened): whoever may push the results branch is trusted that far (README, "What omni
trusts").
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import ValidationError

from runner.core.clock import parse_time
from runner.core.errors import FileRefusedError, ResultFileError
from runner.core.files import read_regular
from runner.core.ids import check_task_id, is_run_id
from runner.state.results import RunResult

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from datetime import datetime
    from pathlib import Path

log = logging.getLogger(__name__)

#: How far a recorded time may lie ahead of this machine's clock (another machine's
#: clock may run a little fast).
CLOCK_SKEW = timedelta(minutes=5)
#: The most one run may plausibly cost, in US dollars; a result claiming more is bogus.
MAX_RUN_COST_USD = 1000.0
#: The default size cap of a result file (config ``limits.result_file_bytes``).
DEFAULT_RESULT_BYTES = 4_194_304
_NOT_NAMED = "its name is not <run_id>.json"


@dataclass(frozen=True, slots=True)
class ResultCheck:
    """The rules every result file passes before it counts, at the clock's ``now``."""

    now: datetime
    max_bytes: int = DEFAULT_RESULT_BYTES
    """The size cap (config ``limits.result_file_bytes``)."""

    def parse(self, raw: bytes, where: str) -> RunResult:
        """The result in ``raw``, found at ``where`` (its POSIX path under the results
        folder, e.g. ``nightly/01K….json``); raises :class:`ResultFileError`."""
        if len(raw) > self.max_bytes:
            raise ResultFileError(
                where, f"{len(raw):,} bytes, over the {self.max_bytes:,}-byte cap"
            )
        try:
            result = RunResult.model_validate_json(raw)
        except ValidationError as exc:
            raise ResultFileError(where, f"not a result file: {_first_error(exc)}") from None
        self.check(result, where)
        return result

    def check(self, result: RunResult, where: str) -> None:
        """Raise :class:`ResultFileError` unless ``result`` may count, found at ``where``."""
        _check_place(result, where)
        self._check_times(result, where)
        cost = result.usage.cost_usd
        if cost is not None and not (math.isfinite(cost) and 0 <= cost <= MAX_RUN_COST_USD):
            raise ResultFileError(
                where, f"usage.cost_usd is not a number from 0 to {MAX_RUN_COST_USD:g}"
            )
        if result.attempt < 0 or not (math.isfinite(result.duration_s) and result.duration_s >= 0):
            raise ResultFileError(where, "attempt or duration_s is negative or not finite")

    def _check_times(self, result: RunResult, where: str) -> None:
        latest = self.now + CLOCK_SKEW
        for name, value in (
            ("slot", result.slot),
            ("started_at", result.started_at),
            ("finished_at", result.finished_at),
        ):
            if value is None:
                continue
            try:
                moment = parse_time(value)
            except ValueError:
                raise ResultFileError(where, f"{name} is not an ISO 8601 time") from None
            if moment > latest:
                raise ResultFileError(where, f"{name} lies in the future")

    def read(self, path: Path, root: Path) -> RunResult | None:
        """The result file ``path`` (under the results folder ``root``) if it passes;
        ``None`` if it is missing, or, with a warning naming it, if it does not."""
        return self._read(os.fspath(path), _where(path, root))

    def scan(
        self, folder: Path, root: Path, *, names: Iterable[str] | None = None, since: str = ""
    ) -> Iterator[RunResult]:
        """Every result file directly in ``folder`` (among ``names``, default all) that
        passes, skipping by name those whose run id sorts before ``since`` (a run id
        prefix: run ids begin with their creation time) without reading them."""
        base = os.fspath(folder)
        if names is None:
            try:
                names = os.listdir(base)
            except OSError:
                return
        inside = os.path.relpath(base, root)
        where = "" if inside == "." else inside.replace(os.sep, "/")
        yield from self.in_folder(base, where, names, since=since)

    def in_folder(
        self, folder: str, where: str, names: Iterable[str], *, since: str = ""
    ) -> Iterator[RunResult]:
        """:meth:`scan` for a caller that knows ``folder``'s POSIX path under the results
        folder, ``where`` (``""``: the results folder itself; a task's folder: its id).

        Only ``<run-id>.json`` names are read: temp files (``.``) and other suffixes are
        passed over, and another ``.json`` name is refused by its name, unread. Plain
        strings, not pathlib: this runs for every result file of every task."""
        prefix = f"{where}/" if where else ""
        for name in names:
            if not name.endswith(".json") or name.startswith(".") or name[: len(since)] < since:
                continue
            if not is_run_id(name[:-5]):
                warn_skipped(prefix + name, _NOT_NAMED)
                continue
            found = self._read(os.path.join(folder, name), prefix + name)
            if found is not None:
                yield found

    def _read(self, path: str, where: str) -> RunResult | None:
        try:
            raw = read_regular(path, self.max_bytes, follow_symlinks=False)
            return self.parse(raw, where)
        except FileNotFoundError:
            return None
        except (FileRefusedError, ResultFileError) as exc:
            warn_skipped(where, exc.reason)
        except OSError as exc:
            warn_skipped(where, f"cannot read: {exc.strerror or exc}")
        return None


def _check_place(result: RunResult, where: str) -> None:
    """The file lies at ``<task_id>/<run_id>.json`` and both ids have their form."""
    folder, _, name = where.rpartition("/")
    try:
        check_task_id(result.task_id)
    except ValueError:
        raise ResultFileError(where, "task_id is not a valid task id") from None
    if folder != result.task_id:
        raise ResultFileError(where, "its folder is not its task_id")
    if not is_run_id(result.run_id):
        raise ResultFileError(where, "run_id is not a run id")
    if name != f"{result.run_id}.json":
        raise ResultFileError(where, _NOT_NAMED)


def warn_skipped(where: str, reason: str) -> None:
    """The one warning a refused result file gets."""
    log.warning("result file %s skipped: %s", where, reason)


def _where(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _first_error(exc: ValidationError) -> str:
    """The first schema problem, by key path, without echoing the value (it may be a
    secret, or a megabyte)."""
    err = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in err["loc"]) or "(file)"
    return f"{where}: {err['msg']}"
