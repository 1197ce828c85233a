"""``omni prune --keep N``: keep the newest N result files per task, and their rows.

A repository that commits results every 15 minutes would otherwise grow without end.
What due-ness needs is never pruned: besides the newest N, each task keeps its newest
completed result (the proof that its content ran) and every result of a run that has
not finished (waiting or in flight). Run ids sort by time, so "newest" is by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core.states import RunState
from runner.state.results import result_path
from runner.state.store import Store

if TYPE_CHECKING:
    from runner.gitops.workspace import Published
    from runner.state.resultcheck import ResultCheck

_PRUNABLE = frozenset({RunState.COMPLETED.value, RunState.FAILED.value})


@dataclass(frozen=True, slots=True)
class ResultFile:
    """One ``<run-id>.json`` as far as pruning cares."""

    path: Path
    task_id: str
    run_id: str
    state: str


@dataclass(slots=True)
class PruneReport:
    """What :func:`prune` removed (or, with ``dry_run``, would remove)."""

    removed: list[ResultFile] = field(default_factory=list)
    kept: int = 0
    rows_deleted: int = 0


def scan(results: Path, check: ResultCheck) -> list[ResultFile]:
    """Every result file under ``results`` that passes ``check`` (temp files skipped;
    the others are skipped with a warning, and never pruned)."""
    found: list[ResultFile] = []
    for folder, _dirs, names in os.walk(results):
        for result in check.scan(Path(folder), results, names=names):
            path = result_path(results, result.task_id, result.run_id)
            found.append(ResultFile(path, result.task_id, result.run_id, result.state.value))
    return found


def choose(files: list[ResultFile], keep: int) -> tuple[list[ResultFile], list[ResultFile]]:
    """Split ``files`` into (kept, removed) by the module's rule."""
    if keep < 1:
        raise ValueError("--keep must be at least 1")
    by_task: dict[str, list[ResultFile]] = {}
    for item in files:
        by_task.setdefault(item.task_id, []).append(item)
    kept: list[ResultFile] = []
    removed: list[ResultFile] = []
    for items in by_task.values():
        items.sort(key=lambda f: f.run_id, reverse=True)
        newest_completed = next((f for f in items if f.state == RunState.COMPLETED.value), None)
        for rank, item in enumerate(items):
            if rank < keep or item is newest_completed or item.state not in _PRUNABLE:
                kept.append(item)
            else:
                removed.append(item)
    return kept, removed


def prune(
    results: Path, state: Path, keep: int, check: ResultCheck, *, dry_run: bool = False
) -> PruneReport:
    """Remove old result files (``.json`` and ``.md``) and the rows of their runs."""
    kept, removed = choose(scan(results, check), keep)
    report = PruneReport(removed=sorted(removed, key=lambda f: f.path), kept=len(kept))
    if dry_run or not removed:
        return report
    for item in removed:
        item.path.with_suffix(".md").unlink(missing_ok=True)
        item.path.unlink(missing_ok=True)
        _remove_empty_folders(item.path.parent, results)
    if state.exists():
        with Store(state) as store:
            report.rows_deleted = store.delete_runs([f.run_id for f in removed])
    return report


def _remove_empty_folders(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while empty."""
    root = root.resolve()
    current = folder.resolve()
    while current != root and root in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


def prune_and_publish(
    results: Path,
    state: Path,
    keep: int,
    check: ResultCheck,
    *,
    dry_run: bool = False,
    commit: bool = False,
    push: str | None = None,
) -> tuple[PruneReport, Published | None]:
    """Prune; with ``commit`` or ``push``, first copy in the branch's result files the
    disk lacks (so the whole branch is pruned), then commit (and push) the removal
    (with ``dry_run``: only show what would go from the branch). Result files that do
    not pass ``check`` are never pruned (nor copied in)."""
    if not (commit or push):
        return prune(results, state, keep, check, dry_run=dry_run), None
    # gitpython loads only when asked for.
    from runner.gitops.workspace import GitWorkspace  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

    workspace = GitWorkspace.open(Path.cwd(), results=results, check=check)
    prepared = workspace.prepare(push, push=push is not None)
    done = prune(results, state, keep, check, dry_run=dry_run)
    if dry_run:
        return done, None
    message = f"omni: prune results to the newest {keep} per task ({len(done.removed)} removed)\n"
    kept = sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file())
    return done, workspace.publish(prepared, message, kept)
