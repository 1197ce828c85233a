"""The commands that look and never change anything: ``omni tasks`` (every task, its
schedule, next fire and last run), ``omni show`` (one run, or one task, in full),
``omni route`` (executor, model chain, next fire) and ``run --once --dry-run`` (what a
pass would run, what not, and why).

They read the tasks folder, the result files and, when it exists, the state database
through a read-only connection: no row, no lock file, no new state file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.app.looking import looking
from runner.app.passes import due_rule, load_pass, waits_for
from runner.core.clock import iso
from runner.core.errors import FileRefusedError, TaskFileError, UsageError
from runner.core.files import read_regular
from runner.core.ids import is_run_id
from runner.defs.config import BUILTIN
from runner.defs.problems import did_you_mean
from runner.defs.routing import choose_executor, choose_model, model_list_names
from runner.defs.tasks import Task, load_task_file, root_for
from runner.planning.plan import Orphan, Planned, Selection, Skipped, orphans, preview
from runner.planning.slots import next_slot
from runner.state.results import result_dir

if TYPE_CHECKING:
    from datetime import datetime

    from runner.defs.config import Config
    from runner.defs.environment import ResolvedPaths
    from runner.state.interface import StateStore
    from runner.state.records import RunRecord


# -- run --once --dry-run ---------------------------------------------------------------


@dataclass(slots=True)
class DryRun:
    """What ``run --once`` would do now, and why; nothing was run or written."""

    due: list[Planned] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    """Unfinished runs the pass would close ``skipped`` (their task file is gone)."""
    problems: list[TaskFileError] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when a task file is invalid (as ``run --once`` would), else 0."""
        return 1 if self.problems else 0


def dry_run(config: Config, paths: ResolvedPaths, selection: Selection, now: datetime) -> DryRun:
    """What ``run --once`` with ``selection`` would run at ``now``, without running it."""
    loaded = load_pass(config, paths, selection.task_id)
    report = DryRun(problems=loaded.problems, ignored=loaded.ignored)
    with looking(paths) as store:
        rule = due_rule(config, paths.results, now)
        report.due, report.skipped = preview(
            loaded.tasks, store, selection, rule, waits_for=waits_for(config)
        )
        if store is not None:
            report.orphans = orphans(loaded.tasks, store)
    return report


def dry_run_json(report: DryRun, config: Config) -> dict[str, Any]:
    """``--dry-run --json``."""
    configured = {BUILTIN, *config.mcp_servers}
    return {
        "dry_run": True,
        "exit_code": report.exit_code,
        "due": [
            {
                "task_id": p.task.id,
                "slot": p.slot,
                "why": p.reason,
                "executor": choose_executor(p.task.spec, config.router, configured).executor,
            }
            for p in report.due
        ],
        "not_due": [
            {"task_id": s.task_id, "why": s.reason, "state": s.state.value if s.state else None}
            for s in report.skipped
        ],
        "would_close": [
            {"run_id": o.run.run_id, "task_id": o.run.task_id, "why": o.reason}
            for o in report.orphans
        ],
        "problems": [p.render() for p in report.problems],
        "ignored": [str(p) for p in report.ignored],
    }


# -- omni tasks ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks ``omni tasks`` lists; ``None`` everywhere lists all."""

    kind: str | None = None
    """``tool`` or ``prompt``."""
    executor: str | None = None
    state: str | None = None
    """The last run's state (``none``: never ran)."""
    enabled: bool | None = None
    due: bool | None = None


def task_rows(
    config: Config, paths: ResolvedPaths, now: datetime, only: TaskFilter
) -> tuple[list[dict[str, Any]], list[TaskFileError], list[Path]]:
    """One row a task: id, enabled, kind, tool, executor, schedule, due now or the next
    fire time, why, and the last run (state and time); plus the problems and ignored
    files of the tasks folder."""
    loaded = load_pass(config, paths)
    rule = due_rule(config, paths.results, now)
    rows = []
    with looking(paths) as store:
        due, skipped = preview(loaded.tasks, store, Selection(), rule, waits_for=waits_for(config))
        why = {p.task.id: p.reason for p in due} | {s.task_id: s.reason for s in skipped}
        due_ids = {p.task.id for p in due}
        newest = store.newest_runs([t.id for t in loaded.tasks]) if store is not None else {}
        for task in loaded.tasks:
            row = _task_row(config, task, now)
            row |= {"due_now": task.id in due_ids, "why": why.get(task.id, "")}
            row["last_run"] = _last_run(
                newest.get(task.id), paths.results, task.id, config.limits.result_file_bytes
            )
            if _keep(row, only):
                rows.append(row)
    return rows, loaded.problems, loaded.ignored


def _task_row(config: Config, task: Task, now: datetime) -> dict[str, Any]:
    spec = task.spec
    chosen = choose_executor(spec, config.router, {BUILTIN, *config.mcp_servers})
    zone = spec.timezone or config.schedule.timezone
    fire = next_slot(spec.schedule, zone, now) if spec.schedule and spec.enabled else None
    return {
        "id": task.id,
        "path": str(task.path),
        "enabled": spec.enabled,
        "kind": "prompt" if task.is_prompt else "tool",
        "tool": spec.tool,
        "executor": chosen.executor,
        "executor_configured": chosen.configured,
        "schedule": spec.schedule,
        "timezone": zone if spec.schedule else None,
        "next_fire": iso(fire) if fire is not None else None,
    }


def _keep(row: dict[str, Any], only: TaskFilter) -> bool:
    last = row["last_run"]["state"] if row["last_run"] else "none"
    checks = (
        (only.kind, row["kind"]),
        (only.executor, row["executor"]),
        (only.state, last),
        (only.enabled, row["enabled"]),
        (only.due, row["due_now"]),
    )
    return all(wanted is None or wanted == value for wanted, value in checks)


def _last_run(
    run: RunRecord | None, results: Path, task_id: str, max_bytes: int
) -> dict[str, Any] | None:
    """The task's newest run: the store's (``run``), else from its newest result file."""
    if run is not None:
        return {"run_id": run.run_id, "state": run.state.value, "at": run.updated_at}
    files = sorted(result_dir(results, task_id).glob("*.json"), reverse=True)
    for path in files:
        data = _read_json(path, max_bytes)
        if data is not None and data.get("task_id") == task_id:
            return {
                "run_id": data.get("run_id"),
                "state": data.get("state"),
                "at": data.get("finished_at"),
            }
    return None


def _newest(store: StateStore | None, task_id: str) -> RunRecord | None:
    found = store.runs(task_id=task_id, limit=1) if store is not None else []
    return found[0] if found else None


def _read_json(path: Path, max_bytes: int) -> dict[str, Any] | None:
    try:
        data = json.loads(read_regular(path, max_bytes, follow_symlinks=False))
    except (OSError, ValueError, FileRefusedError):
        return None
    return data if isinstance(data, dict) else None


def _read_view(path: Path, max_bytes: int) -> str | None:
    """A result's ``.md`` view as text, or why it is not shown. Result files are input
    (the results branch): a FIFO, a link, a folder or a huge file is not read, and bytes
    that are not UTF-8 are shown replaced."""
    try:
        raw = read_regular(path, max_bytes, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except FileRefusedError as exc:
        return f"(not shown: {exc.reason})"
    except OSError as exc:
        return f"(not shown: cannot read: {exc.strerror or exc})"
    return raw.decode(errors="replace")


# -- omni show -------------------------------------------------------------------------


def show(config: Config, paths: ResolvedPaths, ident: str, now: datetime) -> dict[str, Any]:
    """One run (by id or a unique prefix of it) or one task (by id) in full: for a
    run, its row, result, ``.md`` view and every state change; for a task, its
    definition, next fire, recent runs and its newest run in full."""
    cap = config.limits.result_file_bytes
    with looking(paths) as store:
        if is_run_id(ident.upper()):
            return _run_view(store, paths.results, ident.upper(), cap)
        task = _find_task(config, paths, ident)
        if task is not None:
            return _task_view(config, paths, store, task, now)
        if store is not None and store.runs(task_id=ident, limit=1):
            return _gone_task_view(paths, store, ident, cap)
        run_id = _run_by_prefix(store, paths.results, ident)
        return _run_view(store, paths.results, run_id, cap)


def _find_task(config: Config, paths: ResolvedPaths, task_id: str) -> Task | None:
    if not paths.tasks.exists():
        return None
    loaded = load_pass(config, paths)
    return next((t for t in loaded.tasks if t.id == task_id), None)


def _run_by_prefix(store: StateStore | None, results: Path, prefix: str) -> str:
    """The one run whose id starts with ``prefix``; :class:`UsageError` for none or
    several."""
    text = prefix.upper()
    ids: list[str] = []
    if store is not None and text.isalnum():
        ids = [r.run_id for r in store.runs_by_id_prefix(text)]
    if not ids and text.isalnum():
        ids = sorted({p.stem for p in results.rglob(f"{text}*.json") if is_run_id(p.stem)})
    if len(ids) == 1:
        return ids[0]
    if ids:
        raise UsageError(f"{prefix!r} matches several runs: {', '.join(ids[:5])}; give more of it")
    raise UsageError(f"{prefix!r} is neither a task id nor a run id (or the start of one)")


def _run_view(
    store: StateStore | None, results: Path, run_id: str, max_bytes: int
) -> dict[str, Any]:
    run = store.get_run(run_id) if store is not None else None
    path = Path(run.result_path) if run is not None and run.result_path else None
    if path is None:
        found = list(results.rglob(f"{run_id}.json"))
        path = found[0] if found else None
    data = _read_json(path, max_bytes) if path is not None else None
    if run is None and data is None:
        raise UsageError(f"no run {run_id} in the state database or under {results}")
    markdown = path.with_suffix(".md") if path is not None else None
    view = _read_view(markdown, max_bytes) if markdown is not None else None
    events = store.events(run_id) if store is not None and run is not None else []
    return {
        "run": _run_json(run) if run is not None else None,
        "result_path": str(path) if path is not None and data is not None else None,
        "result": data,
        "markdown": view,
        "events": [
            {"at": e["at"], "from": e["from_state"], "to": e["to_state"], "detail": e["detail"]}
            for e in events
        ],
    }


def _run_json(run: RunRecord) -> dict[str, Any]:
    shown = dataclasses.asdict(run)
    return shown | {"state": run.state.value, "mode": run.mode.value if run.mode else None}


def _task_view(
    config: Config, paths: ResolvedPaths, store: StateStore | None, task: Task, now: datetime
) -> dict[str, Any]:
    cap = config.limits.result_file_bytes
    last = _last_run(_newest(store, task.id), paths.results, task.id, cap)
    return {
        "task": _task_row(config, task, now) | {"spec": task.spec.model_dump(exclude_none=True)},
        "runs": _recent_runs(store, task.id),
        "latest": _run_view(store, paths.results, last["run_id"], cap) if last else None,
    }


def _gone_task_view(
    paths: ResolvedPaths, store: StateStore, task_id: str, max_bytes: int
) -> dict[str, Any]:
    """A task the store knows runs of but no task file defines any more."""
    last = _last_run(_newest(store, task_id), paths.results, task_id, max_bytes)
    return {
        "task": {"id": task_id, "path": None, "gone": "no task file defines this task now"},
        "runs": _recent_runs(store, task_id),
        "latest": _run_view(store, paths.results, last["run_id"], max_bytes) if last else None,
    }


def _recent_runs(store: StateStore | None, task_id: str) -> list[dict[str, Any]]:
    if store is None:
        return []
    return [
        {
            "run_id": r.run_id,
            "state": r.state.value,
            "attempt": r.attempt,
            "slot": r.slot,
            "updated_at": r.updated_at,
            "detail": r.error or r.note or r.result_path or "",
        }
        for r in store.runs(task_id=task_id, limit=10)
    ]


# -- omni route ------------------------------------------------------------------------


def route(config: Config, paths: ResolvedPaths, ident: str, now: datetime) -> dict[str, Any]:
    """Where a task (a file, or a task id in the tasks folder) would run, on which
    models in which order, and when it fires next; nothing runs."""
    task = _route_target(config, paths, ident)
    spec = task.spec
    route_ = choose_executor(spec, config.router, {BUILTIN, *config.mcp_servers})
    row = _task_row(config, task, now)
    decision: dict[str, Any] = {
        "task": task.id,
        "file": str(task.path),
        "executor": route_.executor,
        "why": route_.reason,
        "configured": route_.configured,
        "kind of task": "prompt (agent run)" if task.is_prompt else f"tool: {spec.tool}",
        "schedule": spec.schedule or "none (runs once per content)",
        "next fire": row["next_fire"] or ("paused" if not spec.enabled else "—"),
    }
    server = config.mcp_servers.get(route_.executor)
    if task.is_prompt and server is not None and server.agent_tool:
        decision["models"] = f"none: the prompt goes to {server.agent_tool!r}"
    elif task.is_prompt:
        choice = choose_model(spec, config.router, model_list_names(config))
        chain = " -> ".join(f"{s.model} ({s.tier})" for s in choice.steps)
        decision["models"] = chain or "none"
        decision["models why"] = choice.reason
    return decision


def _route_target(config: Config, paths: ResolvedPaths, ident: str) -> Task:
    path = Path(ident)
    if path.exists() and not path.is_dir():  # a FIFO or device is refused by the loader
        root = root_for(path, paths.tasks)
        task = load_task_file(path.resolve(), root.resolve(), config.limits.task_file_bytes)
        return dataclasses.replace(task, path=path)  # shown as the user named it
    found = _find_task(config, paths, ident)
    if found is not None:
        return found
    known = [t.id for t in load_pass(config, paths).tasks] if paths.tasks.exists() else []
    guess = did_you_mean(ident, known)
    hint = f"; did you mean {guess!r}?" if guess else ""
    raise UsageError(f"{ident!r} is neither a task file nor a task id in {paths.tasks}{hint}")
