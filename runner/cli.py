"""The ``omni`` command: parse, call the library, print. No logic lives here.

Modules that pull in the MCP SDK (``once``) are imported inside the commands that need
them, so ``omni status`` and ``omni validate`` start fast and never load mcp or litellm.
"""
# pylint: disable=import-outside-toplevel  # deliberate: see the module docstring

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from runner import reports
from runner.config import Config, ResolvedPaths, config_path_from, load_config, resolve_paths
from runner.errors import ConfigError, OmniError

app = typer.Typer(
    name="omni",
    help="Omni-Orchestrator (ARES): run AI-agent tasks from YAML files over MCP.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Config file [env OMNI_CONFIG; default ./config.yaml]"),
]
TasksOpt = Annotated[
    Path | None, typer.Option("--tasks", help="Task folder [env OMNI_TASKS; default ./tasks]")
]
ResultsOpt = Annotated[
    Path | None,
    typer.Option("--results", help="Results folder [env OMNI_RESULTS; default ./results]"),
]
StateOpt = Annotated[
    Path | None,
    typer.Option("--state", help="State file [env OMNI_STATE; default ./.omni/state.db]"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def _setup(
    config: Path | None,
    tasks: Path | None = None,
    results: Path | None = None,
    state: Path | None = None,
) -> tuple[Config, ResolvedPaths]:
    """Load config and resolve paths; a bad config exits 2 with the message."""
    path, required = config_path_from(config)
    try:
        cfg = load_config(path, required=required)
    except ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    return cfg, resolve_paths(
        cfg, path if path.exists() else None, tasks=tasks, results=results, state=state
    )


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
def run(
    once: Annotated[
        bool, typer.Option("--once", help="Run what is runnable now, then exit.")
    ] = False,
    task: Annotated[
        str | None, typer.Option("--task", help="Run only the task with this id.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Run even if already done.")] = False,
    shard: Annotated[
        str | None, typer.Option("--shard", help="K/N: run only shard K of N.")
    ] = None,
    config: ConfigOpt = None,
    tasks: TasksOpt = None,
    results: ResultsOpt = None,
    state: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run tasks: once (`--once`), or as a service until SIGTERM.

    Example: `omni run --once` · `omni run --once --task nightly-report --force`
    """
    from runner.once import OnceOptions, Shard, run_once  # noqa: PLC0415 - loads mcp

    cfg, paths = _setup(config, tasks, results, state)
    if not once:
        err.print("service mode (`omni run` without --once) is coming; use `omni run --once`")
        raise typer.Exit(2)
    try:
        options = OnceOptions(
            task_id=task, force=force, shard=Shard.parse(shard) if shard else None
        )
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    with reports.RunProgress(err, enabled=not as_json) as progress:
        try:
            report = asyncio.run(
                run_once(
                    cfg, paths, options, on_planned=progress.start, on_finished=progress.advance
                )
            )
        except OmniError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    if as_json:
        _print_json(reports.once_json(report))
    else:
        reports.print_once(out, err, report, paths)
    raise typer.Exit(report.exit_code)


@app.command()
def validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="Task files or folders.")] = None,
    config: ConfigOpt = None,
    tasks: TasksOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check task files and the config; one line per problem: `PATH:LINE: FIELD: message`.

    Example: `omni validate` · `omni validate tasks/nightly.yaml`
    """
    from runner.validate import validate_paths  # noqa: PLC0415 - keeps startup lean

    cfg, resolved = _setup(config, tasks)
    checked = validate_paths(cfg, paths or [resolved.tasks], resolved.tasks)
    if as_json:
        _print_json({"files": checked.files, "problems": [p.render() for p in checked.problems]})
    else:
        for problem in checked.problems:
            out.print(problem.render(), highlight=False, soft_wrap=True)
        if not checked.problems:
            out.print(f"[green]ok[/green]: {checked.files} task file(s), config")
    raise typer.Exit(1 if checked.problems else 0)


@app.command()
def status(
    config: ConfigOpt = None,
    state: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the mode, runs by state, recent runs and today's spend.

    Example: `omni status` · `omni status --json | jq .runs_by_state`
    """
    cfg, paths = _setup(config, state=state)
    try:
        snapshot = reports.status_snapshot(cfg, paths)
    except OmniError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        _print_json(snapshot)
    else:
        reports.print_status(out, snapshot)


@app.command()
def route(
    taskfile: Annotated[Path, typer.Argument(help="The task file to route.")],
    config: ConfigOpt = None,
    tasks: TasksOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show which executor a task would run on, and why, without running it.

    Example: `omni route tasks/hello.yaml`
    """
    from runner.validate import route_file  # noqa: PLC0415 - keeps startup lean

    cfg, paths = _setup(config, tasks)
    try:
        decision = route_file(cfg, taskfile, paths.tasks)
    except OmniError as exc:
        err.print(str(exc), highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        _print_json(decision)
        return
    table = Table(show_header=False, box=None)
    for key, value in decision.items():
        table.add_row(f"[bold]{key}[/bold]", str(value))
    out.print(table)
    if not decision["configured"]:
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the task file (for editors and CI checks).

    Example: `omni schema > task.schema.json`
    """
    from runner.tasks import TaskSpec  # noqa: PLC0415 - keeps startup lean

    _print_json(TaskSpec.model_json_schema())


def main() -> None:
    """Console-script entry point."""
    app()
