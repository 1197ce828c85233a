"""What every command shares: the path and ``--json`` options, loading the config (every
problem printed, exit 2; from then on its secrets are redacted from all output and logs
go to stderr), and the one way errors end a command.

Exit codes: 0 all well; 1 something the command checked or ran failed (a run, a task
file, git); 2 it could not do what it was asked (bad config, an unknown ``--task``, a
missing tasks folder, an option that does not apply).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from runner.app.logs import LogFormat, configure_logging
from runner.cli import render
from runner.core.errors import ConfigError, OmniError, UsageError
from runner.core.redaction import RedactingWriter, Redactor

if TYPE_CHECKING:
    from collections.abc import Iterator

    from runner.cli.screens import Screen
    from runner.defs.config import Config
    from runner.defs.environment import ResolvedPaths
    from runner.state.resultcheck import ResultCheck

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
    typer.Option(
        "--state", "--state-file", help="State file [env OMNI_STATE; default ./.omni/state.db]"
    ),
]
#: ``status`` and ``tasks``, where ``--state`` filters by run state.
StateFileOpt = Annotated[
    Path | None,
    typer.Option("--state-file", help="State file [env OMNI_STATE; default ./.omni/state.db]"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Log more (INFO and DEBUG, libraries included)."),
]

#: Exit code: the command could not do what it was asked (see the module docstring).
USAGE = 2


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(err: Screen, message: str, code: int = 1, *, as_json: bool = False) -> NoReturn:
    """End the command: ``error: message`` on stderr (and ``{"error": ...}`` on stdout
    for ``--json``)."""
    render.line(err, f"error: {message}", "red")
    if as_json:
        print_json({"ok": False, "error": message, "exit_code": code})
    raise typer.Exit(code)


@contextmanager
def failing(err: Screen, *, as_json: bool = False) -> Iterator[None]:
    """End the command on an error from the library: exit 2 for a :class:`UsageError`,
    1 for any other :class:`OmniError`, the message on stderr."""
    try:
        yield
    except UsageError as exc:
        fail(err, str(exc), USAGE, as_json=as_json)
    except OmniError as exc:
        fail(err, str(exc), as_json=as_json)


def guard_output(redactor: Redactor) -> None:
    """Redact everything written to stdout and stderr from now on with ``redactor``."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, RedactingWriter):
            stream.flush()
            stream.redactor = redactor
        else:
            setattr(sys, name, RedactingWriter(stream, redactor))


def setup(  # pylint: disable=too-many-arguments,too-many-locals  # one option a flag
    err: Screen,
    config: Path | None,
    tasks: Path | None = None,
    results: Path | None = None,
    state: Path | None = None,
    *,
    as_json: bool = False,
    log_format: LogFormat = LogFormat.TEXT,
    log_level: int = logging.WARNING,
    verbose: bool = False,
) -> tuple[Config, ResolvedPaths]:
    """Load the config and resolve the paths. A bad config prints every problem, one
    ``FILE:LINE: KEY: message`` line each (and ``{"config_problems": [...]}`` for
    ``--json``), and exits 2. From here on the config's secrets are redacted from all
    output, and logs (``log_level`` and up; DEBUG with ``verbose``) go to stderr."""
    # pylint: disable=import-outside-toplevel  # pydantic's models: only now
    from runner.defs.configload import load_config  # noqa: PLC0415
    from runner.defs.environment import (  # noqa: PLC0415
        config_path_from,
        redactor_for,
        resolve_paths,
    )

    path, required = config_path_from(config)
    try:
        cfg = load_config(path, required=required)
        paths = resolve_paths(
            cfg, path if path.exists() else None, tasks=tasks, results=results, state=state
        )
    except ConfigError as exc:
        lines = exc.lines()
        for text in lines:
            render.line(err, f"config error: {text}", "red")
        if as_json:
            print_json({"ok": False, "exit_code": USAGE, "config_problems": lines})
        raise typer.Exit(USAGE) from None
    redactor = redactor_for(cfg, os.environ)
    guard_output(redactor)
    configure_logging(log_format, redactor, level=log_level, verbose=verbose)
    return cfg, paths


def result_check(cfg: Config) -> ResultCheck:
    """The checks result files pass before they count, at the runner's clock's now."""
    # pylint: disable-next=import-outside-toplevel  # keeps start-up lean
    from runner.planning.dueness import clock_from  # noqa: PLC0415

    # pylint: disable-next=import-outside-toplevel
    from runner.state.resultcheck import ResultCheck  # noqa: PLC0415

    return ResultCheck(clock_from(os.environ)(), cfg.limits.result_file_bytes)


def not_with(err: Screen, given: dict[str, bool], reason: str) -> None:
    """Exit 2 naming the options in ``given`` that were used, when any was: they do
    not apply here (``reason`` says why)."""
    used = [name for name, present in given.items() if present]
    if used:
        fail(err, f"{', '.join(used)}: {reason}", USAGE)
