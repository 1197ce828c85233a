"""What the CLI prints: tables, status, run summaries, progress, doctor's checks; rich for
people, plain lines for pipes and logs, dicts for ``--json``.

In a terminal, tables are rich tables that fit its width (``COLUMNS`` when set) and
fold long cells. Anywhere else (a pipe, a file, a CI log) nothing is wrapped or cut:
a table is a header and one line a row, columns padded with spaces, and every other
line is printed whole.

rich loads when something is drawn on a terminal, not when this module is imported:
anywhere else :class:`~runner.cli.screens.Plain` writes the same text without it.
"""
# pylint: disable=import-outside-toplevel  # deliberate: see the module docstring

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runner.cli.screens import Plain, Terminal, screen
from runner.core.states import RunState

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from rich.console import Console
    from rich.progress import Progress, TaskID

    from runner.app.doctor import Diagnosis
    from runner.app.once import OnceReport
    from runner.cli.screens import Screen
    from runner.defs.environment import ResolvedPaths
    from runner.dispatch.outcome import Finished

_STYLE = {
    RunState.COMPLETED: "green",
    RunState.FAILED: "red",
    RunState.WAITING: "yellow",
    RunState.IDLE: "dim",
    RunState.DISPATCHING: "cyan",
    RunState.EXECUTING: "cyan",
    RunState.SKIPPED: "dim",
}


def consoles() -> tuple[Screen, Screen]:
    """stdout and stderr for one command: rich in a terminal, else plain (never wrapped)."""
    return screen(), screen(stderr=True)


def line(console: Screen, text: str, style: str | None = None) -> None:
    """One line of plain text (no markup read from it), whole."""
    if isinstance(console, Plain):
        console.write_line(text)
        return
    from rich.text import Text  # noqa: PLC0415

    console.console.print(Text(text, style=style or ""))


def state_style(value: str) -> str:
    """The colour of a run state's name (plain text for anything else)."""
    try:
        return _STYLE[RunState(value)]
    except ValueError:
        return ""


def table(
    console: Screen,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    styles: dict[str, Callable[[str], str]] | None = None,
) -> None:
    """A table: rich in a terminal; elsewhere a header and one unwrapped line a row."""
    if isinstance(console, Plain):
        widths = [max(len(cells[i]) for cells in [columns, *rows]) for i in range(len(columns) - 1)]
        lines = [f"{title}:"] if title else []
        for cells in [columns, *rows]:
            padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
            lines.append("  ".join([*padded, cells[-1]]).rstrip())
        line(console, "\n".join(lines))  # one print: a row a print costs 10,000s
        return
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    styles = styles or {}
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for cells in rows:
        grid.add_row(
            *(
                Text(cell, style=styles[name](cell) if name in styles else "")
                for name, cell in zip(columns, cells, strict=True)
            )
        )
    console.console.print(grid)


def print_status(out: Screen, snap: dict[str, Any], *, filtered: bool = False) -> None:
    """The status snapshot for a person (``filtered``: its runs were asked for by task
    or state)."""
    mode = snap["mode"]
    since = f" since {mode['since']}" if mode["since"] else ""
    why = f" ({mode['why']})" if mode["why"] else ""
    line(out, f"mode: {mode['mode']}{since}{why}")
    if (sandbox := snap.get("sandbox")) is not None:
        text = f"sandbox: {sandbox['kind']} (sandbox: {sandbox['mode']})"
        if sandbox["warning"]:
            text += f" ⚠ {sandbox['warning']}"
        line(out, text, "yellow" if sandbox["warning"] else None)
    counts = "  ".join(f"{s} {n}" for s, n in snap["runs_by_state"].items())
    line(out, f"runs: {counts}")
    cap, run_cap = snap["budget"]["per_day_usd"], snap["budget"]["per_run_usd"]
    line(
        out,
        f"spend today: ${snap['spend_today_usd']:.4f}"
        + (f" of ${cap:.2f}" if cap is not None else " (no daily cap)")
        + (f"; per run at most ${run_cap:.2f}" if run_cap is not None else "; no per-run cap"),
    )
    if snap.get("next_fire"):
        table(
            out,
            ("task", "schedule", "timezone", "next fire"),
            [
                (j["task_id"], j["schedule"], j["timezone"], j["next_fire"] or "")
                for j in snap["next_fire"]
            ],
            title="next fire times (as `omni run` scheduled them)",
        )
    if snap.get("instances"):
        table(
            out,
            ("host", "pid", "role", "runs in flight", "last heartbeat"),
            [
                (
                    one["host"],
                    str(one["pid"]),
                    one["role"],
                    str(one["runs_in_flight"]),
                    one["last_heartbeat"],
                )
                for one in snap["instances"]
            ],
            title=f"live instances on {snap['state_file']}",
        )
    if not snap["recent_runs"]:
        if filtered:
            line(out, "no run matches")
        else:
            line(out, f"no runs yet in {snap['state_file']}; try `omni run --once`")
        return
    table(
        out,
        ("task", "run", "state", "attempt", "executor", "updated", "error / note"),
        [
            (
                run["task_id"],
                run["run_id"],
                run["state"],
                str(run["attempt"]),
                run["executor"] or "",
                run["updated_at"],
                _one_line(run["error"] or run["note"] or ""),
            )
            for run in snap["recent_runs"]
        ],
        title="recent runs",
        styles={"state": state_style},
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _bar(console: Console) -> Progress:
    """The progress bar of ``run --once`` on a terminal's ``console``."""
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("running"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    )


class RunProgress:  # pylint: disable=too-many-instance-attributes  # bar and ticker
    """Progress of ``run --once`` on stderr (silent for ``--json``): a bar in a
    terminal; elsewhere (a CI log) a line when the runs are planned, then one every
    ``interval`` seconds with the counts so far."""

    def __init__(self, console: Screen, *, enabled: bool, interval: float = 5.0) -> None:
        self._console = console
        self._lines = enabled and isinstance(console, Plain)
        self._interval = interval
        self._total = 0
        self._counts = dict.fromkeys(RunState, 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._started = time.monotonic()
        # The bar (rich) only in a terminal: a log gets lines, and no rich at all.
        self._progress: Progress | None = None
        if enabled and isinstance(console, Terminal):
            self._progress = _bar(console.console)
        self._task: TaskID | None = None

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._task = self._progress.add_task("", total=None)
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._progress is not None:
            self._progress.stop()

    def start(self, total: int) -> None:
        """The number of runs planned."""
        self._total = total
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)
        if self._lines and total:
            line(self._console, f"running {total} task(s)")
            self._ticker = threading.Thread(target=self._tick, name="omni-progress", daemon=True)
            self._ticker.start()

    def advance(self, finished: Finished) -> None:
        """One run is done."""
        with self._lock:
            self._counts[finished.run.state] += 1
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, description=finished.task.id)

    def status_line(self) -> str:
        """``running: 3/10 done (2 completed, 1 failed), 12 s``."""
        with self._lock:
            counts = {s: n for s, n in self._counts.items() if n}
        done = sum(counts.values())
        parts = ", ".join(f"{n} {s}" for s, n in counts.items())
        took = time.monotonic() - self._started
        return (
            f"running: {done}/{self._total} done"
            + (f" ({parts})" if parts else "")
            + (f", {took:.0f} s")
        )

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            line(self._console, self.status_line())


def once_json(report: OnceReport) -> dict[str, Any]:
    """The ``run --once`` report as plain data."""
    return {
        "exit_code": report.exit_code,
        "problems": [p.render() for p in report.problems],
        "ignored": [str(p) for p in report.ignored],
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
        "closed": [
            {"task_id": r.task_id, "run_id": r.run_id, "reason": r.note} for r in report.closed
        ],
        "resumed": None
        if report.resumed is None
        else {
            "to_idle": report.resumed.to_idle,
            "to_failed": report.resumed.to_failed,
            "to_completed": report.resumed.to_completed,
        },
    }


def print_notes(err: Screen, problems: Sequence[Any], ignored: Sequence[Any]) -> None:
    """Invalid task files (one ``PATH:LINE: FIELD: message`` line each) and files not
    read as task files, on stderr."""
    for problem in problems:
        line(err, f"invalid {problem.render()}")
    for path in ignored:
        line(err, f"note: {path} is not read: task files end in .yaml or .yml (lowercase)")


def print_once(out: Screen, err: Screen, report: OnceReport, paths: ResolvedPaths) -> None:
    """The ``run --once`` summary for a person."""
    print_notes(err, report.problems, report.ignored)
    resumed = report.resumed
    if resumed and (resumed.to_idle or resumed.to_failed or resumed.to_completed):
        line(
            err,
            f"resumed after an interrupted run: {len(resumed.to_completed)} completed, "
            f"{len(resumed.to_idle)} to retry, {len(resumed.to_failed)} failed",
        )
    for run in report.closed:
        line(err, f"closed run {run.run_id} of task {run.task_id}: skipped ({run.note})")
    # Tasks already done for their content are counted, not listed: a repository with
    # hundreds of tasks would otherwise print hundreds of "nothing to do" rows.
    up_to_date = [s for s in report.skipped if s.state is RunState.COMPLETED]
    shown = [s for s in report.skipped if s.state is not RunState.COMPLETED]
    rows: list[tuple[str, ...]] = []
    for f in report.finished:
        detail = (
            f.run.error
            or (f.run.state is RunState.WAITING and f.run.note)
            or (str(f.result_path) if f.result_path else f.note)
        )
        took = "" if f.run.started_at is None else _took(f.run.started_at, f.run.finished_at)
        rows.append(
            (f.task.id, f.run.state.value, f.run.executor or "", took, _one_line(detail or ""))
        )
    rows += [(s.task_id, s.state.value if s.state else "not run", "", "", s.reason) for s in shown]
    if rows:
        table(
            out,
            ("task", "state", "executor", "took", "detail"),
            rows,
            styles={"state": state_style},
        )
    done = sum(1 for f in report.finished if f.run.state is RunState.COMPLETED)
    summary = f"{done} completed, {len(report.failed)} failed, {len(shown)} not run"
    if waiting := sum(1 for f in report.finished if f.run.state is RunState.WAITING):
        summary += f", {waiting} waiting for a model (brainstem mode)"
    if up_to_date:
        summary += f", {len(up_to_date)} already done for their content (--force runs again)"
    if report.problems:
        summary += f", {len(report.problems)} invalid task file problem(s)"
    line(out, f"{summary}; results in {paths.results}/", "red" if report.exit_code else "green")


def _took(started: str, finished: str | None) -> str:
    if finished is None:
        return ""
    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return f"{seconds:.2f}s"


_DOCTOR_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}


def print_doctor(out: Screen, diagnosis: Diagnosis) -> None:
    """``omni doctor`` for a person: one line a check, with how long it took."""
    width = max((len(c.name) for c in diagnosis.checks), default=0)
    if isinstance(out, Plain):
        for check in diagnosis.checks:
            took = f"{check.took_ms:>6.0f} ms"
            line(out, f"{check.status.value:<4} {check.name:<{width}} {took}  {check.detail}")
        return
    from rich.markup import escape  # noqa: PLC0415

    for check in diagnosis.checks:
        style = _DOCTOR_STYLE[check.status.value]
        name, detail = escape(f"{check.name:<{width}}"), escape(check.detail)
        took = f"{check.took_ms:>6.0f} ms"
        out.console.print(
            f"[{style}]{check.status.value:<4}[/] {name} {took}  {detail}",
            highlight=False,
            soft_wrap=True,
        )
