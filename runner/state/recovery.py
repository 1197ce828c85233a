"""Crash recovery: settle the runs a dead process left dispatching or executing.

A result file written for the run's current attempt (and content), that passes the
checks every result file passes (``runner.state.resultcheck``), is the proof of how that
attempt ended (it is written before the row): the run takes the file's state. Without one the
run goes back to idle if it has attempts left, else it fails. Run on every start
(``run --once`` and the service), before anything is dispatched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.core.states import RUN_TRANSITIONS, RunState
from runner.state.records import ResumeReport, Settlement
from runner.state.results import result_path

if TYPE_CHECKING:
    from pathlib import Path

    from runner.state.interface import StateStore
    from runner.state.records import RunRecord
    from runner.state.resultcheck import ResultCheck

#: A result file may record any of these; recovery trusts the file over the row.
_SETTLED_BY_FILE = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.WAITING})


def resume(store: StateStore, results_root: Path, check: ResultCheck) -> ResumeReport:
    """Settle every in-flight run; returns what moved, and the waiting runs in creation
    order (to resume when a model answers)."""
    moved, waiting = store.settle_in_flight(lambda record: settlement(record, results_root, check))
    report = ResumeReport(to_idle=[], to_failed=[], to_completed=[], waiting=waiting)
    lists = {
        RunState.IDLE: report.to_idle,
        RunState.FAILED: report.to_failed,
        RunState.COMPLETED: report.to_completed,
    }
    for record in moved:
        lists.get(record.state, []).append(record.run_id)
    return report


def settlement(record: RunRecord, results_root: Path, check: ResultCheck) -> Settlement:
    """How to move one in-flight run, judged by its result file."""
    path = result_path(results_root, record.task_id, record.run_id)
    found = check.read(path, results_root)
    # A file from an earlier attempt of the same run says nothing about this one.
    if (
        found is not None
        and found.attempt == record.attempt
        and found.task_hash == record.task_hash
        and found.state in _SETTLED_BY_FILE
    ):
        target = RunState(found.state)
        steps = [(target, "result file found on resume")]
        if target not in RUN_TRANSITIONS[record.state]:
            # dispatching -> completed is not in the table: pass through executing.
            steps.insert(0, (RunState.EXECUTING, "resumed with a result"))
        changes: dict[str, Any] = {"result_path": str(path), "error": found.error}
        if found.usage.cost_usd is not None:
            changes["cost_usd"] = found.usage.cost_usd
        return Settlement(steps, changes)
    if record.attempts_left:
        return Settlement([(RunState.IDLE, "interrupted; will retry")])
    return Settlement([(RunState.FAILED, "interrupted; no attempts left")])
