"""The dispatching machinery of one runner process, built the same way by `run --once`
and by the service: redactor, the shared executor pool (its built-in executor refusing
protected paths), model-driven runs' own workspaces and sandboxes, fault handling,
agent, dispatcher."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runner.dispatch.agent import Agent
from runner.dispatch.dispatcher import Dispatcher
from runner.dispatch.faults import FaultHandling
from runner.dispatch.isolation import Boundaries, RunSpaces
from runner.reach.executors import ExecutorPool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping
    from datetime import datetime

    from runner.core.redaction import Redactor
    from runner.defs.config import Config
    from runner.defs.environment import ResolvedPaths
    from runner.dispatch.outcome import Finished
    from runner.state.interface import StateStore


@dataclass(frozen=True, slots=True)
class Machinery:
    """What a runner dispatches with while :func:`dispatching` is open."""

    dispatcher: Dispatcher
    faults: FaultHandling


@asynccontextmanager
async def dispatching(
    config: Config,
    paths: ResolvedPaths,
    store: StateStore,
    *,
    environ: Mapping[str, str],
    redactor: Redactor,
    clock: Callable[[], datetime],
    on_finished: Callable[[Finished], None] | None = None,
) -> AsyncIterator[Machinery]:
    """Open the executor pool and fault handling, and give the dispatcher over them;
    leaving closes every executor connection. ``redactor`` (the secrets of the config
    and ``environ``) masks everything the machinery writes."""
    workspace = Path(config.workspace) if config.workspace else Path.cwd()
    boundaries = Boundaries.of(config, paths, workspace)
    spaces = RunSpaces(config=config, boundaries=boundaries, environ=environ, redactor=redactor)
    faults = FaultHandling(
        config,
        store=store,
        redactor=redactor,
        tasks_root=paths.tasks,
        results_root=paths.results,
        environ=environ,
        clock=clock,
    )
    async with (
        ExecutorPool(
            config.mcp_servers,
            workspace=workspace,
            environ=environ,
            protect=boundaries.relative_to(workspace),
        ) as pool,
        faults,  # imports litellm only on a prompt task's first model call
    ):
        dispatcher = Dispatcher(
            store=store,
            pool=pool,
            config=config,
            results_root=paths.results,
            redactor=redactor,
            clock=clock,
            on_finished=on_finished,
            agent=Agent(llm=faults.models, pool=pool, config=config, redactor=redactor),
            mode_of=faults.mode,
            spaces=spaces,
        )
        yield Machinery(dispatcher, faults)
