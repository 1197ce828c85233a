"""A task's own branch (``omni/task/<task-id>``): the base branch plus the task's newest
approved patch, rebuilt on every publish and pushed with a lease.

Built in a temporary index from the base commit's tree with ``git apply --cached``
(a three-way apply when the base moved on since the run), so the working tree and the
checked-out branch are untouched. Git runs with the safe settings of
:mod:`runner.reach.scratch`: no hooks, no fsmonitor, no user or system config.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core.errors import GitOpsError, WorkspaceError
from runner.reach.scratch import OMNI_IDENTITY, SAFE_GIT_CONFIG_PUSH, run_git

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Every task branch lives under this prefix.
PREFIX = "omni/task/"
_BAD_COMPONENT = re.compile(r"^\.|\.lock$|\.\.|[~^:?*\[\\\s]|@\{")


def branch_name(task_id: str) -> str:
    """The branch of ``task_id``: ``omni/task/<task-id>``, each part made a valid ref
    component (a leading dot or a ``.lock`` ending becomes ``_``)."""
    parts = [_BAD_COMPONENT.sub("_", part) for part in task_id.split("/")]
    return PREFIX + "/".join(parts)


@dataclass(frozen=True, slots=True)
class TaskBranch:
    """What :meth:`TaskBranches.publish` did for one task."""

    task_id: str
    branch: str
    commit: str
    pushed: bool
    updated: bool
    """True when the branch existed on the remote before (its pull request is updated)."""
    unchanged: bool = False
    """True when the remote branch already held this change on this base: left as it was."""


class TaskBranches:
    """Builds and pushes task branches in one repository."""

    def __init__(
        self, root: Path, *, remote: str = "origin", environ: Mapping[str, str] | None = None
    ) -> None:
        self._root = root
        self._remote = remote
        self._identity = {
            k: v for k, v in (environ or {}).items() if k.startswith(("GIT_AUTHOR_", "GIT_COMM"))
        } or OMNI_IDENTITY

    def _git(self, args: list[str], *, stdin: bytes | None = None, index: str | None = None) -> str:
        env = dict(self._identity)
        if index is not None:
            env["GIT_INDEX_FILE"] = index
        prefix = ["-c", "safe.directory=*"]
        for setting in SAFE_GIT_CONFIG_PUSH:
            prefix += ["-c", setting]  # later settings win over run_git's own
        try:
            done = run_git([*prefix, *args], env=env, cwd=self._root, stdin=stdin)
        except WorkspaceError as exc:
            raise GitOpsError(str(exc)) from None
        return done.stdout.decode(errors="replace").strip()

    def build(self, task_id: str, base: str, patch: bytes, message: str) -> str:
        """The commit of ``task_id``'s branch: ``base`` plus ``patch``. Raises
        :class:`GitOpsError` when the patch does not apply to ``base``."""
        with tempfile.TemporaryDirectory(prefix="omni-task-") as tmp:
            index = str(Path(tmp) / "index")
            patch_file = Path(tmp) / "change.patch"
            patch_file.write_bytes(patch)
            self._git(["read-tree", base], index=index)
            try:
                self._git(["apply", "--cached", str(patch_file)], index=index)
            except GitOpsError:
                try:
                    self._git(["apply", "--cached", "--3way", str(patch_file)], index=index)
                except GitOpsError as exc:
                    raise GitOpsError(
                        f"task {task_id!r}: its patch does not apply to {base[:12]}: {exc}"
                    ) from None
            tree = self._git(["write-tree"], index=index)
        return self._git(["commit-tree", tree, "-p", base, "-F", "-"], stdin=message.encode())

    def build_file(self, base: str, path: str, content: bytes, message: str) -> str:
        """A commit of ``base`` plus one file ``path`` (POSIX, from the top folder) with
        ``content``; the working tree and the index are untouched."""
        blob = self._git(["hash-object", "-w", "--stdin"], stdin=content)
        with tempfile.TemporaryDirectory(prefix="omni-branch-") as tmp:
            index = str(Path(tmp) / "index")
            self._git(["read-tree", base], index=index)
            self._git(
                ["update-index", "--add", "--cacheinfo", f"100644,{blob},{path}"], index=index
            )
            tree = self._git(["write-tree"], index=index)
        return self._git(["commit-tree", tree, "-p", base, "-F", "-"], stdin=message.encode())

    def remote_tip(self, branch: str) -> str | None:
        """Where ``branch`` is on the remote now (``None``: it does not exist there)."""
        out = self._git(["ls-remote", "--heads", self._remote, f"refs/heads/{branch}"])
        return out.split()[0] if out else None

    def publish(self, task_id: str, commit: str, *, push: bool) -> TaskBranch:
        """Point the local branch at ``commit`` and, with ``push``, force it onto the
        remote with a lease on the tip just read (another writer's push is not lost).
        A remote tip with ``commit``'s tree and parents already holds this change on this
        base: it stays as it is (no new commit, no push), so publishing is idempotent."""
        return self.publish_branch(task_id, branch_name(task_id), commit, push=push)

    def publish_branch(self, task_id: str, branch: str, commit: str, *, push: bool) -> TaskBranch:
        """:meth:`publish` for a branch of any name (``task_id`` for the report)."""
        tip = self.remote_tip(branch) if push else None
        if tip is not None and self._same_change(tip, commit):
            self._git(["update-ref", f"refs/heads/{branch}", tip])
            return TaskBranch(task_id, branch, tip, pushed=False, updated=True, unchanged=True)
        self._git(["update-ref", f"refs/heads/{branch}", commit])
        if not push:
            return TaskBranch(task_id, branch, commit, pushed=False, updated=False)
        lease = f"--force-with-lease=refs/heads/{branch}:{tip or ''}"
        self._git(["push", "--porcelain", lease, self._remote, f"{commit}:refs/heads/{branch}"])
        return TaskBranch(task_id, branch, commit, pushed=True, updated=tip is not None)

    def _same_change(self, tip: str, commit: str) -> bool:
        """``tip`` (when this clone has it) has ``commit``'s tree and parents."""
        try:
            shown = [self._git(["show", "-s", "--format=%T %P", c]) for c in (tip, commit)]
        except GitOpsError:
            return False  # not fetched here: push as usual
        return shown[0] == shown[1]
