"""The plan of a pass: which tasks run now, and their run rows.

Used by ``run --once`` and by service mode alike, so both decide due-ness with the same
rule (:mod:`runner.planning.dueness`) and reuse the same open runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core.clock import iso, utc_now
from runner.core.errors import StaleRunError
from runner.core.states import RunState
from runner.planning.dueness import (
    Due,
    DueRule,
    History,
    decide,
    history_for,
    history_from_runs,
)
from runner.state.records import NewRun

if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.defs.tasks import Task
    from runner.state.interface import StateStore
    from runner.state.records import RunRecord


@dataclass(frozen=True, slots=True)
class Shard:
    """``--shard K/N``: this job runs the tasks whose id hashes to K - 1 modulo N."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``K/N`` (1 <= K <= N); raises ``ValueError`` with a clear message."""
        try:
            k, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard wants K/N like 2/5, got {text!r}") from None
        if n < 1 or not 1 <= k <= n:
            raise ValueError(f"--shard {text}: K must be in 1..N and N >= 1")
        return cls(k, n)

    def owns(self, task_id: str) -> bool:
        """True when ``task_id`` belongs to this shard."""
        digest = int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big")
        return digest % self.count == self.index - 1


@dataclass(frozen=True, slots=True)
class Skipped:
    """A task that did not run this time, and why (in words for a person)."""

    task_id: str
    reason: str
    state: RunState | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """Which tasks a pass considers, and whether it runs them whatever due-ness says."""

    task_id: str | None = None
    """Only this task (``--task``)."""
    force: bool = False
    """Run even if done or not due (``--force``); a forced run serves no slot."""
    shard: Shard | None = None
    """Only this shard's tasks (``--shard K/N``)."""

    def picks(self, task_id: str) -> bool:
        """True when the task is one this pass considers."""
        if self.task_id is not None and task_id != self.task_id:
            return False
        return self.shard is None or self.shard.owns(task_id)


def plan(
    tasks: list[Task],
    store: StateStore,
    selection: Selection,
    rule: DueRule | None = None,
    *,
    waits_for: Callable[[Task], str | None] | None = None,
) -> tuple[list[tuple[Task, RunRecord]], list[Skipped]]:
    """Decide which tasks run now (due-ness from the store and the result files, see
    :mod:`runner.planning.dueness`; without ``rule``, from the store alone as of now); create (or
    reuse) their run rows. A task for which ``waits_for`` gives a reason (a prompt task
    with no model configured) stays idle."""
    rule = rule or DueRule(now=utc_now(), results=None)
    chosen = [task for task in tasks if selection.picks(task.id)]
    store.upsert_tasks(chosen)
    known = store.task_runs(chosen)
    verdicts = [
        _verdict(task, history_from_runs(known.get(task.id), task), selection, rule)
        for task in chosen
    ]
    runs = iter(_runs_for([v for v in verdicts if isinstance(v, Planned)], store, selection))
    runnable: list[tuple[Task, RunRecord]] = []
    skipped: list[Skipped] = []
    for verdict in verdicts:
        ready = verdict if isinstance(verdict, Skipped) else _ready(verdict, next(runs), store)
        if isinstance(ready, Skipped):
            skipped.append(ready)
        elif waits_for is not None and (reason := waits_for(ready[0])) is not None:
            if ready[1].note != reason:
                store.set_note(ready[1].run_id, reason)
            skipped.append(Skipped(ready[0].id, reason, RunState.IDLE))
        else:
            runnable.append(ready)
    return runnable, skipped


def _runs_for(due: list[Planned], store: StateStore, selection: Selection) -> list[RunRecord]:
    """The run of each due task: its open run for the slot (or content), else a new one;
    a pass's new runs are created in one transaction (thousands of new task files, one
    commit)."""
    found = []
    for planned in due:
        task = planned.task
        run = store.open_run(task.id, task.task_hash, planned.slot)
        if selection.force and run is not None and run.slot is not None:
            run = None  # a forced run serves no slot: it leaves that slot's run be
        found.append(run)
    wanted = [
        NewRun(
            p.task.id, p.task.task_hash, p.task.spec.retries + 1, p.slot, unique=not selection.force
        )
        for p, run in zip(due, found, strict=True)
        if run is None
    ]
    created = iter(store.create_runs(wanted))
    return [run if run is not None else next(created) for run in found]


def _ready(planned: Planned, run: RunRecord, store: StateStore) -> tuple[Task, RunRecord] | Skipped:
    """The task and its run, ready to claim (a failed run with attempts left back to
    idle); skipped when another content's run already serves the slot."""
    task = planned.task
    if run.task_hash != task.task_hash:
        return Skipped(
            task.id, f"slot {run.slot} is served by run {run.run_id} of an earlier content"
        )
    if run.state is RunState.FAILED:
        run = _retry(store, run)
    return task, run


def _retry(store: StateStore, run: RunRecord) -> RunRecord:
    """A failed run with attempts left, back to idle; if another instance got there
    first, the run as it now stands (the claim decides who runs it)."""
    try:
        return store.transition(run, RunState.IDLE, detail="retry on next run --once")
    except StaleRunError:
        return store.get_run(run.run_id) or run


@dataclass(frozen=True, slots=True)
class Planned:
    """A task a pass runs now, the slot it serves (``None``: a one-off or a forced run),
    and why, in words for a person."""

    task: Task
    slot: str | None
    reason: str


def preview(
    tasks: list[Task],
    store: StateStore | None,
    selection: Selection,
    rule: DueRule,
    *,
    waits_for: Callable[[Task], str | None] | None = None,
) -> tuple[list[Planned], list[Skipped]]:
    """What :func:`plan` would decide, writing nothing (``run --once --dry-run``,
    ``omni tasks``); ``store`` ``None`` (no state file yet) decides from the result
    files alone."""
    due: list[Planned] = []
    skipped: list[Skipped] = []
    chosen = [task for task in tasks if selection.picks(task.id)]
    known = store.task_runs(chosen) if store is not None else {}
    for task in chosen:
        verdict = _verdict(task, history_from_runs(known.get(task.id), task), selection, rule)
        if isinstance(verdict, Skipped):
            skipped.append(verdict)
        elif waits_for is not None and (reason := waits_for(task)) is not None:
            skipped.append(Skipped(task.id, reason, RunState.IDLE))
        else:
            due.append(verdict)
    return due, skipped


def _verdict(task: Task, known: History, selection: Selection, rule: DueRule) -> Planned | Skipped:
    """Whether ``task`` runs now, and why (not), given what the store ``known``."""
    if not task.spec.enabled and not (selection.force and selection.task_id == task.id):
        # A paused task runs only when named: `--task ID --force`, never by a bare --force.
        return Skipped(task.id, "disabled (enabled: false)")
    if selection.force:
        return Planned(task, None, "--force")  # a forced run serves no slot: an extra run
    decision = decide(task, history_for(task, known, rule), rule)
    if decision.verdict is not Due.RUN:
        done = {Due.DONE: RunState.COMPLETED, Due.FAILED: RunState.FAILED}.get(decision.verdict)
        return Skipped(task.id, decision.reason, done)
    slot = iso(decision.slot) if decision.slot is not None else None
    return Planned(task, slot, decision.reason)


@dataclass(frozen=True, slots=True)
class Orphan:
    """An unfinished run whose task is gone, and why (the ``skipped`` event's detail)."""

    run: RunRecord
    reason: str


def orphans(tasks: list[Task], store: StateStore) -> list[Orphan]:
    """Unfinished runs (idle, waiting, a retry due) of tasks no file defines any more:
    their recorded file is gone, or now defines another task. A task whose file is still
    there but invalid keeps its runs (fixing the file takes them up again)."""
    known = {task.id for task in tasks}
    gone = [run for run in store.unfinished_runs() if run.task_id not in known]
    if not gone:
        return []
    files = {task.path.absolute(): task.id for task in tasks}
    paths = store.task_paths()
    found = []
    for run in gone:
        recorded = paths.get(run.task_id)
        if recorded is None:
            continue  # never loaded by a pass that records tasks: nothing to go by
        path = Path(recorded)
        if path in files:
            reason = f"task file {path} now defines task {files[path]!r}"
        elif _gone(path):
            reason = f"task file {path} is gone"
        else:
            continue
        found.append(Orphan(run, reason))
    return found


def _gone(path: Path) -> bool:
    """``path`` is surely not there; a file that cannot be looked at (an unreadable
    folder) may still be, and keeps its runs."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def orphans_of(task_id: str, reason: str, store: StateStore) -> list[Orphan]:
    """The unfinished runs of ``task_id``, whose file went away for ``reason`` (service
    mode hears of it from its sources)."""
    return [Orphan(run, reason) for run in store.unfinished_runs() if run.task_id == task_id]


def close_orphans(found: list[Orphan], store: StateStore) -> list[RunRecord]:
    """Close each orphan ``skipped``, its reason as the event's detail and the run's note;
    one that moved meanwhile (another instance on a shared ledger claimed or closed it)
    is left to whoever moved it."""
    closed = []
    for orphan in found:
        try:
            closed.append(
                store.transition(
                    orphan.run, RunState.SKIPPED, detail=orphan.reason, note=orphan.reason
                )
            )
        except StaleRunError:
            continue
    return closed
