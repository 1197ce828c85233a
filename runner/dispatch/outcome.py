"""What the dispatcher hands on: one attempt's outcome before it is recorded, a retry
to come, and a finished run (its final row and result file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from runner.core.states import RunState
    from runner.defs.tasks import Task
    from runner.dispatch.agent import Transcript
    from runner.dispatch.isolation import Isolated
    from runner.state.records import RunRecord


@dataclass(frozen=True, slots=True)
class Finished:
    """A run the dispatcher is done with: its final row and result file (if any)."""

    task: Task
    run: RunRecord
    result_path: Path | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:  # pylint: disable=too-many-instance-attributes  # one attempt's whole record
    """How an attempt ended, before it is recorded."""

    task: Task
    run: RunRecord
    state: RunState
    output: Any = None
    error: str | None = None
    executor: str | None = None
    started: float | None = None
    transcript: Transcript | None = None
    """A prompt run's record (model, tier, usage, turns, tool calls); None for tool runs."""
    note: str | None = None
    """Why a run waits (brainstem mode)."""
    earlier: tuple[dict[str, Any], ...] = ()
    """The earlier attempts' errors (``attempt``, ``error``), for the result file."""
    isolated: Isolated | None = None
    """A model-driven run's sandbox and proposed change; None for tool runs."""


@dataclass(frozen=True, slots=True)
class Retry:
    """An attempt that failed and was recorded ``failed``; the run has attempts left."""

    failed: RunRecord
    """The run's row as recorded ``failed`` (the retry moves this record on)."""
    attempt: int
    error: str
    retry_after: float | None
    """Seconds the far end asked to wait, when it said."""
