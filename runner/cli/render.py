"""What the CLI prints: status, run summaries, progress, doctor's checks; rich for people,
dicts for ``--json``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from runner.core.states import RunState

if TYPE_CHECKING:
    from types import TracebackType

    from rich.console import Console

    from runner.app.doctor import Diagnosis
    from runner.app.once import OnceReport
    from runner.defs.config import ResolvedPaths
    from runner.dispatch.dispatcher import Finished

_STYLE = {
    RunState.COMPLETED: "green",
    RunState.FAILED: "red",
    RunState.WAITING: "yellow",
    RunState.IDLE: "dim",
    RunState.DISPATCHING: "cyan",
    RunState.EXECUTING: "cyan",
}


def print_status(out: Console, snap: dict[str, Any]) -> None:
    """The status snapshot for a person."""
    mode = snap["mode"]
    since = f" since {mode['since']}" if mode["since"] else ""
    why = f" ({mode['why']})" if mode["why"] else ""
    out.print(f"[bold]mode[/bold]: {mode['mode']}{since}{why}")
    counts = "  ".join(
        f"[{_STYLE[RunState(s)]}]{s} {n}[/]" for s, n in snap["runs_by_state"].items()
    )
    out.print(f"[bold]runs[/bold]: {counts}")
    cap, run_cap = snap["budget"]["per_day_usd"], snap["budget"]["per_run_usd"]
    out.print(
        f"[bold]spend today[/bold]: ${snap['spend_today_usd']:.4f}"
        + (f" of ${cap:.2f}" if cap is not None else " (no daily cap)")
        + (f"; per run at most ${run_cap:.2f}" if run_cap is not None else "; no per-run cap")
    )
    if snap.get("next_fire"):
        fires = Table(title="next fire times (as `omni run` scheduled them)", title_justify="left")
        for column in ("task", "schedule", "timezone", "next fire"):
            fires.add_column(column)
        for job in snap["next_fire"]:
            fires.add_row(job["task_id"], job["schedule"], job["timezone"], job["next_fire"] or "")
        out.print(fires)
    if snap.get("instances"):
        live = Table(title=f"live instances on {snap['state_file']}", title_justify="left")
        for column in ("host", "pid", "role", "runs in flight", "last heartbeat"):
            live.add_column(column)
        for one in snap["instances"]:
            live.add_row(
                one["host"],
                str(one["pid"]),
                one["role"],
                str(one["runs_in_flight"]),
                one["last_heartbeat"],
            )
        out.print(live)
    if not snap["recent_runs"]:
        out.print(f"no runs yet in {snap['state_file']}; try `omni run --once`")
        return
    table = Table(title="recent runs", title_justify="left")
    for column in ("task", "state", "attempt", "executor", "updated", "error / note"):
        table.add_column(column)
    for run in snap["recent_runs"]:
        style = _STYLE[RunState(run["state"])]
        table.add_row(
            run["task_id"],
            f"[{style}]{run['state']}[/]",
            str(run["attempt"]),
            run["executor"] or "",
            run["updated_at"],
            (run["error"] or run["note"] or "")[:60],
        )
    out.print(table)


class RunProgress:
    """A progress bar on stderr while ``run --once`` works (silent for ``--json``)."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self._progress = Progress(
            TextColumn("running"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self._bar = self._progress.add_task("", total=None)

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def start(self, total: int) -> None:
        """The number of runs planned."""
        self._progress.update(self._bar, total=total)

    def advance(self, finished: Finished) -> None:
        """One run is done."""
        self._progress.update(self._bar, advance=1, description=finished.task.id)


def once_json(report: OnceReport) -> dict[str, Any]:
    """The ``run --once`` report as plain data."""
    return {
        "exit_code": report.exit_code,
        "problems": [p.render() for p in report.problems],
        "runs": [
            {
                "task_id": f.task.id,
                "run_id": f.run.run_id,
                "state": f.run.state.value,
                "attempt": f.run.attempt,
                "executor": f.run.executor,
                "result": str(f.result_path) if f.result_path else None,
                "error": f.run.error,
            }
            for f in report.finished
        ],
        "skipped": [
            {"task_id": s.task_id, "reason": s.reason, "state": s.state.value if s.state else None}
            for s in report.skipped
        ],
        "resumed": None
        if report.resumed is None
        else {
            "to_idle": report.resumed.to_idle,
            "to_failed": report.resumed.to_failed,
            "to_completed": report.resumed.to_completed,
        },
    }


def print_once(out: Console, err: Console, report: OnceReport, paths: ResolvedPaths) -> None:
    """The ``run --once`` summary for a person."""
    for problem in report.problems:
        err.print(f"[red]invalid[/red] {problem.render()}", highlight=False, soft_wrap=True)
    resumed = report.resumed
    if resumed and (resumed.to_idle or resumed.to_failed or resumed.to_completed):
        err.print(
            f"resumed after an interrupted run: {len(resumed.to_completed)} completed, "
            f"{len(resumed.to_idle)} to retry, {len(resumed.to_failed)} failed"
        )
    # Tasks already done for their content are counted, not listed: a repository with
    # hundreds of tasks would otherwise print hundreds of "nothing to do" rows.
    up_to_date = [s for s in report.skipped if s.state is RunState.COMPLETED]
    shown = [s for s in report.skipped if s.state is not RunState.COMPLETED]
    if report.finished or shown:
        table = Table(title_justify="left")
        for column in ("task", "state", "executor", "took", "detail"):
            table.add_column(column, overflow="fold")
        for f in report.finished:
            style = _STYLE[f.run.state]
            detail = (
                f.run.error
                or (f.run.state is RunState.WAITING and f.run.note)
                or (str(f.result_path) if f.result_path else f.note)
            )
            took = "" if f.run.started_at is None else _took(f.run.started_at, f.run.finished_at)
            table.add_row(
                f.task.id, f"[{style}]{f.run.state}[/]", f.run.executor or "", took, detail
            )
        for s in shown:
            table.add_row(s.task_id, f"[dim]{s.state or 'skipped'}[/]", "", "", s.reason)
        out.print(table)
    done = sum(1 for f in report.finished if f.run.state is RunState.COMPLETED)
    summary = f"{done} completed, {len(report.failed)} failed, {len(shown)} not run"
    if waiting := sum(1 for f in report.finished if f.run.state is RunState.WAITING):
        summary += f", {waiting} waiting for a model (brainstem mode)"
    if up_to_date:
        summary += f", {len(up_to_date)} already done for their content (--force runs again)"
    if report.problems:
        summary += f", {len(report.problems)} invalid task file problem(s)"
    colour = "red" if report.exit_code else "green"
    out.print(f"[{colour}]{summary}[/]; results in {paths.results}/")


def _took(started: str, finished: str | None) -> str:
    if finished is None:
        return ""
    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return f"{seconds:.2f}s"


_DOCTOR_STYLE = {"ok": "green", "fail": "red", "skip": "dim"}


def print_doctor(out: Console, diagnosis: Diagnosis) -> None:
    """``omni doctor`` for a person: one line a check."""
    width = max((len(c.name) for c in diagnosis.checks), default=0)
    for check in diagnosis.checks:
        style = _DOCTOR_STYLE[check.status.value]
        name, detail = escape(f"{check.name:<{width}}"), escape(check.detail)
        out.print(
            f"[{style}]{check.status.value:<4}[/] {name}  {detail}", highlight=False, soft_wrap=True
        )
