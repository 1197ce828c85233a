"""The ``omni`` command: parse, call the library, print. No logic lives here.

Modules that pull in the MCP SDK (``once``) are imported inside the commands that need
them, so ``omni status`` and ``omni validate`` start fast and never load mcp or litellm.

Everything the command prints passes the redactor: stdout and stderr are wrapped
(:class:`~runner.core.redaction.RedactingWriter`) with the environment's secrets from
the start and the config's once it is loaded, and log records (warnings, executors'
stderr, tracebacks) go through the same redactor.
"""
# pylint: disable=import-outside-toplevel  # deliberate: see the module docstring

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from runner.app.logs import LogFormat, configure_logging
from runner.app.signals import EarlySignals
from runner.app.status import status_snapshot
from runner.cli import render
from runner.core.errors import ConfigError, OmniError
from runner.core.redaction import RedactingWriter, Redactor, secret_env_values
from runner.core.version import omni_version
from runner.defs.config import (
    Config,
    ResolvedPaths,
    config_path_from,
    load_config,
    redactor_for,
    resolve_paths,
)

if TYPE_CHECKING:
    from runner.state.resultcheck import ResultCheck

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


def _print_version(asked: bool) -> None:
    if asked:
        print(f"omni {omni_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Omni-Orchestrator (ARES): run AI-agent tasks from YAML files over MCP."""
    if ctx.invoked_subcommand != "run":
        _early(ctx, keep=False)  # only service mode handles stop signals itself


def _early(ctx: typer.Context, *, keep: bool) -> EarlySignals | None:
    """The stop signals noted since the process started (``omni``'s entry point): kept
    for service mode, else given back to their default handling."""
    signals = ctx.find_root().obj
    if not isinstance(signals, EarlySignals):
        return None
    if not keep:
        signals.release()
    return signals


def _guard_output(redactor: Redactor) -> None:
    """Redact everything written to stdout and stderr from now on with ``redactor``."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, RedactingWriter):
            stream.flush()
            stream.redactor = redactor
        else:
            setattr(sys, name, RedactingWriter(stream, redactor))


def _setup(
    config: Path | None,
    tasks: Path | None = None,
    results: Path | None = None,
    state: Path | None = None,
    *,
    log_format: LogFormat = LogFormat.TEXT,
    log_level: int = logging.WARNING,
) -> tuple[Config, ResolvedPaths]:
    """Load config and resolve paths; a bad config exits 2 with the message. From here
    on the config's secrets are redacted from all output, and logs go to stderr."""
    path, required = config_path_from(config)
    try:
        cfg = load_config(path, required=required)
        paths = resolve_paths(
            cfg, path if path.exists() else None, tasks=tasks, results=results, state=state
        )
    except ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    redactor = redactor_for(cfg, os.environ)
    _guard_output(redactor)
    configure_logging(log_format, redactor, level=log_level)
    return cfg, paths


def _result_check(cfg: Config) -> ResultCheck:
    """The checks result files pass before they count, at the runner's clock's now."""
    from runner.planning.dueness import clock_from  # noqa: PLC0415 - keeps startup lean
    from runner.state.resultcheck import ResultCheck  # noqa: PLC0415 - keeps startup lean

    return ResultCheck(clock_from(os.environ)(), cfg.limits.result_file_bytes)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
def run(  # pylint: disable=too-many-locals  # one option a flag
    ctx: typer.Context,
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
    commit: Annotated[
        bool, typer.Option("--commit", help="Commit the results on the current branch.")
    ] = False,
    push: Annotated[
        str | None,
        typer.Option(
            "--push", metavar="BRANCH", help="Commit the results on BRANCH and push it to origin."
        ),
    ] = None,
    log_format: Annotated[
        Literal["text", "json"],
        typer.Option("--log-format", help="Log lines as text or JSON (stderr)."),
    ] = "text",
    config: ConfigOpt = None,
    tasks: TasksOpt = None,
    results: ResultsOpt = None,
    state: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run tasks: once (`--once`), or as a service until SIGTERM.

    Example: `omni run --once` · `omni run --once --task nightly-report --force` ·
    `omni run --once --push omni/results`
    """
    early = _early(ctx, keep=not once)
    cfg, paths = _setup(
        config, tasks, results, state, log_format=LogFormat(log_format), log_level=logging.INFO
    )
    if not once:
        if task or force or shard or commit or push:
            err.print("--task, --force, --shard, --commit and --push go with --once")
            raise typer.Exit(2)
        from runner.app.service import serve  # noqa: PLC0415 - loads the service

        raise typer.Exit(serve(cfg, paths, log_format=LogFormat(log_format), early=early))
    from runner.app.once import OnceOptions, run_once  # noqa: PLC0415 - loads mcp
    from runner.planning.plan import Shard  # noqa: PLC0415

    try:
        options = OnceOptions(
            task_id=task,
            force=force,
            shard=Shard.parse(shard) if shard else None,
            commit=commit,
            push=push,
        )
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    shown = not as_json and log_format == "text"  # JSON logs: stderr is for machines
    with render.RunProgress(err, enabled=shown) as progress:
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
        _print_json(render.once_json(report) | _git_json(report.published, report.git_error))
    else:
        render.print_once(out, err, report, paths)
        _print_git(report.published, report.git_error)
    raise typer.Exit(report.exit_code)


def _git_json(published: Any, error: str | None) -> dict[str, Any]:
    if published is None and error is None:
        return {}
    shown = None if published is None else dataclasses.asdict(published)
    return {"git": shown, "git_error": error}


def _print_git(published: Any, error: str | None) -> None:
    if error is not None:
        err.print(f"[red]git:[/red] {error}", highlight=False, soft_wrap=True)
    elif published is not None:
        what = f"committed {published.commit[:10]}" if published.commit else "nothing new to commit"
        sent = f", pushed to {published.remote}" if published.pushed else ""
        out.print(f"git: {what} on {published.branch}{sent}", highlight=False, soft_wrap=True)


@app.command()
def prune(
    keep: Annotated[int, typer.Option("--keep", min=1, help="Result files kept per task.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; remove nothing.")
    ] = False,
    commit: Annotated[
        bool, typer.Option("--commit", help="Commit the removal on the current branch.")
    ] = False,
    push: Annotated[
        str | None,
        typer.Option("--push", metavar="BRANCH", help="Commit the removal on BRANCH and push."),
    ] = None,
    config: ConfigOpt = None,
    results: ResultsOpt = None,
    state: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Keep the newest N result files per task (and their rows); remove older ones.

    Example: `omni prune --keep 50` · `omni prune --keep 50 --push omni/results`
    """
    from runner.gitops.prune import prune_and_publish  # noqa: PLC0415 - keeps startup lean

    cfg, paths = _setup(config, results=results, state=state)
    try:
        done, published = prune_and_publish(
            paths.results,
            paths.state,
            keep,
            _result_check(cfg),
            dry_run=dry_run,
            commit=commit,
            push=push,
        )
    except OmniError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        removed = [str(f.path) for f in done.removed]
        data = {"removed": removed, "kept": done.kept, "rows_deleted": done.rows_deleted}
        _print_json(data | _git_json(published, None))
    else:
        verb = "would remove" if dry_run else "removed"
        for item in done.removed:
            out.print(f"{verb} {item.path}", highlight=False)
        out.print(f"{verb} {len(done.removed)} result file(s), kept {done.kept}")
        _print_git(published, None)


@app.command()
def migrate(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            help="The PostgreSQL ledger: postgresql://user@host:port/db (password from"
            " env PGPASSWORD, or in the URL).",
        ),
    ],
    config: ConfigOpt = None,
    state: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy the SQLite state (runs, events, modes, tasks) into an empty PostgreSQL ledger.

    Stop the runner first. Then point every instance at the ledger (config
    `state: {url: ...}` or env OMNI_STATE_URL).

    Example: `omni migrate --to postgresql://omni@db.internal:5432/omni`
    """
    from runner.app.migrate import migrate_to  # noqa: PLC0415 - loads psycopg
    from runner.core.dsn import is_postgres_url  # noqa: PLC0415

    _, paths = _setup(config, state=state)
    if not is_postgres_url(to):
        err.print("--to wants a postgresql:// URL")
        raise typer.Exit(2)
    try:
        report = migrate_to(paths.state, to)
    except OmniError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        _print_json(dataclasses.asdict(report))
        return
    counts = ", ".join(f"{n} {table}" for table, n in report.copied.items())
    out.print(f"copied {report.source} into {report.target}: {counts}", highlight=False)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="The repository to scaffold.")] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Scaffold `config.yaml`, `tasks/` with examples, and the GitHub Actions workflow.

    Example: `omni init` · `omni init ../my-repo --force`
    """
    from runner.app.scaffold import init as scaffold  # noqa: PLC0415 - keeps startup lean

    for item in scaffold(path, force=force):
        out.print(f"{item.outcome:>8}  {item.path}", highlight=False)


@app.command("report")
def report_command(
    base: Annotated[str, typer.Option("--base", help="The branch results merge into.")] = "main",
    branch: Annotated[str, typer.Option("--branch", help="The results branch.")] = "omni/results",
    config: ConfigOpt = None,
    results: ResultsOpt = None,
) -> None:
    """Print, as Markdown, the results BRANCH holds and BASE lacks (the pull request body).

    Example: `omni report --base main --branch omni/results > body.md`
    """
    from runner.gitops.prbody import render as pr_body  # noqa: PLC0415 - keeps startup lean
    from runner.gitops.workspace import GitWorkspace  # noqa: PLC0415 - loads gitpython

    cfg, paths = _setup(config, results=results)
    try:
        workspace = GitWorkspace.open(
            Path.cwd(), results=paths.results, state=paths.state, check=_result_check(cfg)
        )
        found = workspace.branch_results(base, branch)
    except OmniError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    sys.stdout.write(pr_body(found, base=base, branch=branch))


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
    from runner.app.validate import validate_paths  # noqa: PLC0415 - keeps startup lean

    cfg, resolved = _setup(config, tasks)
    checked = validate_paths(cfg, paths or [resolved.tasks], resolved.tasks, resolved.results)
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
    from runner.planning.dueness import clock_from  # noqa: PLC0415 - keeps startup lean

    cfg, paths = _setup(config, state=state)
    try:
        snapshot = status_snapshot(
            cfg, paths, clock_from(os.environ)(), redactor=redactor_for(cfg, os.environ)
        )
    except OmniError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        _print_json(snapshot)
    else:
        render.print_status(out, snapshot)


@app.command()
def doctor(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the gateway, the direct API, the keys (present or not, never shown) and each
    executor (starts, lists tools); one line each, exit 1 if any fails.

    Example: `omni doctor` · `omni doctor --json | jq '.checks[] | select(.status == "fail")'`
    """
    from runner.app.doctor import diagnose  # noqa: PLC0415 - loads mcp

    cfg, _ = _setup(config)
    env = dict(os.environ)
    redactor = redactor_for(cfg, env)
    workspace = Path(cfg.workspace) if cfg.workspace else Path.cwd()
    found = asyncio.run(diagnose(cfg, environ=env, workspace=workspace, redactor=redactor))
    if as_json:
        _print_json(found.as_json())
    else:
        render.print_doctor(out, found)
    raise typer.Exit(found.exit_code)


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
    from runner.app.validate import route_file  # noqa: PLC0415 - keeps startup lean

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
    from runner.defs.tasks import TaskSpec  # noqa: PLC0415 - keeps startup lean

    _print_json(TaskSpec.model_json_schema())


def main(signals: EarlySignals | None = None) -> None:
    """The command line (:mod:`runner.cli.entry` notes the stop ``signals`` first)."""
    redactor = Redactor(secret_env_values(os.environ))
    _guard_output(redactor)  # the config's secrets join once it is loaded
    configure_logging(LogFormat.TEXT, redactor, level=logging.WARNING)
    try:
        app(obj=signals)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
