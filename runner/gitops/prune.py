"""``omni prune --keep N``: keep the newest N result files per task, and their rows.

A repository that commits results every 15 minutes would otherwise grow without end.
What due-ness needs is never pruned: besides the newest N, each task keeps its newest
completed result (the proof that its content ran) and every result of a run that has
not finished (waiting or in flight). Run ids sort by time, so "newest" is by name.

Names are enough to rank, so a task's newest N files are never read. A file is read
only when it could go and the state database does not hold its run as finished: each
older one (is it a result that counts, and did its run finish?) and, newest first until
one, the newest N to find whether a completed result is among them. A file that does not
pass the checks is never pruned (nor anything not named ``<run-id>.json``); one whose
finished run the database holds goes by the row (the database is omni's own). Runs
created since the start of yesterday (UTC) are never pruned: today's spend counts them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core.ids import is_run_id, time_prefix
from runner.core.states import RunState
from runner.state.results import COMPANIONS
from runner.state.spend import midnight_of
from runner.state.store import Store

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from datetime import datetime

    from runner.gitops.workspace import Published
    from runner.state.interface import StateStore
    from runner.state.resultcheck import ResultCheck

log = logging.getLogger(__name__)

_PRUNABLE = frozenset({RunState.COMPLETED, RunState.FAILED})


@dataclass(frozen=True, slots=True)
class ResultFile:
    """One ``<run-id>.json`` as far as pruning cares."""

    path: str
    """Where it lies (a plain string: there may be a hundred thousand)."""
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


def choose(
    results: Path, keep: int, check: ResultCheck, store: StateStore | None = None
) -> PruneReport:
    """What pruning ``results`` to the newest ``keep`` a task removes (by the module's
    rule), in path order; nothing is removed here. ``store``: the state database, whose
    finished runs' files need not be read."""
    if keep < 1:
        raise ValueError("--keep must be at least 1")
    report = PruneReport()
    root = os.fspath(results)
    recent = recent_floor(check.now)
    for folder, _dirs, names in os.walk(root):
        runs = sorted((n for n in names if n.endswith(".json") and is_run_id(n[:-5])), reverse=True)
        # Newest first: the runs created since the start of yesterday lead the list.
        keep_here = max(keep, sum(1 for n in runs if n[:10] >= recent))
        if len(runs) > keep_here:
            inside = os.path.relpath(folder, root)  # once a folder, not a file
            where = "" if inside == "." else inside.replace(os.sep, "/")
            finished = store.finished_runs(where) if store is not None and where else {}
            removed = _older(_Folder(check, folder, where, finished), runs, keep_here)
            report.removed.extend(removed)
            report.kept -= len(removed)
        report.kept += len(runs)
    # The order of paths (by their parts), without building a path to compare.
    report.removed.sort(key=lambda f: (*f.task_id.split("/"), f.run_id))
    return report


def recent_floor(now: datetime) -> str:
    """The run-id prefix of the start of yesterday (UTC): runs created since are never
    pruned. Today's spend counts them (by their rows and files), so pruning them would
    lower it and loosen the daily cap; yesterday's too, for a run finished after midnight."""
    return time_prefix(midnight_of(now) - timedelta(days=1))


@dataclass(frozen=True, slots=True)
class _Folder:
    """One folder's result files: how to read them, and what the store knows of them."""

    check: ResultCheck
    folder: str
    where: str
    """Its path under the results folder (a task's folder: its id)."""
    finished: Mapping[str, RunState]
    """The store's finished runs of that task, by run id."""

    def states(self, names: Iterable[str]) -> Iterator[tuple[str, RunState]]:
        """Each of ``names`` that counts, in order, with its run's state: the store's
        when it holds the run as finished, else the file's (read only then; a file that
        does not pass the checks is left out)."""
        for name in names:
            state = self.finished.get(name[:-5])
            if state is not None:
                yield name, state
                continue
            for result in self.check.in_folder(self.folder, self.where, (name,)):
                yield name, result.state


def _older(folder: _Folder, names: list[str], keep: int) -> list[ResultFile]:
    """The files of one folder (``names``: its result files, newest first) that go."""
    # Is the newest completed result among those kept anyway? Look until the first one.
    newest = folder.states(names[:keep])
    proven = any(state is RunState.COMPLETED for _name, state in newest)
    removed: list[ResultFile] = []
    for name, state in folder.states(names[keep:]):
        if state is RunState.COMPLETED and not proven:
            proven = True  # the newest completed result: the proof that its content ran
        elif state in _PRUNABLE:
            path = os.path.join(folder.folder, name)
            removed.append(ResultFile(path, folder.where, name[:-5], state.value))
    return removed


def prune(
    results: Path, state: Path, keep: int, check: ResultCheck, *, dry_run: bool = False
) -> PruneReport:
    """Remove old result files (``.json`` and ``.md``) and the rows of their runs."""
    if not state.exists():
        report = choose(results, keep, check)
        return report if dry_run else _remove(report, results)
    with Store(state, read_only=dry_run) as store:
        report = choose(results, keep, check, store)
        if dry_run or not report.removed:
            return report
        _remove(report, results)
        report.rows_deleted = store.delete_runs([f.run_id for f in report.removed])
    return report


def _remove(report: PruneReport, results: Path) -> PruneReport:
    """Remove the files ``report`` lists (their ``.md`` and ``.patch`` first), and
    folders left empty. What cannot be removed (a folder named like a companion, say)
    stays, with a warning; the rest goes on."""
    for item in report.removed:
        stem = item.path[:-5]
        for name in (*(stem + suffix for suffix in COMPANIONS), item.path):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                shown = os.path.relpath(name, results).replace(os.sep, "/")
                log.warning("prune: %s left in place: %s", shown, exc.strerror or exc)
        _remove_empty_folders(Path(item.path).parent, results)
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
