"""The ``omni`` commands of the trusted step: ``publish`` (results branch, task
branches, pull requests) and ``report`` (the results pull request's body). Parse, call
``runner.app``, print; :data:`COMMANDS` is registered on the app by
:mod:`runner.cli.main`. Both load gitpython, so only inside the command.
"""
# pylint: disable=import-outside-toplevel  # deliberate: see the module docstring

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from runner.cli import render
from runner.cli.common import (
    ConfigOpt,
    JsonOpt,
    ResultsOpt,
    StateOpt,
    TasksOpt,
    failing,
    print_json,
    result_check,
    setup,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from runner.cli.screens import Screen


def publish(
    source: Annotated[
        Path | None,
        typer.Option("--from", help="A folder of results and patches (an artifact) to take in."),
    ] = None,
    results_branch: Annotated[
        str, typer.Option("--results-branch", help="The branch that collects the results.")
    ] = "omni/results",
    base: Annotated[
        str | None,
        typer.Option("--base", help="The branch pull requests go into [default: checked out]."),
    ] = None,
    push: Annotated[bool, typer.Option("--push", help="Push the branches to origin.")] = False,
    pull_requests: Annotated[
        bool,
        typer.Option("--pull-requests", help="Open or update the pull requests with `gh`."),
    ] = False,
    config: ConfigOpt = None,
    tasks: TasksOpt = None,
    results: ResultsOpt = None,
    state: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The trusted step: check every result file and patch, commit only `results/` to the
    results branch, rebuild each task's branch from its newest approved patch, write the
    pull-request texts (and open them with `--pull-requests`).

    Example: `omni publish --from artifact/ --push --pull-requests`
    """
    from runner.app import publish as app_publish  # noqa: PLC0415 - loads gitpython

    out, err = render.consoles()
    cfg, paths = setup(err, config, tasks, results, state, as_json=as_json)
    options = app_publish.PublishOptions(
        source=source, branch=results_branch, push=push, base=base, pull_requests=pull_requests
    )
    with failing(err, as_json=as_json):
        done = app_publish.publish(cfg, paths, options, environ=dict(os.environ))
    if as_json:
        print_json(done.as_json())
    else:
        print_publish(out, err, done)
    raise typer.Exit(done.exit_code)


def print_publish(out: Screen, err: Screen, done: Any) -> None:
    """What a publish did, one line a thing."""
    results = done.results
    if results is not None:
        what = f"committed {results.commit[:10]}" if results.commit else "nothing new to commit"
        sent = f", pushed to {results.remote}" if results.pushed else ""
        render.line(out, f"results: {what} on {results.branch}{sent}")
    for branch in done.tasks:
        sent = " and pushed" if branch.pushed else (" (unchanged)" if branch.unchanged else "")
        render.line(out, f"task branch {branch.branch}: {branch.commit[:10]}{sent}")
    for pull in done.pull_requests:
        render.line(out, f"pull request from {pull['head']}: {pull['operation']}")
    for refusal in done.checked.refused:
        render.line(err, f"refused {refusal.path}: {refusal.reason}", "yellow")
    for error in done.errors:
        render.line(err, f"git: {error}", "red")


def report(
    base: Annotated[str, typer.Option("--base", help="The branch results merge into.")] = "main",
    branch: Annotated[str, typer.Option("--branch", help="The results branch.")] = "omni/results",
    config: ConfigOpt = None,
    results: ResultsOpt = None,
    state: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print, as Markdown, the results BRANCH holds and BASE lacks (the pull request body),
    and the tasks that wait (from the state file, when there is one).

    Example: `omni report --base main --branch omni/results > body.md`
    """
    from runner.app.report import pull_request_report  # noqa: PLC0415 - loads gitpython

    _, err = render.consoles()
    cfg, paths = setup(err, config, results=results, state=state, as_json=as_json)
    with failing(err, as_json=as_json):
        found = pull_request_report(
            paths, result_check(cfg), base=base, branch=branch, environ=os.environ
        )
    if as_json:
        print_json(found.as_json())
    else:
        sys.stdout.write(found.markdown())


COMMANDS: tuple[Callable[..., None], ...] = (publish, report)
