"""``omni status`` as plain data: mode, runs by state, recent runs, next fire times,
today's spend, and on a shared ledger the live instances. Reads the store; never
changes it. Its text is redacted (rows written before redaction reached the store, or
by another omni, may hold secrets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.app.looking import looking
from runner.core.clock import utc_now
from runner.core.errors import UsageError
from runner.core.states import RunState
from runner.defs.config import SandboxMode
from runner.planning.jobs import next_fire_times
from runner.reach.sandbox import probe, sandbox_state
from runner.state.backend import fleet_members, location
from runner.state.spend import spent_today

if TYPE_CHECKING:
    from datetime import datetime

    from runner.core.redaction import Redactor
    from runner.defs.config import Config
    from runner.defs.environment import ResolvedPaths
    from runner.state.interface import StateStore


def status_snapshot(
    config: Config,
    paths: ResolvedPaths,
    now: datetime | None = None,
    *,
    redactor: Redactor | None = None,
    task_id: str | None = None,
    state: RunState | None = None,
    limit: int = 10,
) -> dict[str, Any]:
    """Mode, runs by state, recent runs (of ``task_id``, in ``state``, at most
    ``limit``), next fire times and today's spend, as plain data, every text passed
    through ``redactor``."""
    snapshot = _snapshot(config, paths, now or utc_now(), task_id, state, limit)
    return redactor.data(snapshot) if redactor is not None else snapshot


def _snapshot(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    config: Config,
    paths: ResolvedPaths,
    now: datetime,
    task_id: str | None,
    state: RunState | None,
    limit: int,
) -> dict[str, Any]:
    budget = config.router.budget
    cap = config.limits.result_file_bytes
    snapshot: dict[str, Any] = {
        "state_file": location(paths),
        "mode": {"mode": "normal", "since": None, "why": ""},
        "runs_by_state": {state.value: 0 for state in RunState},
        "recent_runs": [],
        "spend_today_usd": 0.0,
        "budget": {"per_run_usd": budget.per_run_usd, "per_day_usd": budget.per_day_usd},
        "next_fire": [],
        "sandbox": sandbox_report(config),
        "instances": [],
    }
    with looking(paths) as store:
        if task_id is not None:
            _check_known(config, paths, store, task_id)
        if store is None:
            # No state yet (e.g. a CI run on the results branch): spend from result files.
            snapshot["spend_today_usd"] = round(spent_today(None, paths.results, now, cap), 6)
            return snapshot
        mode = store.mode()
        snapshot["mode"] = {"mode": mode.mode.value, "since": mode.since, "why": mode.why}
        snapshot["runs_by_state"] = {s.value: n for s, n in store.counts_by_state().items()}
        snapshot["recent_runs"] = [
            {
                "task_id": r.task_id,
                "run_id": r.run_id,
                "state": r.state.value,
                "attempt": r.attempt,
                "executor": r.executor,
                "model": r.model,
                "tier": r.tier,
                "cost_usd": r.cost_usd,
                "updated_at": r.updated_at,
                "error": r.error,
                "note": r.note,
            }
            for r in store.runs(task_id=task_id, state=state, limit=limit)
        ]
        snapshot["spend_today_usd"] = round(spent_today(store, paths.results, now, cap), 6)
        snapshot["instances"] = [
            {
                "host": i.host,
                "pid": i.pid,
                "role": i.role,
                "runs_in_flight": i.runs_in_flight,
                "last_heartbeat": i.heartbeat_at,
                "started_at": i.started_at,
                "id": i.instance_id,
            }
            for i in fleet_members(store)
            if i.live
        ]
        # The jobs `omni run` last scheduled.
        snapshot["next_fire"] = next_fire_times(store, now)
    return snapshot


def _check_known(
    config: Config, paths: ResolvedPaths, store: StateStore | None, task_id: str
) -> None:
    """:class:`UsageError` when no run in the store and no task file has ``task_id`` (a
    typo, not a task that has not run yet)."""
    if store is not None and store.runs(task_id=task_id, limit=1):
        return
    if not paths.tasks.exists():
        raise UsageError(f"--task {task_id!r}: no run in {location(paths)} has this task id")
    # The task model loads only on this path: a plain `omni status` never needs it.
    from runner.app.passes import load_pass  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

    load_pass(config, paths, task_id)  # raises naming the id (and the likely one)


def sandbox_report(config: Config) -> dict[str, Any]:
    """How model-driven runs are confined here (``mode``, ``kind``, ``warning``): bubblewrap
    is tried once unless ``sandbox: off``."""
    mode = config.sandbox
    return sandbox_state(mode, None if mode is SandboxMode.OFF else probe()).as_dict()
