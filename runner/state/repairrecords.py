"""Repair records: a gateway fault's memory in the results folder.

A repair task file (``tasks/repair/gateway-<time>.yaml``) lives in the checkout of the
process that wrote it. In GitHub Actions that checkout is thrown away: only the results
folder travels, to the publish job as an artifact and to later runs through the results
branch. So each fault is also recorded as result files of its repair task
(``results/repair/gateway-<time>/<run-id>.json``): one ``waiting`` when the repair task
is written (the fault is *open*: the repair waits for a person), one ``completed`` when
the fault is resolved. Their ``fault`` field holds the fault's facts (mode, times, error
kinds, the last errors and probes -- untrusted text, as the gateway gave it), from which
the publish step rebuilds the repair task as its own pull request, and by which a later
process with no state database knows the fault is still open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.core.clock import iso, utc_now
from runner.core.ids import new_run_id
from runner.core.states import Mode, RunState
from runner.state.resultcheck import ResultCheck
from runner.state.results import RunResult, write_result

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from datetime import datetime
    from pathlib import Path

    from runner.core.redaction import Redactor

log = logging.getLogger(__name__)

#: Every gateway repair task's id starts so (``tasks/repair/gateway-<time>.yaml``).
REPAIR_PREFIX = "repair/gateway-"
OPEN = "open"
RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class RepairRecord:
    """The newest record of one repair task."""

    task_id: str
    run_id: str
    task_hash: str
    fault: dict[str, Any]
    """The ``fault`` field as recorded: ``status`` (``open`` or ``resolved``), ``mode``,
    ``started_at``, ``switched_at``, ``counts``, ``last_errors``, ``probes``; a resolved
    one ``resolved_at`` and ``why``. Untrusted when read from an artifact."""

    @property
    def open(self) -> bool:
        """True while the fault is not resolved."""
        return self.fault.get("status") == OPEN


def newest_records(results: Iterable[tuple[str, str, dict[str, Any]]]) -> list[RepairRecord]:
    """The record that counts for each repair task among ``(task id, run id, result
    data)``: its newest resolved one, else its newest; ordered by task id (oldest fault
    first). A resolved fault stays resolved: a new fault is a new repair task."""
    newest: dict[str, RepairRecord] = {}
    for task_id, run_id, data in results:
        fault = data.get("fault")
        if not task_id.startswith(REPAIR_PREFIX) or not isinstance(fault, dict):
            continue
        found = RepairRecord(task_id, run_id, str(data.get("task_hash")), fault)
        known = newest.get(task_id)
        if known is None or (not found.open, run_id) > (not known.open, known.run_id):
            newest[task_id] = found
    return [newest[task_id] for task_id in sorted(newest)]


def resolved_fault(at: str, why: str) -> dict[str, Any]:
    """The ``fault`` field of a resolved fault's record."""
    return {"kind": "gateway", "status": RESOLVED, "resolved_at": at, "why": why}


class RepairRecords:
    """Reads and writes the repair records of one results folder."""

    def __init__(
        self,
        results_root: Path,
        *,
        redactor: Redactor,
        max_bytes: int,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._root = results_root
        self._redactor = redactor
        self._max_bytes = max_bytes
        self._clock = clock

    def open_records(self) -> list[RepairRecord]:
        """The faults recorded open, oldest first (only files that pass the result
        checks count)."""
        folder = self._root / "repair"
        if not folder.is_dir():
            return []
        check = ResultCheck(self._clock(), self._max_bytes)
        found = []
        for sub in sorted(folder.glob("gateway-*")):
            task_id = f"repair/{sub.name}"
            if sub.is_dir() and not sub.is_symlink():
                found += [
                    (task_id, r.run_id, r.model_dump(mode="json"))
                    for r in check.scan(sub, self._root)
                ]
        return [record for record in newest_records(found) if record.open]

    def write_open(self, task_id: str, task_hash: str, fault: dict[str, Any]) -> Path:
        """Record the fault of ``task_id`` (a repair task just written) as open."""
        mode = Mode(fault["mode"])
        note = "repair task written: it waits for a person (or claude_code) to act on it"
        return self._write(
            task_id, task_hash, RunState.WAITING, mode, {**fault, "status": OPEN}, note
        )

    def write_resolved(self, record: RepairRecord, why: str) -> Path:
        """Record ``record``'s fault as resolved (its repair task file is not here)."""
        fault = resolved_fault(iso(self._clock()), why)
        note = f"fault resolved: {why}"
        return self._write(
            record.task_id, record.task_hash, RunState.COMPLETED, Mode.NORMAL, fault, note
        )

    def _write(
        self,
        task_id: str,
        task_hash: str,
        state: RunState,
        mode: Mode,
        fault: dict[str, Any],
        note: str,
    ) -> Path:
        now = self._clock()
        result = RunResult(
            task_id=task_id,
            run_id=new_run_id(now),
            task_hash=task_hash,
            state=state,
            attempt=0,
            mode=mode,
            started_at=iso(now),
            finished_at=iso(now),
            duration_s=0.0,
            note=note,
            fault=fault,
        )
        path = write_result(self._root, result, self._redactor)
        log.info("repair record %s: fault %s", path, fault["status"])
        return path
