"""``omni status`` as plain data: mode, runs by state, recent runs, next fire times,
today's spend, and on a shared ledger the live instances. Reads the store; never
changes it. Its text is redacted (rows written before redaction reached the store, or
by another omni, may hold secrets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.core.clock import utc_now
from runner.core.states import RunState
from runner.state.backend import exists, fleet_members, location, open_store
from runner.state.spend import spent_today

if TYPE_CHECKING:
    from datetime import datetime

    from runner.core.redaction import Redactor
    from runner.defs.config import Config, ResolvedPaths


def status_snapshot(
    config: Config,
    paths: ResolvedPaths,
    now: datetime | None = None,
    *,
    redactor: Redactor | None = None,
) -> dict[str, Any]:
    """Mode, runs by state, recent runs, next fire times and today's spend, as plain data,
    every text passed through ``redactor``."""
    snapshot = _snapshot(config, paths, now or utc_now())
    return redactor.data(snapshot) if redactor is not None else snapshot


def _snapshot(config: Config, paths: ResolvedPaths, now: datetime) -> dict[str, Any]:
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
        "instances": [],
    }
    if not exists(paths):
        # No state yet (e.g. a CI run on the results branch): spend from result files.
        snapshot["spend_today_usd"] = round(spent_today(None, paths.results, now, cap), 6)
        return snapshot
    with open_store(paths) as store:
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
            for r in store.runs(limit=10)
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
        # The jobs `omni run` last scheduled; apscheduler loads only here.
        from runner.planning.schedule import next_fire_times  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

        snapshot["next_fire"] = next_fire_times(store, now)
    return snapshot
