"""The git source of service mode: a clone of a repository whose ``tasks/`` folder feeds
the service.

It keeps its clone (fetch + hard reset, never a merge) and reports the task files under
``tasks/`` that changed since the last processed commit, recorded in the store, as
:class:`~runner.planning.sources.SourceChange` lists. Library errors become
:class:`SourceError`, logged once per distinct message; the source keeps going.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from runner.core.errors import SourceError
from runner.planning.sources import (
    ChangeKind,
    OnChanges,
    SourceChange,
    is_task_file,
    sleep_until,
    task_files,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.defs.config import GitSource as GitSourceConfig
    from runner.state.interface import StateStore

log = logging.getLogger(__name__)


def safe_url(url: str) -> str:
    """``url`` without a password or token in it, for messages."""
    parts = urlsplit(url)
    if not parts.password and not (parts.username and parts.scheme in {"http", "https"}):
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class GitUpdate:
    """One successful poll: the commit now checked out, and what changed since the
    last processed one (``None``: no processed commit to compare with, so everything)."""

    head: str
    changes: list[SourceChange] | None
    rewritten_from: str | None = None


class GitSource:
    """A git repository whose ``tasks/`` folder feeds the service."""

    #: Store metadata key of the last processed commit.
    COMMIT_KEY = "sources.git.commit"

    def __init__(
        self,
        spec: GitSourceConfig,
        *,
        clone_dir: Path,
        store: StateStore,
        on_changes: OnChanges,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.clone_dir = clone_dir
        self.tasks_root = clone_dir / "tasks"
        self._store = store
        self._on_changes = on_changes
        # Never wait for a password prompt: a poll that cannot authenticate fails.
        self._env = {**(os.environ if environ is None else environ), "GIT_TERMINAL_PROMPT": "0"}
        self._env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        url = spec.url
        if "://" not in url and Path(url).exists():
            url = str(Path(url).resolve())  # a relative path would be read from the clone
        self._url = url
        self._where = f"git source {safe_url(spec.url)} ({spec.branch})"
        self._last_error: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``poll_interval`` until ``stop``; the first success loads every
        task file of the checkout, later ones only what changed."""
        loaded = False
        while not stop.is_set():
            update = await self.poll()
            if not loaded or (update is not None and update.changes is None):
                # Everything checked out, even when this fetch failed: the last good
                # checkout keeps scheduled tasks going while the remote is away.
                if update is not None or self.tasks_root.is_dir():
                    self._on_changes(self._everything())
                    loaded = True
            elif update is not None and update.changes:
                self._on_changes(update.changes)
            if update is not None:
                self._store.meta_set(self.COMMIT_KEY, update.head)
            await sleep_until(stop, self.spec.poll_interval)

    async def poll(self) -> GitUpdate | None:
        """Fetch and check out the branch; ``None`` (and an error logged) on failure."""
        processed = self._store.meta_get(self.COMMIT_KEY)
        try:
            update = await asyncio.to_thread(self.sync, processed)
        except SourceError as exc:
            message = str(exc)
            if message != self._last_error:
                log.error("%s", message)
                self._last_error = message
            return None
        if self._last_error is not None:
            log.info("%s: reachable again", self._where)
            self._last_error = None
        if update.rewritten_from is not None:
            log.error(
                "%s",
                SourceError(
                    f"{self._where}: the branch was force-pushed: processed commit "
                    f"{update.rewritten_from[:12]} is not in the history of {update.head[:12]};"
                    " following the new history (task files that differ count as changed)"
                ),
            )
        return update

    def sync(self, processed: str | None) -> GitUpdate:
        """Blocking: clone once, fetch, hard-reset to the branch, diff against
        ``processed``. Raises :class:`SourceError` for every git failure."""
        # gitpython refuses to import where no git executable is found: import on use.
        # pylint: disable-next=import-outside-toplevel
        import git  # noqa: PLC0415

        repo = None
        try:
            repo = self._open(git)
            tracking = f"refs/remotes/origin/{self.spec.branch}"
            repo.git.fetch(
                "origin",
                f"+refs/heads/{self.spec.branch}:{tracking}",
                kill_after_timeout=max(30.0, self.spec.poll_interval),
            )
            head = repo.commit(tracking)
            old = _commit_or_none(repo, processed, git)
            rewritten = old is not None and not repo.is_ancestor(old, head)
            repo.git.reset("--hard", head.hexsha)
            changes = None if old is None else self._diff(old, head)
        except git.GitCommandError as exc:
            raise SourceError(f"{self._where}: {_git_message(exc)}; retrying") from None
        except (git.GitError, ValueError, OSError) as exc:
            raise SourceError(f"{self._where}: {type(exc).__name__}: {exc}; retrying") from None
        finally:
            if repo is not None:
                repo.close()  # its `git cat-file` helpers end with it
        return GitUpdate(head.hexsha, changes, processed if rewritten else None)

    def _open(self, git: Any) -> Any:
        if (self.clone_dir / ".git").is_dir():
            repo = git.Repo(self.clone_dir)
            if repo.remotes.origin.url != self._url:
                repo.remotes.origin.set_url(self._url)
        else:
            self.clone_dir.mkdir(parents=True, exist_ok=True)
            repo = git.Repo.init(self.clone_dir)
            repo.create_remote("origin", self._url)
        repo.git.update_environment(**self._env)
        return repo

    def _diff(self, old: Any, head: Any) -> list[SourceChange]:
        changes: list[SourceChange] = []
        for diff in old.diff(head, paths="tasks"):
            if diff.change_type in {"D", "R"} and diff.a_path:
                changes.append(self._change(ChangeKind.REMOVED, diff.a_path))
            if diff.change_type != "D" and diff.b_path:
                changes.append(self._change(ChangeKind.CHANGED, diff.b_path))
        return [c for c in changes if is_task_file(c.path, self.tasks_root)]

    def _change(self, kind: ChangeKind, relative: str) -> SourceChange:
        return SourceChange(kind, self.clone_dir / relative, self.tasks_root)

    def _everything(self) -> list[SourceChange]:
        return [
            SourceChange(ChangeKind.CHANGED, path, self.tasks_root)
            for path in task_files(self.tasks_root)
        ]


def _commit_or_none(repo: Any, sha: str | None, git: Any) -> Any:
    """The commit ``sha`` if the clone has it (a fresh clone may not)."""
    if sha is None:
        return None
    try:
        return repo.commit(sha)
    except (git.BadName, ValueError):
        return None


def _git_message(exc: Any) -> str:
    """The telling line of a failed git command (its first ``fatal:``/``error:`` line)."""
    lines = [line.strip() for line in str(exc.stderr or "").splitlines() if line.strip()]
    lines = [line.removeprefix("stderr: ").strip("'").strip() for line in lines]
    telling = [line for line in lines if line.startswith(("fatal:", "error:"))] or lines
    command = " ".join(str(part) for part in exc.command[:2]) if exc.command else "git"
    return f"`{command}` failed: {telling[0] if telling else f'exit {exc.status}'}"
