"""The rules of a run's moves that hold whatever database keeps the rows.

Both backends (:mod:`runner.state.store`, SQLite; :mod:`runner.state.postgres`,
PostgreSQL) read runs through :func:`run_from_row`, check every move with
:func:`check_steps` against the one transition table (:mod:`runner.core.states`), let a
transition set only the columns :func:`check_changes` allows, and plan a claim with
:func:`claim_plan`; so the state machine is the same on both, and only the SQL differs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.errors import IllegalTransitionError, StaleRunError
from runner.core.states import TERMINAL, Mode, RunState, check_transition
from runner.state.records import RunChange, RunRecord

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: The columns of a run row, in :class:`RunRecord`'s order.
RUN_COLUMNS = tuple(f.name for f in fields(RunRecord))
#: The columns a transition may set; the others are the store's own bookkeeping.
SETTABLE = frozenset(
    [
        "executor",
        "tool",
        "model",
        "tier",
        "mode",
        "note",
        "error",
        "result_path",
        "cost_usd",
        "slot",
    ]
)
#: States a claim takes a run from.
CLAIMABLE = frozenset({RunState.IDLE, RunState.WAITING})
#: States of a run that may still make progress (a failed one with attempts left too).
OPEN = (RunState.IDLE, RunState.DISPATCHING, RunState.EXECUTING, RunState.WAITING)
#: The free-text columns a move may set, redacted before they are written.
TEXT_COLUMNS = ("error", "note")
#: SQL (both backends) true of a run that still holds its unique key (:func:`unique_key`):
#: every run but one failed with its attempts spent, or skipped (its task file went).
HOLDS_KEY = "NOT (state = 'failed' AND attempt >= max_attempts) AND state <> 'skipped'"

_STATE_AT, _MODE_AT = RUN_COLUMNS.index("state"), RUN_COLUMNS.index("mode")


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A :class:`RunRecord` from a row of :data:`RUN_COLUMNS`, in that order."""
    # Positional, not by name: this runs for every row read on the dispatch path.
    values = list(row)
    values[_STATE_AT] = RunState(values[_STATE_AT])
    mode = values[_MODE_AT]
    values[_MODE_AT] = Mode(mode) if mode else None
    return RunRecord(*values)


def sql_value(value: Any) -> Any:
    """Enums by value and paths as text, so rows read back as plain strings."""
    if isinstance(value, Mode | RunState):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def holds_key(state: str, attempt: int, max_attempts: int) -> bool:
    """:data:`HOLDS_KEY` in Python, for a row read as plain values."""
    spent = state == RunState.FAILED.value and attempt >= max_attempts
    return not spent and state != RunState.SKIPPED.value


def move_values(
    changes: dict[str, Any], new: RunState, now: str, redact: Callable[[str], str]
) -> dict[str, Any]:
    """The columns a move to ``new`` at ``now`` sets: ``changes`` as SQL values (free
    text redacted), the state and time, ``finished_at`` for an end, and the note cleared
    unless ``changes`` sets one (a note says why a run stands where it stands: it goes
    when the run moves on)."""
    values: dict[str, Any] = {"note": None}
    values |= {k: sql_value(v) for k, v in changes.items()}
    for name in TEXT_COLUMNS:
        if values.get(name) is not None:
            values[name] = redact(values[name])
    values |= {"state": new.value, "updated_at": now}
    if new in TERMINAL:
        values["finished_at"] = now
    return values


def check_steps(record: RunRecord, steps: Sequence[tuple[RunState, str]]) -> RunState:
    """Check each ``(state, detail)`` step from ``record``'s state against the table
    (a failed run goes back to idle only with attempts left); returns the last state."""
    old = record.state
    for new, _ in steps:
        check_transition(old, new)
        if old is RunState.FAILED and new is RunState.IDLE and not record.attempts_left:
            raise IllegalTransitionError(
                f"run {record.run_id} cannot go from failed to idle: no attempts left"
                f" ({record.attempt} of {record.max_attempts})"
            )
        old = new
    return old


def check_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` for a transition, checked: only :data:`SETTABLE` columns (else
    ``TypeError``), a mode that is a :class:`Mode` (else ``ValueError``)."""
    unknown = set(changes) - SETTABLE
    if unknown:
        raise TypeError(
            f"transition() got unknown run field(s): {', '.join(sorted(unknown))};"
            f" allowed: {', '.join(sorted(SETTABLE))}"
        )
    if changes.get("mode") is not None:
        changes["mode"] = Mode(changes["mode"])  # a bad mode fails here, not on every read
    return changes


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """The steps and column changes of one claim."""

    steps: list[tuple[RunState, str]]
    changes: dict[str, Any]


def claim_plan(
    record: RunRecord, now: str, *, executor: str | None, tool: str | None, detail: str
) -> ClaimPlan:
    """How a claim moves ``record``: to dispatching (a new attempt only from idle: a
    waiting run was parked mid-attempt), and on to executing when ``executor`` is given."""
    attempt = record.attempt + 1 if record.state is RunState.IDLE else record.attempt
    steps = [(RunState.DISPATCHING, f"claimed, attempt {attempt}")]
    changes: dict[str, Any] = {"attempt": attempt, "started_at": now}
    if executor is not None:
        steps.append((RunState.EXECUTING, detail))
        changes |= {"executor": executor, "tool": tool}
    return ClaimPlan(steps, changes)


def unique_key(task_hash: str, slot: str | None) -> str:
    """What makes a run unique among a task's runs: its slot for a scheduled run, its
    content for a one-off (two instances that both see it create one run)."""
    return f"slot {slot}" if slot is not None else f"content {task_hash}"


def change_of(run: RunRecord, old: RunState | None, new: RunState, detail: str) -> RunChange:
    """The :class:`RunChange` reported for one step of a move of ``run``."""
    return RunChange(
        run.run_id, run.task_id, run.slot, old, new, run.attempt, detail, run.updated_at
    )


def stale(where: str, record: RunRecord, state: str, attempt: int) -> StaleRunError:
    """The error for a move from ``record`` when the row is at ``state`` and ``attempt``."""
    return StaleRunError(
        f"{where}: run {record.run_id} is {state} (attempt {attempt}), not"
        f" {record.state} (attempt {record.attempt}) as read: something else moved it"
    )
