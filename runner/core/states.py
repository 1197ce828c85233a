"""Run states, system modes, and the one table of legal transitions for each.

Every state change in the store goes through :func:`check_transition` (runs) or
:func:`check_mode_change` (modes); nothing else decides what is legal.
"""

from __future__ import annotations

from enum import StrEnum

from runner.core.errors import IllegalTransitionError


class RunState(StrEnum):
    """Where one run of a task stands. Stored lowercase in rows and result files."""

    IDLE = "idle"
    DISPATCHING = "dispatching"
    EXECUTING = "executing"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Closed without running: its task file is gone (the event's detail says which)."""


class Mode(StrEnum):
    """The runner's view of the model clouds (DESIGN §3)."""

    NORMAL = "normal"
    DEGRADED = "degraded"
    BRAINSTEM = "brainstem"


RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    # -> skipped: the task's file is gone, so a run that has not started never will.
    RunState.IDLE: frozenset({RunState.DISPATCHING, RunState.SKIPPED}),
    RunState.DISPATCHING: frozenset(
        {RunState.EXECUTING, RunState.WAITING, RunState.FAILED, RunState.IDLE}
    ),
    # executing -> idle: resume after a crash, or a shutdown that interrupted the run.
    RunState.EXECUTING: frozenset(
        {RunState.COMPLETED, RunState.FAILED, RunState.WAITING, RunState.IDLE}
    ),
    RunState.WAITING: frozenset({RunState.DISPATCHING, RunState.SKIPPED}),
    # failed -> idle is a retry; the store allows it only with attempts left (and
    # failed -> skipped closes such a retry when the task's file is gone).
    RunState.FAILED: frozenset({RunState.IDLE, RunState.SKIPPED}),
    RunState.COMPLETED: frozenset(),
    RunState.SKIPPED: frozenset(),
}

MODE_TRANSITIONS: dict[Mode, frozenset[Mode]] = {
    # normal -> brainstem: the gateway failed and no backup key is configured.
    Mode.NORMAL: frozenset({Mode.DEGRADED, Mode.BRAINSTEM}),
    Mode.DEGRADED: frozenset({Mode.NORMAL, Mode.BRAINSTEM}),
    Mode.BRAINSTEM: frozenset({Mode.NORMAL, Mode.DEGRADED}),
}

#: States a dead process may leave a run in; ``resume()`` settles them on start.
IN_FLIGHT: frozenset[RunState] = frozenset({RunState.DISPATCHING, RunState.EXECUTING})
#: States after which a run never changes again (failed may still be retried by the store).
TERMINAL: frozenset[RunState] = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.SKIPPED})


def check_transition(old: RunState, new: RunState) -> None:
    """Raise :class:`IllegalTransitionError` unless ``old -> new`` is in the table."""
    if new not in RUN_TRANSITIONS[old]:
        allowed = ", ".join(sorted(RUN_TRANSITIONS[old])) or "nothing (final)"
        raise IllegalTransitionError(
            f"run cannot go from {old} to {new}; from {old} it may go to: {allowed}"
        )


def check_mode_change(old: Mode, new: Mode) -> None:
    """Raise :class:`IllegalTransitionError` unless the mode change is in the table."""
    if new not in MODE_TRANSITIONS[old]:
        allowed = ", ".join(sorted(MODE_TRANSITIONS[old]))
        raise IllegalTransitionError(
            f"mode cannot go from {old} to {new}; from {old} it may go to: {allowed}"
        )
