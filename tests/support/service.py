"""Helpers for the service and source tests (no tests here): an in-process service on a
temp project, readers for result files and rows, polling, and git repositories with a
local bare remote."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from runner.app.service import Service
from runner.defs.config import Config
from runner.defs.environment import ResolvedPaths
from tests.support.git import git

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


def project_paths(root: Path) -> ResolvedPaths:
    """``tasks/``, ``results/`` and ``.omni/state.db`` under ``root``."""
    return ResolvedPaths(
        config=None, tasks=root / "tasks", results=root / "results", state=root / ".omni/state.db"
    )


def make_config(root: Path, **sections: Any) -> Config:
    """A config with the workspace at ``root`` and the given sections
    (``service={"settle_ms": 50}``, ``schedule={...}``, ``sources={...}``)."""
    return Config.model_validate({"workspace": str(root), **sections})


@asynccontextmanager
async def running(
    root: Path, clock: Callable[[], Any] | None = None, **sections: Any
) -> AsyncIterator[Service]:
    """The service on ``root`` (tasks folder created) until the block ends; it must then
    stop cleanly with exit code 0."""
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root)}
    extra = {} if clock is None else {"clock": clock}
    service = Service(make_config(root, **sections), project_paths(root), environ=environ, **extra)
    job = asyncio.create_task(service.run())
    ready = asyncio.ensure_future(service.ready.wait())
    await asyncio.wait({job, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if job.done():
        ready.cancel()
        raise AssertionError(f"the service ended before it was ready: {job.result()!r}")
    assert ready.done(), "the service did not get ready within 20 s"
    try:
        yield service
    finally:
        service.stop("test over")
        assert await asyncio.wait_for(job, 30) == 0


def results_of(root: Path, task_id: str) -> list[dict[str, Any]]:
    """The JSON result files of a task, oldest first."""
    folder = root / "results" / task_id
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def rows(root: Path, task_id: str | None = None) -> list[dict[str, Any]]:
    """Run rows (optionally of one task) in creation order."""
    db = root / ".omni" / "state.db"
    if not db.exists():
        return []
    where, params = ("WHERE task_id = ?", (task_id,)) if task_id else ("", ())
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            found = conn.execute(f"SELECT * FROM runs {where} ORDER BY seq", params).fetchall()
    except sqlite3.OperationalError:  # created, not yet migrated
        return []
    return [dict(row) for row in found]


async def wait_for(check: Callable[[], object], within: float = 15.0, what: str = "") -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what or check}")
        await asyncio.sleep(0.02)


def drop(path: Path, text: str) -> None:
    """Write-then-rename: the file appears complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def echo_task(text: str, **extra: str) -> str:
    """A task file that echoes ``text``; ``extra`` adds top-level keys."""
    lines = ["tool: echo", f"args: {{text: {json.dumps(text)}}}"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


class Remote:
    """A bare repository (the remote) and a working clone that commits and pushes."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q", "--bare", "-b", "main", str(self.bare))
        git(root, "init", "-q", "-b", "main", str(self.work))
        git(self.work, "remote", "add", "origin", str(self.bare))

    def commit(self, files: dict[str, str | None], message: str = "tasks") -> str:
        """Write (or, for ``None``, delete) files, commit; returns the commit id."""
        for name, text in files.items():
            path = self.work / name
            if text is None:
                git(self.work, "rm", "-q", name)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            git(self.work, "add", name)
        git(self.work, "commit", "-q", "-m", message)
        return git(self.work, "rev-parse", "HEAD")

    def push(self, *, force: bool = False) -> None:
        """Push ``main`` to the bare remote."""
        git(self.work, "push", "-q", *(["--force"] if force else []), "origin", "main")

    @classmethod
    def serving(cls, root: Path, files: dict[str, str | None]) -> Remote:
        """A remote whose ``main`` already holds ``files`` (one commit, pushed)."""
        remote = cls(root)
        remote.commit(files)
        remote.push()
        return remote
