"""Result files as anyone able to write the results folder (or push the results branch)
could make them: plausible by default, each field open to forgery."""

from __future__ import annotations

from typing import Any

from runner.core.clock import parse_time
from runner.core.ids import new_run_id

#: When the planted runs ran, by default.
EARLIER = "2026-11-21T09:00:00.000Z"


def result_data(task_id: str, task_hash: str, **fields: Any) -> dict[str, Any]:
    """A result file's content; ``fields`` override the plausible defaults."""
    data: dict[str, Any] = {
        "task_id": task_id,
        "run_id": new_run_id(parse_time(EARLIER)),
        "task_hash": task_hash,
        "slot": None,
        "state": "completed",
        "attempt": 1,
        "started_at": EARLIER,
        "finished_at": EARLIER,
        "duration_s": 0.1,
    }
    return data | fields
