"""``omni prune --keep N``: keep the newest N result files per task, and their rows.

A repository that commits results every 15 minutes would otherwise grow without end.
What due-ness needs is never pruned: besides the newest N, each task keeps its newest
completed result (the proof that its content ran) and every result of a run that has
not finished (waiting or in flight). Run ids sort by time, so "newest" is by name.

Names are enough to rank, so a task's newest N files are never read; a file is read only
when it could go: each older one (is it a result that counts, and did its run finish?)
and, newest first until one, the newest N to find whether a completed result is among
them. A file that does not pass the checks is never pruned (nor anything not named
``<run-id>.json``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core.ids import is_run_id
from runner.core.states import RunState
from runner.state.store import Store

if TYPE_CHECKING:
    from runner.gitops.workspace import Published
    from runner.state.resultcheck import ResultCheck

_PRUNABLE = frozenset({RunState.COMPLETED, RunState.FAILED})


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
    """The ``<run-id>.json`` files left."""
    rows_deleted: int = 0


def choose(results: Path, keep: int, check: ResultCheck) -> PruneReport:
    """What pruning ``results`` to the newest ``keep`` a task removes (by the module's
    rule), in path order; nothing is removed here."""
    if keep < 1:
        raise ValueError("--keep must be at least 1")
    report = PruneReport()
    root = os.fspath(results)
    for folder, _dirs, names in os.walk(root):
        inside = os.path.relpath(folder, root)  # once a folder, not a file
        where = "" if inside == "." else inside.replace(os.sep, "/")
        runs = sorted((n for n in names if n.endswith(".json") and is_run_id(n[:-5])), reverse=True)
        removed = _older(check, folder, where, runs, keep)
        report.kept += len(runs) - len(removed)
        report.removed.extend(removed)
    # The order of paths (by their parts), without building a path to compare.
    report.removed.sort(key=lambda f: (*f.task_id.split("/"), f.path.name))
    return report


def _older(
    check: ResultCheck, folder: str, where: str, names: list[str], keep: int
) -> list[ResultFile]:
    """The files of one folder (``names``: its result files, newest first) that go."""
    if len(names) <= keep:
        return []
    # Is the newest completed result among those kept anyway? Read until the first one.
    newest = check.in_folder(folder, where, names[:keep])
    proven = any(result.state is RunState.COMPLETED for result in newest)
    removed: list[ResultFile] = []
    for result in check.in_folder(folder, where, names[keep:]):
        if result.state is RunState.COMPLETED and not proven:
            proven = True  # the newest completed result: the proof that its content ran
        elif result.state in _PRUNABLE:
            path = Path(folder, f"{result.run_id}.json")
            removed.append(ResultFile(path, result.task_id, result.run_id, result.state.value))
    return removed


def prune(
    results: Path, state: Path, keep: int, check: ResultCheck, *, dry_run: bool = False
) -> PruneReport:
    """Remove old result files (``.json`` and ``.md``) and the rows of their runs."""
    report = choose(results, keep, check)
    if dry_run or not report.removed:
        return report
    for item in report.removed:
        item.path.with_suffix(".md").unlink(missing_ok=True)
        item.path.unlink(missing_ok=True)
        _remove_empty_folders(item.path.parent, results)
    if state.exists():
        with Store(state) as store:
            report.rows_deleted = store.delete_runs([f.run_id for f in report.removed])
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
