"""Model-driven runs in their own workspace and sandbox (DESIGN §3, Trust).

"What a person wrote runs as written; what a model decides runs in a sandbox and only
proposes." A prompt task, or any task declaring ``pull_request:``, gets from
:meth:`RunSpaces.open` a scratch copy of the repository (``runner.reach.scratch``) and
its own executor pool started in it, under bubblewrap when ``sandbox`` allows
(``runner.reach.sandbox``). When the run ends, its workspace's diff against the base is
sorted into a :class:`~runner.reach.scratch.Proposal`, and the scratch is removed.

:class:`Boundaries` says, once per process, which paths are protected (the built-in
executor's file tools refuse them; no proposal may touch them) and which are left out
of a run's workspace altogether.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.errors import OmniError, SandboxUnavailableError, WorkspaceError
from runner.core.pathglob import PathRules
from runner.defs.config import BUILTIN, SandboxMode
from runner.reach.builtin.catalog import DESCRIPTIONS, TOOLS
from runner.reach.builtin.ops import ALWAYS_PROTECTED
from runner.reach.executors import ExecutorPool
from runner.reach.sandbox import Confinement, omni_read_paths, probe, sandbox_state
from runner.reach.scratch import Proposal, Scratch, find_source
from runner.reach.tools import ToolInfo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from runner.core.redaction import Redactor
    from runner.defs.config import Config, McpServer
    from runner.defs.environment import ResolvedPaths
    from runner.defs.tasks import Task
    from runner.dispatch.agent import AgentPool
    from runner.reach.sandbox import Probe, SandboxState
    from runner.reach.tools import ToolOutcome

#: The default config file, protected even when it does not exist (yet).
DEFAULT_CONFIG = "config.yaml"


@dataclass(frozen=True, slots=True)
class Boundaries:
    """Protected and hidden paths, as globs relative to the repository's top folder."""

    root: Path
    """The repository containing the workspace (or the workspace itself)."""
    hidden: tuple[str, ...]
    """Left out of a model-driven run's workspace: tasks, results, config, state."""
    protected: tuple[str, ...]
    """Refused by the built-in executor's file tools and never in a proposed change."""

    @classmethod
    def of(cls, config: Config, paths: ResolvedPaths, workspace: Path) -> Boundaries:
        """The boundaries for a runner whose built-in executor works in ``workspace``."""
        root = find_source(workspace).root
        omni_files = [paths.tasks, paths.results, Path(DEFAULT_CONFIG), paths.state.parent]
        if paths.config is not None:
            omni_files.append(paths.config)
        if config.mcp_servers_from:
            omni_files.append(Path(config.mcp_servers_from))
        hidden = [".omni", *(rel for p in omni_files if (rel := _inside(p, root)))]
        protected = [*ALWAYS_PROTECTED, *hidden, *config.protected_paths]
        return cls(root, tuple(dict.fromkeys(hidden)), tuple(dict.fromkeys(protected)))

    def relative_to(self, folder: Path) -> tuple[str, ...]:
        """The protected globs for a built-in executor rooted at ``folder`` (a folder
        inside the repository; globs outside it are dropped)."""
        try:
            prefix = folder.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return ()
        if prefix == ".":
            return self.protected
        found = []
        for glob in self.protected:
            if glob.startswith(prefix + "/"):
                found.append(glob.removeprefix(prefix + "/"))
            elif prefix.startswith(glob.rstrip("/") + "/") or prefix == glob:
                return ("**",)  # the whole workspace is protected
        return tuple(found)


def _inside(path: Path, root: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None
    return None if rel == "." else rel


@dataclass(slots=True)
class Isolated:
    """What a model-driven run's isolation did; owned by the caller like a transcript."""

    sandbox: dict[str, Any] = field(default_factory=dict)
    """The result file's ``sandbox`` field."""
    proposal: Proposal | None = None
    """The run's change, sorted (empty when no tool was called); ``None`` when the run
    ended before it had a workspace (e.g. ``sandbox: required`` refused it)."""


class RunPool:
    """One model-driven run's executors, in its own workspace (an ``AgentPool``).

    Started on first need: the built-in executor's tools (always the same) come from its
    static catalog, so a run whose model calls no tool costs no workspace and no
    executor start. Any tool call, or listing another executor's tools, makes the
    workspace and starts the run's own pool there (sandboxed when it can be)."""

    def __init__(
        self,
        spaces: RunSpaces,
        shared: AgentPool,
        confine: Callable[[Scratch], Confinement | None],
    ) -> None:
        self._spaces = spaces
        self._shared = shared
        self._confine = confine
        self._stack = AsyncExitStack()
        self._pool: ExecutorPool | None = None
        self._starting = asyncio.Lock()
        self.scratch: Scratch | None = None
        """The run's workspace, once made."""

    async def _own(self) -> ExecutorPool:
        async with self._starting:
            if self._pool is None:
                self.scratch = await asyncio.to_thread(self._spaces.new_scratch)
                pool = self._spaces.pool_in(self.scratch, self._confine(self.scratch))
                self._pool = await self._stack.enter_async_context(pool)
        return self._pool

    async def list_tools(self, executor: str) -> list[ToolInfo]:
        """The executor's tools (the built-in's from its catalog: nothing starts)."""
        if executor == BUILTIN and BUILTIN not in self._spaces.servers:
            return [ToolInfo(name, DESCRIPTIONS[name], schema) for name, schema in TOOLS.items()]
        return await (await self._own()).list_tools(executor)

    async def call_tool(
        self,
        executor: str,
        tool: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the MCP read timeout, not ours
        meta: dict[str, Any] | None = None,
    ) -> ToolOutcome:
        """Call one tool on the run's own executor."""
        pool = await self._own()
        return await pool.call_tool(executor, tool, args, timeout=timeout, meta=meta)

    def opt_in_tools(self, executor: str) -> frozenset[str]:
        """Tools offered to a model only when its task lists them."""
        return self._shared.opt_in_tools(executor)

    async def close(self) -> None:
        """Stop the run's executors (the workspace stays, for its proposal)."""
        await self._stack.aclose()


class RunSpaces:
    """Opens model-driven runs' workspaces and executor pools."""

    def __init__(
        self,
        *,
        config: Config,
        boundaries: Boundaries,
        environ: Mapping[str, str],
        redactor: Redactor,
        prober: Callable[[], Probe] | None = None,
        scratch_parent: Path | None = None,
    ) -> None:
        """``prober``: finds out whether bubblewrap works (default: a real trial start,
        once per process). ``scratch_parent``: where workspaces are made (default: a
        RAM folder when there is one, else the temp folder)."""
        self._config = config
        self._servers: Mapping[str, McpServer] = config.mcp_servers
        self._boundaries = boundaries
        self._hidden = PathRules(boundaries.hidden)
        self._protected = PathRules(boundaries.protected)
        self._environ = environ
        self._redactor = redactor
        self._prober = prober or (lambda: probe(environ))
        self._parent = scratch_parent if scratch_parent is not None else default_scratch_parent()

    def state(self) -> SandboxState:
        """The sandbox model-driven runs get here (probing bubblewrap unless ``off``)."""
        mode = self._config.sandbox
        return sandbox_state(mode, None if mode is SandboxMode.OFF else self._prober())

    @property
    def servers(self) -> Mapping[str, McpServer]:
        """The configured executors."""
        return self._servers

    @asynccontextmanager
    async def open(
        self, task: Task, executor: str, isolated: Isolated, shared: AgentPool
    ) -> AsyncIterator[RunPool]:
        """The executors of one run of ``task`` (on ``executor``), in its own workspace.
        On leaving (also after an error, not after a cancellation) the run's proposal is
        put on ``isolated`` and the workspace removed. Raises
        :class:`SandboxUnavailableError` under ``sandbox: required`` when no sandbox
        works here."""
        mode = self._config.sandbox
        found = None if mode is SandboxMode.OFF else self._prober()
        if mode is SandboxMode.REQUIRED and found is not None and not found.available:
            raise SandboxUnavailableError(
                f"sandbox: required, but no sandbox works here: {found.cause}; fix: "
                f"{found.fix} (or set `sandbox: auto` to run unsandboxed, with a warning)"
            )
        isolated.sandbox = sandbox_state(mode, found).as_dict()
        if executor in self._servers and self._servers[executor].url is not None:
            isolated.sandbox["note"] = (
                f"executor {executor!r} is remote: it runs outside this machine's sandbox"
            )

        def confine(scratch: Scratch) -> Confinement | None:
            if found is None or not found.available or found.bwrap is None:
                return None
            read_only = (*scratch.read_only(), *omni_read_paths())
            return Confinement(found.bwrap, scratch.work, read_only, network=task.spec.network)

        pool = RunPool(self, shared, confine)
        try:
            try:
                yield pool
            finally:
                await pool.close()
            isolated.proposal = await self._proposal(task, pool.scratch)
        except OmniError:
            isolated.proposal = await self._proposal(task, pool.scratch)
            raise
        finally:
            if pool.scratch is not None:
                await asyncio.to_thread(pool.scratch.close)

    def pool_in(self, scratch: Scratch, confinement: Confinement | None) -> ExecutorPool:
        """A run's own executor pool, working in ``scratch``."""
        return ExecutorPool(
            self._servers,
            workspace=scratch.work,
            environ=self._environ,
            protect=self._boundaries.protected,
            per_run=True,
            sandbox=confinement,
        )

    def new_scratch(self) -> Scratch:
        """A new workspace; in the temp folder when the RAM folder is full."""
        try:
            return Scratch.create(self._boundaries.root, self._hidden, parent=self._parent)
        except (WorkspaceError, OSError) as exc:
            if self._parent is None or "No space left" not in str(exc):
                raise
            return Scratch.create(self._boundaries.root, self._hidden, parent=None)

    async def _proposal(self, task: Task, scratch: Scratch | None) -> Proposal:
        if scratch is None:  # no tool was called: nothing can have changed
            return Proposal(base="")
        pull = task.spec.pull_request
        return await asyncio.to_thread(
            scratch.proposal,
            protected=self._protected,
            allowed=PathRules(pull.paths) if pull is not None else None,
            has_secret=lambda text: self._redactor.text(text) != text,
            limit=self._config.limits.patch_bytes,
        )


def default_scratch_parent() -> Path | None:
    """``/dev/shm`` when it is a writable folder (a workspace in RAM is made several
    times faster than on disk), else ``None`` (the system temp folder)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None
