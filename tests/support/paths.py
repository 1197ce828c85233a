"""Where the support scripts live, and the runner's paths under a test's folder."""

from __future__ import annotations

from pathlib import Path

from runner.defs.environment import ResolvedPaths

#: The test MCP servers, run as a script: ``python SERVERS MODE [PORT]``.
SERVERS = Path(__file__).with_name("servers.py")
#: The hostile MCP server, run as a script: ``python HOSTILE [--collide]``.
HOSTILE = Path(__file__).with_name("hostile.py")


def paths_under(root: Path, config: Path | None = None) -> ResolvedPaths:
    """``tasks/``, ``results/`` and ``.omni/state.db`` under ``root``."""
    return ResolvedPaths(
        config=config,
        tasks=root / "tasks",
        results=root / "results",
        state=root / ".omni" / "state.db",
    )
