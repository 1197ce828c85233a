"""The state store's records: runs, modes, run changes, and what crash recovery did.

Plain frozen dataclasses, apart from the store that reads and writes them, so every
layer above can name them without importing the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.core.states import Mode, RunState


@dataclass(frozen=True, slots=True)
class RunRecord:  # pylint: disable=too-many-instance-attributes  # mirrors the runs row
    """One row of ``runs``: a run of a task as it stood when it was read."""

    run_id: str
    task_id: str
    task_hash: str
    slot: str | None
    state: RunState
    attempt: int
    max_attempts: int
    executor: str | None
    tool: str | None
    model: str | None
    tier: str | None
    mode: Mode | None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    note: str | None
    error: str | None
    result_path: str | None
    cost_usd: float | None
    seq: int

    @property
    def attempts_left(self) -> bool:
        """True while a failed run may still be retried."""
        return self.attempt < self.max_attempts


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create (:meth:`~runner.state.interface.StateStore.create_runs`): what
    :meth:`~runner.state.interface.StateStore.create_run` takes, as one record."""

    task_id: str
    task_hash: str
    max_attempts: int
    slot: str | None = None
    unique: bool = False
    """Return the run that already holds this slot or content, if one does."""


@dataclass(frozen=True, slots=True)
class ModeRecord:
    """The current system mode, when it was entered (``None``: never changed), and why."""

    mode: Mode
    since: str | None
    why: str


@dataclass(frozen=True, slots=True)
class RunChange:
    """One run state change, reported to ``on_transition`` after its transaction commits."""

    run_id: str
    task_id: str
    slot: str | None
    old: RunState | None  # None: the run was created
    new: RunState
    attempt: int
    detail: str
    at: str


@dataclass(frozen=True, slots=True)
class ResumeReport:
    """What :meth:`Store.resume` did with the runs a dead process left in flight."""

    to_idle: list[str]
    to_failed: list[str]
    to_completed: list[str]
    waiting: list[RunRecord]


@dataclass(frozen=True, slots=True)
class Settlement:
    """How crash recovery moves one run a dead process left in flight."""

    steps: list[tuple[RunState, str]]
    """The ``(state, detail)`` steps, in order (one event row each)."""
    changes: dict[str, Any] = field(default_factory=dict)
    """Columns to set with the move (``result_path``, ``error``, ``cost_usd``)."""


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One runner process on a shared ledger, as its heartbeats left it."""

    instance_id: str
    host: str
    pid: int
    role: str
    """``service`` or ``run --once``."""
    started_at: str
    heartbeat_at: str
    """The last heartbeat, in the database's clock."""
    runs_in_flight: int
    live: bool
    """False once a heartbeat is a whole lease late: its runs are others' to settle."""


@dataclass(frozen=True, slots=True)
class TaskRuns:
    """What a task's finished runs say for due-ness (:meth:`Store.task_runs`, read for a
    whole pass in one query)."""

    completed: bool
    """A run of the task's current content (``task_hash``) completed."""
    failed: bool
    """A run of its current content failed with every attempt used and its result file
    written."""
    last_slot: str | None
    """The latest ``slot`` a completed or failed run served, any content (scheduled
    tasks only; ``None`` for one-offs)."""
