"""The ``omni`` command: parse, call the library, print. No logic lives here.

The commands that run or change things are here; the ones that only look (``tasks``,
``show``, ``status``, ``route``, ``validate``) are in :mod:`runner.cli.looks`. Modules
that pull in the MCP SDK (``once``) are imported inside the commands that need them, so
``omni status`` and ``omni validate`` start fast and never load mcp or litellm.

Everything the command prints passes the redactor: stdout and stderr are wrapped
(:class:`~runner.core.redaction.RedactingWriter`) with the environment's secrets from
the start and the config's once it is loaded (:func:`runner.cli.common.setup`), and log
records (warnings, executors' stderr, tracebacks) go through the same redactor.
"""
# pylint: disable=import-outside-toplevel  # deliberate: see the module docstring

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from runner.app.logs import LogFormat, configure_logging
from runner.app.signals import EarlySignals
from runner.cli import looks, publishing, render
from runner.cli.common import (
    USAGE,
    ConfigOpt,
    JsonOpt,
    ResultsOpt,
    StateOpt,
    TasksOpt,
    VerboseOpt,
    fail,
    failing,
    guard_output,
    not_with,
    print_json,
    result_check,
    setup,
)
from runner.core.redaction import Redactor, secret_env_values
from runner.core.version import omni_version

if TYPE_CHECKING:
    from collections.abc import Sequence

    from runner.app.once import OnceOptions
    from runner.cli.screens import Screen
    from runner.defs.config import Config
    from runner.defs.environment import ResolvedPaths


def _print_version(asked: bool) -> None:
    if asked:
        print(f"omni {omni_version()}")
        raise typer.Exit()


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


def _cli() -> typer.Typer:
    """The ``omni`` group with its root options and no commands yet."""
    cli = typer.Typer(
        name="omni",
        help="Omni-Orchestrator (ARES): run AI-agent tasks from YAML files over MCP.",
        no_args_is_help=True,
        rich_markup_mode="markdown",
    )
    cli.callback()(_root)
    return cli


app = _cli()


@app.command()
def run(  # pylint: disable=too-many-locals,too-many-arguments  # one option a flag
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Run what is runnable now, then exit.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="With --once: show what would run and why; run and write nothing."
        ),
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
            "--push",
            metavar="BRANCH",
            help="Publish: results on BRANCH, task branches for approved patches, pushed.",
        ),
    ] = None,
    results_from: Annotated[
        str | None,
        typer.Option(
            "--results-from",
            metavar="REF",
            help="First copy in the result files REF holds (e.g. origin/omni/results).",
        ),
    ] = None,
    log_format: Annotated[
        Literal["text", "json"] | None,
        typer.Option("--log-format", help="Log lines as text (default) or JSON (stderr)."),
    ] = None,
    verbose: VerboseOpt = False,
    config: ConfigOpt = None,
    tasks: TasksOpt = None,
    results: ResultsOpt = None,
    state: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run tasks: once (`--once`), or as a service until SIGTERM.

    Example: `omni run --once` · `omni run --once --dry-run` ·
    `omni run --once --task nightly-report --force` · `omni run --once --push omni/results`
    """
    out, err = render.consoles()
    once_only = {"--task": bool(task), "--force": force, "--shard": bool(shard)}
    once_only |= {"--commit": commit, "--push": bool(push), "--dry-run": dry_run}
    once_only |= {"--results-from": bool(results_from)}
    format_ = LogFormat(log_format or "text")
    early = _early(ctx, keep=not once)
    if not once:
        not_with(err, once_only | {"--json": as_json}, "these go with --once")
        cfg, paths = setup(
            err, config, tasks, results, state, log_format=format_, log_level=logging.INFO
        )
        from runner.app.service import serve  # noqa: PLC0415 - loads the service

        raise typer.Exit(serve(cfg, paths, log_format=format_, early=early, verbose=verbose))
    if dry_run:
        not_with(
            err,
            {"--commit": commit, "--push": bool(push), "--results-from": bool(results_from)},
            "a dry run commits nothing",
        )
    cfg, paths = setup(
        err,
        config,
        tasks,
        results,
        state,
        as_json=as_json,
        log_format=format_,
        log_level=logging.WARNING,
        verbose=verbose,
    )
    options = _once_options(err, task, force, shard, (commit, push, results_from), as_json=as_json)
    if dry_run:
        _dry_run(out, err, cfg, paths, options, as_json=as_json)
    # JSON logs: stderr is for machines, no progress there.
    _once(out, err, (cfg, paths), options, progress=format_ is LogFormat.TEXT, as_json=as_json)


# After `run`, so `omni --help` lists them in the order a person reaches for them.
for command in (*looks.COMMANDS, *publishing.COMMANDS):
    app.command()(command)


def _once_options(  # pylint: disable=too-many-arguments
    err: Screen,
    task: str | None,
    force: bool,
    shard: str | None,
    git: tuple[bool, str | None, str | None],
    *,
    as_json: bool,
) -> OnceOptions:
    """``git``: ``--commit``, ``--push``, ``--results-from``."""
    from runner.app.once import OnceOptions  # noqa: PLC0415 - loads mcp
    from runner.planning.plan import Shard  # noqa: PLC0415

    try:
        parsed = Shard.parse(shard) if shard else None
    except ValueError as exc:
        fail(err, str(exc), USAGE, as_json=as_json)
    commit, push, results_from = git
    return OnceOptions(
        task_id=task,
        force=force,
        shard=parsed,
        commit=commit,
        push=push,
        results_from=results_from,
    )


def _dry_run(
    out: Screen,
    err: Screen,
    cfg: Config,
    paths: ResolvedPaths,
    options: OnceOptions,
    *,
    as_json: bool,
) -> None:
    from runner.app.inspect import dry_run, dry_run_json  # noqa: PLC0415
    from runner.planning.dueness import clock_from  # noqa: PLC0415

    with failing(err, as_json=as_json):
        report = dry_run(cfg, paths, options, clock_from(os.environ)())
    if as_json:
        print_json(dry_run_json(report, cfg))
    else:
        looks.print_dry_run(out, err, report, cfg)
    raise typer.Exit(report.exit_code)


def _once(  # pylint: disable=too-many-arguments
    out: Screen,
    err: Screen,
    loaded: tuple[Config, ResolvedPaths],
    options: OnceOptions,
    *,
    progress: bool,
    as_json: bool,
) -> None:
    import asyncio  # noqa: PLC0415

    from runner.app.once import run_once  # noqa: PLC0415 - loads mcp

    cfg, paths = loaded
    shown = progress and not as_json
    with failing(err, as_json=as_json), render.RunProgress(err, enabled=shown) as progress_:
        report = asyncio.run(
            run_once(cfg, paths, options, on_planned=progress_.start, on_finished=progress_.advance)
        )
    if as_json:
        published = report.published.as_json() if report.published is not None else None
        git = {"git": published, "git_error": report.git_error}
        print_json(render.once_json(report) | (git if published or report.git_error else {}))
    else:
        render.print_once(out, err, report, paths)
        if report.published is not None:
            publishing.print_publish(out, err, report.published)
        elif report.git_error is not None:
            render.line(err, f"git: {report.git_error}", "red")
    raise typer.Exit(report.exit_code)


def _git_json(published: Any, error: str | None) -> dict[str, Any]:
    if published is None and error is None:
        return {}
    shown = None if published is None else dataclasses.asdict(published)
    return {"git": shown, "git_error": error}


def _print_git(out: Screen, err: Screen, published: Any, error: str | None) -> None:
    if error is not None:
        render.line(err, f"git: {error}", "red")
    elif published is not None:
        what = f"committed {published.commit[:10]}" if published.commit else "nothing new to commit"
        sent = f", pushed to {published.remote}" if published.pushed else ""
        render.line(out, f"git: {what} on {published.branch}{sent}")


@app.command()
def prune(  # pylint: disable=too-many-arguments
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

    out, err = render.consoles()
    cfg, paths = setup(err, config, results=results, state=state, as_json=as_json)
    with failing(err, as_json=as_json):
        done, published = prune_and_publish(
            paths.results,
            paths.state,
            keep,
            result_check(cfg),
            dry_run=dry_run,
            commit=commit,
            push=push,
        )
    if as_json:
        removed = [str(f.path) for f in done.removed]
        data = {"removed": removed, "kept": done.kept, "rows_deleted": done.rows_deleted}
        print_json(data | _git_json(published, None))
    else:
        verb = "would remove" if dry_run else "removed"
        for item in done.removed:
            render.line(out, f"{verb} {item.path}")
        render.line(out, f"{verb} {len(done.removed)} result file(s), kept {done.kept}")
        _print_git(out, err, published, None)


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

    out, err = render.consoles()
    _, paths = setup(err, config, state=state, as_json=as_json)
    if not is_postgres_url(to):
        fail(err, "--to wants a postgresql:// URL", USAGE, as_json=as_json)
    with failing(err, as_json=as_json):
        report = migrate_to(paths.state, to)
    if as_json:
        print_json(dataclasses.asdict(report))
        return
    counts = ", ".join(f"{n} {table}" for table, n in report.copied.items())
    render.line(out, f"copied {report.source} into {report.target}: {counts}")


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="The repository to scaffold.")] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Scaffold `config.yaml`, `tasks/` with examples, and the GitHub Actions workflow.

    Example: `omni init` · `omni init ../my-repo --force`
    """
    from runner.app.scaffold import init as scaffold  # noqa: PLC0415 - keeps startup lean
    from runner.app.scaffold import next_steps  # noqa: PLC0415

    out, err = render.consoles()
    if path.exists() and not path.is_dir():
        fail(err, f"{path} is a file; omni init scaffolds a folder (a repository)", as_json=as_json)
    with failing(err, as_json=as_json):
        done = scaffold(path, force=force)
    if as_json:
        print_json({"files": [{"path": str(i.path), "outcome": i.outcome.value} for i in done]})
        return
    for item in done:
        render.line(out, f"{item.outcome:>8}  {item.path}")
    for step in next_steps(path):
        render.line(out, step)


@app.command()
def doctor(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check the gateway, the direct API, the keys (present or not, never shown) and each
    executor (starts, lists tools); one line each (ok, warn, fail, skip) with its time;
    exit 1 only if one fails.

    Example: `omni doctor` · `omni doctor --json | jq '.checks[] | select(.status == "fail")'`
    """
    import asyncio  # noqa: PLC0415

    from runner.app.doctor import diagnose  # noqa: PLC0415 - loads mcp
    from runner.defs.environment import redactor_for  # noqa: PLC0415

    out, err = render.consoles()
    cfg, _ = setup(err, config, as_json=as_json, verbose=verbose)
    env = dict(os.environ)
    redactor = redactor_for(cfg, env)
    workspace = Path(cfg.workspace) if cfg.workspace else Path.cwd()
    found = asyncio.run(diagnose(cfg, environ=env, workspace=workspace, redactor=redactor))
    if as_json:
        print_json(found.as_json())
    else:
        render.print_doctor(out, found)
    raise typer.Exit(found.exit_code)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the task file (for editors and CI checks).

    Example: `omni schema > task.schema.json`
    """
    from runner.defs.tasks import TaskSpec  # noqa: PLC0415 - keeps startup lean

    print_json(TaskSpec.model_json_schema())


def plain_help(cli: typer.Typer) -> None:
    """Help and usage errors for a pipe, a file or a CI log: click's plain text, each
    option and each error on one whole line (rich's boxes wrap at 80 columns, or at
    ``COLUMNS``, and cut option names)."""
    cli.rich_markup_mode = None
    cli.info.context_settings = {"terminal_width": 1_000_000, "max_content_width": 1_000_000}


def for_command(argv: Sequence[str]) -> typer.Typer:
    """The command line for ``argv``: the one command it names alone, when it names one
    first (typer reads the signature, types and help of every command a group holds
    before it parses anything: about 0.01 s for all of them); else the whole ``app``
    (``--help``, completion, a mistyped command and its suggestion)."""
    first = argv[0] if argv else None
    named = [
        info
        for info in app.registered_commands
        if info.callback is not None
        and first == (info.name or info.callback.__name__.lower().replace("_", "-"))
    ]
    if len(named) != 1:
        return app
    cli = _cli()
    cli.registered_commands = named
    return cli


def main(signals: EarlySignals | None = None) -> None:
    """The command line (:mod:`runner.cli.entry` notes the stop ``signals`` first)."""
    redactor = Redactor(secret_env_values(os.environ))
    guard_output(redactor)  # the config's secrets join once it is loaded
    configure_logging(LogFormat.TEXT, redactor, level=logging.WARNING)
    cli = for_command(sys.argv[1:])
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        plain_help(cli)
    try:
        cli(obj=signals, prog_name="omni")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
