"""The ``omni`` commands that only look: ``tasks``, ``show``, ``status``, ``route`` and
``validate``. Parse, call ``runner.app``, print; :data:`COMMANDS` is registered on the
app by :mod:`runner.cli.main`.
"""
# pylint: disable=import-outside-toplevel  # deliberate: each command loads what it needs

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from runner.cli import render
from runner.cli.common import (
    USAGE,
    ConfigOpt,
    JsonOpt,
    ResultsOpt,
    StateFileOpt,
    StateOpt,
    TasksOpt,
    VerboseOpt,
    fail,
    failing,
    print_json,
    setup,
)
from runner.core.errors import InvalidTaskFile, OmniError, UsageError
from runner.core.states import RunState

if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.app.inspect import DryRun
    from runner.cli.screens import Screen
    from runner.defs.config import Config


def tasks(  # pylint: disable=too-many-arguments,too-many-locals
    kind: Annotated[
        Literal["tool", "prompt"] | None,
        typer.Option("--kind", help="Only tool tasks or only prompt tasks."),
    ] = None,
    executor: Annotated[
        str | None, typer.Option("--executor", help="Only tasks routed to this executor.")
    ] = None,
    last: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="Only tasks whose last run is in this state (none: never ran).",
            metavar="STATE",
        ),
    ] = None,
    enabled: Annotated[
        bool | None,
        typer.Option("--enabled/--paused", help="Only enabled, or only paused, tasks."),
    ] = None,
    due: Annotated[bool, typer.Option("--due", help="Only tasks due now.")] = False,
    config: ConfigOpt = None,
    tasks_dir: TasksOpt = None,
    results: ResultsOpt = None,
    state: StateFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List every task: enabled, kind, executor, schedule, next fire, last run.

    Example: `omni tasks` · `omni tasks --due` · `omni tasks --state failed --json`
    """
    from runner.app.inspect import TaskFilter, task_rows  # noqa: PLC0415
    from runner.planning.dueness import clock_from  # noqa: PLC0415

    out, err = render.consoles()
    states = [s.value for s in RunState] + ["none"]
    if last is not None and last not in states:
        fail(err, f"--state {last!r}: choose one of {', '.join(states)}", USAGE, as_json=as_json)
    cfg, paths = setup(err, config, tasks_dir, results, state, as_json=as_json)
    only = TaskFilter(kind, executor, last, enabled, True if due else None)
    with failing(err, as_json=as_json):
        rows, problems, ignored = task_rows(cfg, paths, clock_from(os.environ)(), only)
    if as_json:
        data = {"tasks": rows, "problems": [p.render() for p in problems]}
        print_json(data | {"ignored": [str(p) for p in ignored]})
        raise typer.Exit(1 if problems else 0)
    render.print_notes(err, problems, ignored)
    if not rows:
        render.line(out, "no task matches" if only != TaskFilter() else "no tasks yet")
        raise typer.Exit(1 if problems else 0)
    render.table(
        out,
        ("task", "enabled", "kind", "executor", "schedule", "next fire", "last run"),
        [_task_cells(row) for row in rows],
        styles={"last run": lambda cell: render.state_style(cell.split(" ")[0])},
    )
    raise typer.Exit(1 if problems else 0)


def _task_cells(row: dict[str, Any]) -> tuple[str, ...]:
    kind = f"tool {row['tool']}" if row["kind"] == "tool" else "prompt"
    executor = row["executor"] + ("" if row["executor_configured"] else " (not configured)")
    fire = "due now" if row["due_now"] else (row["next_fire"] or "—")
    last = row["last_run"]
    return (
        row["id"],
        "yes" if row["enabled"] else "paused",
        kind,
        executor,
        row["schedule"] or "once per content",
        fire,
        f"{last['state']} {last['at']}" if last else "never",
    )


def show(
    ident: Annotated[str, typer.Argument(metavar="RUN_ID|TASK_ID", help="A run or a task.")],
    config: ConfigOpt = None,
    tasks_dir: TasksOpt = None,
    results: ResultsOpt = None,
    state: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one run (its result, its `.md` view, every state change) or one task (its
    definition, next fire, recent runs and its newest run in full). A run id may be
    shortened to any unique start.

    Example: `omni show 01M8PJTGW3RPWFY5JB4YYZGHJ1` · `omni show hello --json`
    """
    from runner.app.inspect import show as show_one  # noqa: PLC0415
    from runner.planning.dueness import clock_from  # noqa: PLC0415

    out, err = render.consoles()
    cfg, paths = setup(err, config, tasks_dir, results, state, as_json=as_json)
    with failing(err, as_json=as_json):
        found = show_one(cfg, paths, ident, clock_from(os.environ)())
    if as_json:
        print_json(found)
    elif "task" in found:
        _print_task(out, found)
    else:
        _print_run(out, found)


def _print_task(out: Screen, found: dict[str, Any]) -> None:
    task = found["task"]
    keys = ("id", "path", "gone", "enabled", "kind", "tool", "executor", "schedule", "next_fire")
    for key in keys:
        if task.get(key) is not None:
            render.line(out, f"{key}: {_shown(task[key])}")
    if found["runs"]:
        render.table(
            out,
            ("run", "state", "attempt", "slot", "updated", "detail"),
            [
                (
                    r["run_id"],
                    r["state"],
                    str(r["attempt"]),
                    r["slot"] or "",
                    r["updated_at"],
                    " ".join(r["detail"].split()),
                )
                for r in found["runs"]
            ],
            title="runs",
            styles={"state": render.state_style},
        )
    if found["latest"] is not None:
        render.line(out, "")
        _print_run(out, found["latest"])
    else:
        render.line(out, "no runs yet")


def _shown(value: object) -> str:
    """A value for a person: yes / no for a flag (``--json`` keeps true / false)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _print_run(out: Screen, found: dict[str, Any]) -> None:
    run, result = found["run"], found["result"]
    facts = run or result or {}
    render.line(
        out,
        f"run {facts.get('run_id')} of task {facts.get('task_id')}: {facts.get('state')}"
        f" (attempt {facts.get('attempt')})",
        render.state_style(str(facts.get("state"))),
    )
    if run is not None and (run.get("error") or run.get("note")):
        what = "error" if run.get("error") else "note"
        render.line(out, f"{what}: {' '.join((run.get('error') or run['note']).split())}")
    render.line(out, f"result: {found['result_path'] or 'none (no result file)'}")
    if found["events"]:
        render.table(
            out,
            ("at", "from", "to", "detail"),
            [
                (e["at"], e["from"] or "new", e["to"], " ".join(e["detail"].split()))
                for e in found["events"]
            ],
            title="state changes",
            styles={"to": render.state_style},
        )
    elif run is None:
        render.line(out, "state changes: unknown (no state database holds this run)")
    if found["markdown"]:
        render.line(out, "")
        render.line(out, found["markdown"].rstrip("\n"))


def status(
    task: Annotated[str | None, typer.Option("--task", help="Only this task's runs.")] = None,
    in_state: Annotated[
        RunState | None, typer.Option("--state", help="Only runs in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Runs listed at most.")] = 10,
    config: ConfigOpt = None,
    state: StateFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the mode, runs by state, recent runs (with their ids) and today's spend.

    Example: `omni status` · `omni status --task hello --state failed --limit 50` ·
    `omni status --json | jq .runs_by_state`
    """
    from runner.reach.sandbox import probing  # noqa: PLC0415

    out, err = render.consoles()
    cfg, paths = setup(err, config, state=state, as_json=as_json)
    # The trial sandbox starts now and runs while the state is read.
    with probing(cfg.sandbox), failing(err, as_json=as_json):
        from runner.app.status import status_snapshot  # noqa: PLC0415
        from runner.defs.environment import redactor_for  # noqa: PLC0415
        from runner.planning.dueness import clock_from  # noqa: PLC0415

        snapshot = status_snapshot(
            cfg,
            paths,
            clock_from(os.environ)(),
            redactor=redactor_for(cfg, os.environ),
            task_id=task,
            state=in_state,
            limit=limit,
        )
    if as_json:
        print_json(snapshot)
    else:
        render.print_status(out, snapshot, filtered=bool(task or in_state))


def route(
    target: Annotated[
        str, typer.Argument(metavar="TASK_ID|PATH", help="A task id or a task file.")
    ],
    config: ConfigOpt = None,
    tasks_dir: TasksOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show where a task would run and why, the models it would try in order, and when it
    fires next, without running it.

    Example: `omni route hello` · `omni route tasks/hello.yaml --json`
    """
    from runner.app.inspect import route as route_one  # noqa: PLC0415
    from runner.planning.dueness import clock_from  # noqa: PLC0415

    out, err = render.consoles()
    cfg, paths = setup(err, config, tasks_dir, as_json=as_json)
    try:
        decision = route_one(cfg, paths, target, clock_from(os.environ)())
    except UsageError as exc:
        fail(err, str(exc), USAGE, as_json=as_json)
    except InvalidTaskFile as exc:
        for problem in exc.problems:
            render.line(err, problem.render())
        if as_json:
            print_json({"ok": False, "problems": [p.render() for p in exc.problems]})
        raise typer.Exit(1) from None
    except OmniError as exc:
        fail(err, str(exc), as_json=as_json)
    if as_json:
        print_json(decision)
    else:
        width = max(len(key) for key in decision)
        for key, value in decision.items():
            render.line(out, f"{key:<{width}}  {_shown(value)}")
    raise typer.Exit(0 if decision["configured"] else 1)


def validate(  # pylint: disable=too-many-arguments,too-many-locals
    paths: Annotated[list[Path] | None, typer.Argument(help="Task files or folders.")] = None,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also start each executor the tasks use and check tools, arguments and"
            " models against what it lists.",
        ),
    ] = False,
    verbose: VerboseOpt = False,
    config: ConfigOpt = None,
    tasks_dir: TasksOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check task files and the config; one line per problem: `PATH:LINE: FIELD: message`.

    Example: `omni validate` · `omni validate tasks/nightly.yaml` · `omni validate --deep`
    """
    from runner.app.validate import deep_check, validate_paths  # noqa: PLC0415

    out, err = render.consoles()
    cfg, resolved = setup(err, config, tasks_dir, as_json=as_json, verbose=verbose)
    if not paths and not resolved.tasks.exists():
        message = (
            f"tasks folder {resolved.tasks} not found (run `omni init` to make one with"
            " examples, or point --tasks or OMNI_TASKS at yours)"
        )
        fail(err, message, USAGE, as_json=as_json)
    checked = validate_paths(
        cfg, paths or [resolved.tasks], resolved.tasks, resolved.results, resolved.config
    )
    if deep:
        import asyncio  # noqa: PLC0415

        workspace = Path(cfg.workspace) if cfg.workspace else Path.cwd()
        environ = dict(os.environ)
        asyncio.run(deep_check(cfg, checked, resolved.config, environ=environ, workspace=workspace))
    if as_json:
        data = {"files": checked.files, "problems": [p.render() for p in checked.problems]}
        data |= {"ignored": [str(p) for p in checked.ignored]}
        if deep:
            data |= {"executors": checked.executors, "models": checked.models}
        print_json(data)
        raise typer.Exit(1 if checked.problems else 0)
    render.print_notes(err, [], checked.ignored)
    for problem in checked.problems:
        render.line(out, problem.render())
    for name, said in sorted(checked.executors.items()):
        render.line(err, f"executor {name}: {said}")
    if checked.models is not None:
        render.line(err, f"model proxy: {checked.models}")
    if not checked.problems:
        what = "checked against live executors" if deep else "checked without servers"
        render.line(out, f"ok: {checked.files} task file(s) and the config, {what}", "green")
    raise typer.Exit(1 if checked.problems else 0)


def print_dry_run(out: Screen, err: Screen, report: DryRun, cfg: Config) -> None:
    """``run --once --dry-run`` for a person: what would run and why, what would not."""
    from runner.app.inspect import dry_run_json  # noqa: PLC0415

    data = dry_run_json(report, cfg)
    render.print_notes(err, report.problems, report.ignored)
    rows = [("run", d["task_id"], d["executor"], d["why"]) for d in data["due"]]
    rows += [("not run", s["task_id"], "", s["why"]) for s in data["not_due"]]
    rows += [("close", c["task_id"], c["run_id"], c["why"]) for c in data["would_close"]]
    if rows:
        render.table(out, ("would", "task", "executor / run", "why"), rows)
    render.line(
        out,
        f"dry run: {len(data['due'])} would run, {len(data['not_due'])} not,"
        f" {len(data['would_close'])} run(s) of gone tasks would be closed; nothing was run"
        " or written",
    )


COMMANDS: tuple[Callable[..., None], ...] = (tasks, show, status, route, validate)
