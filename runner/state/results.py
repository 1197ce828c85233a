"""Result files: ``results/<task-id>/<run-id>.json`` and ``.md`` (DESIGN §4).

Written atomically (temp file + rename) and *before* the run's row, so a result file
on disk is the proof that a run completed: ``resume()`` trusts it after a crash.
Everything written passes through a :class:`Redactor` first.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from runner.core.files import atomic_write
from runner.core.ids import RUN_ID_LENGTH
from runner.core.states import Mode, RunState
from runner.state.markdown import render_markdown

if TYPE_CHECKING:
    from runner.core.redaction import Redactor


class Usage(BaseModel):
    """Tokens and cost of a run's model calls (empty for tool tasks)."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = 0
    """Prompt tokens over all model calls."""
    output_tokens: int = 0
    """Completion tokens over all model calls."""
    cost_usd: float | None = None
    """Cost where LiteLLM knows the price; ``None`` when unknown."""


class RunResult(BaseModel):
    """The content of ``<run-id>.json``; the field names are a contract (DESIGN §4)."""

    model_config = ConfigDict(extra="allow")

    task_id: str
    run_id: str
    task_hash: str
    slot: str | None = None
    """The schedule time the run served (ISO 8601); ``None`` for one-off tasks."""
    state: RunState
    attempt: int
    executor: str | None = None
    tool: str | None = None
    model: str | None = None
    tier: str | None = None
    mode: Mode = Mode.NORMAL
    started_at: str
    finished_at: str
    duration_s: float
    output: Any = None
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)


def result_dir(results_root: Path, task_id: str) -> Path:
    """The folder holding a task's results; ``/`` in the id nests folders."""
    return Path(result_folder(results_root, task_id))


def result_folder(results_root: str | os.PathLike[str], task_id: str) -> str:
    """:func:`result_dir` as a plain string (cheaper where every task's folder is read)."""
    return os.path.join(results_root, *task_id.split("/"))


def result_path(results_root: Path, task_id: str, run_id: str) -> Path:
    """Where a run's JSON result lives."""
    return result_dir(results_root, task_id) / f"{run_id}.json"


#: Files that may sit beside a result file ``<run-id>.json``: its Markdown view, its patch.
COMPANIONS = (".md", ".patch")
#: The longest path the system takes, in bytes (with its terminating NUL).
PATH_MAX = 4096
#: What a result's temp file name adds to the task's folder: ``/.<run-id>.json.<pid>.tmp``.
_TEMP_NAME = len("/.") + RUN_ID_LENGTH + len(".json.") + 10 + len(".tmp")


def result_path_problem(results_root: Path, task_id: str) -> str | None:
    """Why ``task_id``'s result files could not be written under ``results_root`` (their
    path would be too long for the system), or None."""
    folder = os.fsencode(os.path.abspath(result_dir(results_root, task_id)))
    longest = len(folder) + _TEMP_NAME
    if longest >= PATH_MAX:
        return (
            f"its result files' paths would be {longest:,} bytes long, over the system's"
            f" {PATH_MAX - 1:,}; shorten the id or the results folder's path"
        )
    return None


def write_result(
    results_root: Path, result: RunResult, redactor: Redactor, *, patch: bytes | None = None
) -> Path:
    """Write ``<run-id>.patch`` (a model-driven run's proposed change, when given), then
    ``<run-id>.md``, then ``<run-id>.json`` (the JSON is the proof of completion).

    All or none: when a write fails (a name too long, a full disk, a read-only folder)
    the files already written are removed and the ``OSError`` raised.
    """
    data = result.model_dump(mode="json")
    text = to_json(data, indent=2)
    if redactor.in_json(text):
        data = redactor.data(data)
        text = to_json(data, indent=2)
    folder = os.fspath(result_dir(results_root, result.task_id))
    stem = os.path.join(folder, result.run_id)
    markdown = render_markdown(data)
    first, content = (f"{stem}.patch", patch) if patch is not None else (f"{stem}.md", markdown)
    try:
        atomic_write(first, content)
    except FileNotFoundError:  # the task's first result (or its folder was pruned)
        os.makedirs(folder, exist_ok=True)
        atomic_write(first, content)
    try:
        if patch is not None:
            atomic_write(f"{stem}.md", markdown)
        atomic_write(f"{stem}.json", text + b"\n")
    except BaseException:
        for suffix in COMPANIONS:
            with contextlib.suppress(OSError):
                os.unlink(f"{stem}{suffix}")
        raise
    return Path(f"{stem}.json")
