"""Result files into git: commit them on a branch and push it (gitpython).

``omni run --once --commit`` commits on the current branch; ``--push BRANCH`` commits
on ``BRANCH`` (usually ``omni/results``, not checked out) and pushes it to ``origin``.
The commit never touches the working tree or the checked-out branch: it is built in a
temporary index from

* ``HEAD``'s tree (this checkout: its task files), with the branch's tip as a parent
  too when it has commits ``HEAD`` lacks, so the push is a fast-forward;
* the results folder: exactly the result files ``omni publish`` checked and approved
  (``runner.gitops.checks``), added by plumbing (``hash-object --no-filters``: no filter
  the repository names runs); before the run, result files the branch holds but the
  disk lacks are copied to disk, so a fresh clone (a CI machine) starts from the
  branch's memory, if they pass the checks of :mod:`runner.gitops.carry` (the branch
  is input). Nothing outside the results folder is ever committed here: a task's
  change reaches git only as an approved patch on its own branch
  (:mod:`runner.gitops.taskbranch`).

Git runs with hooks, fsmonitor, and system and user config off.

Nothing else of the branch is carried forward: what it changed outside the results
folder is left behind and named (:attr:`Published.left_behind`, and the pull request's
body).

Every git failure becomes a :class:`~runner.core.errors.GitOpsError` that says what happened
and what to do; the result files are always on disk by then, and a commit that could not
be pushed stays on the local branch for the next ``--push``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from git import Repo
from git.exc import InvalidGitRepositoryError, NoSuchPathError

from runner.core.clock import utc_now
from runner.core.errors import GitOpsError, WorkspaceError
from runner.core.files import atomic_write
from runner.gitops.carry import (
    BranchReader,
    BranchReport,
    branch_report,
    first_line,
    git_errors,
    left_behind,
)
from runner.reach.scratch import OMNI_IDENTITY as _IDENTITY
from runner.reach.scratch import SAFE_GIT_CONFIG_PUSH, run_git
from runner.state.resultcheck import ResultCheck

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

#: Seconds a fetch or push may take before it is stopped.
NETWORK_TIMEOUT = 120.0
#: Pushes tried when another job pushed the branch between our fetch and our push.
PUSH_ATTEMPTS = 3
_ZERO = "0" * 40
_UNREACHABLE = (
    "could not read from remote",
    "does not appear to be a git repository",
    "could not resolve host",
    "unable to access",
    "connection refused",
    "connection timed out",
    "repository not found",
    "no such file or directory",
)
_NON_FAST_FORWARD = ("non-fast-forward", "fetch first", "[rejected]", "stale info")


@dataclass(slots=True)
class Prepared:  # pylint: disable=too-many-instance-attributes  # one record of facts
    """What :meth:`GitWorkspace.prepare` found before the run."""

    branch: str
    current: bool
    push: bool
    remote_tip: str | None = None
    diverged: bool = False
    fetch_error: str | None = None
    restored: int = 0


@dataclass(frozen=True, slots=True)
class Published:
    """What :meth:`GitWorkspace.publish` did."""

    branch: str
    commit: str | None
    """The new commit, or ``None`` when there was nothing new to commit."""
    pushed: bool
    remote: str
    files: tuple[str, ...] = field(default_factory=tuple)
    """The result files (relative to the repository) the commit holds."""
    left_behind: tuple[str, ...] = field(default_factory=tuple)
    """Files the branch had changed outside the results folder, not carried forward."""


class GitWorkspace:
    """One repository's working tree, its results folder and its remote."""

    def __init__(
        self,
        repo: Repo,
        *,
        results: Path,
        remote: str = "origin",
        environ: Mapping[str, str] | None = None,
        check: ResultCheck | None = None,
    ) -> None:
        self._repo = repo
        self._check = check or ResultCheck(utc_now())
        self._git = repo.git
        self._root = Path(repo.working_tree_dir or ".").resolve()
        self.remote = remote
        self._results = self._relative(results, "results folder")
        env = os.environ if environ is None else environ
        self._git.update_environment(
            GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull
        )
        self._git.set_persistent_git_options(c=list(SAFE_GIT_CONFIG_PUSH))
        self._identity = {k: v for k, v in _IDENTITY.items() if not env.get(k)}
        # Git runs without user or system config: only the repository's own counts.
        reader = repo.config_reader("repository")
        if reader.get_value("user", "name", "") and reader.get_value("user", "email", ""):
            self._identity = {}

    @classmethod
    def open(
        cls,
        start: Path,
        *,
        results: Path,
        remote: str = "origin",
        environ: Mapping[str, str] | None = None,
        check: ResultCheck | None = None,
    ) -> GitWorkspace:
        """The repository containing ``start``; raises :class:`GitOpsError` if none."""
        try:
            repo = Repo(start, search_parent_directories=True)
        except (InvalidGitRepositoryError, NoSuchPathError):
            raise GitOpsError(
                f"{start}: not inside a git repository; omni publish, omni report, --commit"
                " and --push need one (run from a clone, or `git init`)"
            ) from None
        if repo.bare or repo.working_tree_dir is None:
            raise GitOpsError(f"{start}: a bare repository has no working tree to commit from")
        return cls(repo, results=results, remote=remote, environ=environ, check=check)

    @property
    def root(self) -> Path:
        """The working tree's top folder."""
        return self._root

    @property
    def results(self) -> str:
        """The results folder, relative to the working tree (POSIX form)."""
        return self._results

    # -- before the run -------------------------------------------------------------

    def prepare(self, branch: str | None, *, push: bool) -> Prepared:
        """Check the repository and (for a push) fetch ``branch``
        and copy its result files missing on disk. Raises :class:`GitOpsError` for
        problems a run cannot fix (no commit yet, detached HEAD, no remote, bad name)."""
        with git_errors(f"preparing the branch {branch or 'HEAD'!r}"):
            return self._prepare(branch, push=push)

    def _prepare(self, branch: str | None, *, push: bool) -> Prepared:
        if not self._repo.head.is_valid():
            raise GitOpsError(f"{self._root}: the repository has no commit yet; commit once first")
        current = None if self._repo.head.is_detached else self._repo.active_branch.name
        if branch is None:
            if current is None:
                raise GitOpsError(
                    "HEAD is detached, so --commit has no branch to commit on;"
                    " check out a branch or use --push BRANCH"
                )
            branch = current
        self._check_branch_name(branch)
        if push and self.remote not in {r.name for r in self._repo.remotes}:
            raise GitOpsError(
                f"--push needs a remote named {self.remote!r}; this repository has"
                f" {', '.join(r.name for r in self._repo.remotes) or 'none'}"
            )
        prepared = Prepared(branch=branch, current=branch == current, push=push)
        if push:
            self._fetch(prepared)
        if not prepared.current:
            prepared.restored = self._restore(self._tip(branch))
        return prepared

    def _check_branch_name(self, branch: str) -> None:
        status, _, _ = self._git.check_ref_format(
            "--branch", branch, with_extended_output=True, with_exceptions=False
        )
        if status != 0 or branch.startswith("-"):
            raise GitOpsError(f"{branch!r} is not a valid branch name")

    def _fetch_only(self, prepared: Prepared) -> bool:
        """Fetch the branch into its remote-tracking ref; False when that failed (a
        remote without the branch is no failure)."""
        tracking = f"refs/remotes/{self.remote}/{prepared.branch}"
        status, _, err = self._git.fetch(
            "--no-tags",
            "--quiet",
            self.remote,
            f"+refs/heads/{prepared.branch}:{tracking}",
            with_extended_output=True,
            with_exceptions=False,
            kill_after_timeout=NETWORK_TIMEOUT,
        )
        if status != 0:
            if "couldn't find remote ref" not in err.lower():
                prepared.fetch_error = first_line(err) or f"git fetch exited {status}"
            return False
        prepared.remote_tip = self._rev(tracking)
        return True

    def _fetch(self, prepared: Prepared) -> None:
        """Fetch, then fast-forward the local branch (or note that it diverged)."""
        branch = prepared.branch
        if not self._fetch_only(prepared):
            return
        local = self._tip(branch)
        if prepared.remote_tip is None or local == prepared.remote_tip:
            return
        if local is None or (
            self._is_ancestor(local, prepared.remote_tip) and not prepared.current
        ):
            self._git.update_ref(f"refs/heads/{branch}", prepared.remote_tip, local or _ZERO)
        elif not self._is_ancestor(prepared.remote_tip, local):
            prepared.diverged = True

    def _restore(self, tip: str | None) -> int:
        """Copy the result files ``tip`` holds and the disk lacks, of those that pass the
        checks (the rest are skipped with a warning); returns how many."""
        if tip is None:
            return 0
        reader = BranchReader(self._repo, self._results, self._check)
        found = reader.read(tip)
        copied = 0
        for entry in [entry for entry, _ in found.results] + found.companions:
            target = self._root / entry.path
            if os.path.lexists(target):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, reader.blob(entry))
            copied += 1
        return copied

    # -- after the run --------------------------------------------------------------

    def publish(self, prepared: Prepared, message: str, files: list[str]) -> Published:
        """Commit the results folder as exactly ``files`` (relative to the results
        folder; checked by the caller) on the branch, then push it when asked. Raises
        :class:`GitOpsError`; the result files stay on disk."""
        paths = [f"{self._results}/{name}" for name in files]
        with git_errors(f"committing the results on {prepared.branch!r}"):
            tip = self._tip(prepared.branch)
            commit = self._commit(prepared.branch, paths, message, current=prepared.current)
            left = left_behind(self._repo, tip, self._rev("HEAD"), self._results, [])
            if left:
                log.warning(
                    "%s: %d file(s) the branch changed outside %s/ are not carried forward: %s",
                    prepared.branch,
                    len(left),
                    self._results,
                    ", ".join(left[:10]) + (" …" if len(left) > 10 else ""),
                )
            pushed = False
            if prepared.push:
                pushed = self._push_with_retries(prepared, paths, message)
        return Published(prepared.branch, commit, pushed, self.remote, tuple(paths), tuple(left))

    def tip(self, branch: str) -> str | None:
        """The commit ``branch`` points at here, if it exists."""
        return self._tip(branch)

    def files_at(self, ref: str) -> set[str]:
        """The result files (relative to the results folder) ``ref`` holds."""
        status, out, _ = self._git.ls_tree(
            "-r",
            "--name-only",
            "-z",
            ref,
            "--",
            self._results,
            with_extended_output=True,
            with_exceptions=False,
            strip_newline_in_stdout=False,
        )
        if status != 0:
            return set()
        prefix = f"{self._results}/"
        return {n.removeprefix(prefix) for n in out.split("\0") if n.startswith(prefix)}

    def restore(self, ref: str) -> int:
        """Copy result files that ``ref`` (e.g. ``origin/omni/results``) holds and the disk
        lacks (those that pass the checks), without fetching; how many (0 when ``ref``
        does not exist)."""
        with git_errors(f"reading {ref!r}"):
            return self._restore(self._rev(f"{ref}^{{commit}}"))

    def head(self) -> str:
        """The checked-out commit."""
        found = self._rev("HEAD")
        if found is None:
            raise GitOpsError(f"{self._root}: the repository has no commit yet; commit once first")
        return found

    def current_branch(self) -> str | None:
        """The checked-out branch (``None``: HEAD is detached)."""
        return None if self._repo.head.is_detached else self._repo.active_branch.name

    def _commit(self, branch: str, files: list[str], message: str, *, current: bool) -> str | None:
        """Build and record the commit on ``branch``; ``None`` when nothing is new."""
        head = self._rev("HEAD")
        assert head is not None  # prepare() checked HEAD
        tip = self._tip(branch)
        parents = self._parents(tip, head)
        tree = self._tree(f"{head}^{{tree}}", files)
        if tree in {self._rev(f"{tip or head}^{{tree}}"), self._rev(f"{head}^{{tree}}")}:
            return None
        args: list[str] = [tree]
        for parent in parents:
            args += ["-p", parent]
        sha = self._git.commit_tree(*args, "-m", message, env=self._identity)
        self._git.update_ref(f"refs/heads/{branch}", sha, tip or _ZERO)
        if current:
            # The index follows the new commit (plumbing: no filters run).
            self._git.read_tree(sha)
        return sha

    def _parents(self, tip: str | None, head: str) -> list[str]:
        """The new commit's parents: ``HEAD``, the branch's tip, or both (so the branch
        moves by a fast-forward and keeps ``HEAD``'s history). The tree is ``HEAD``'s
        whatever the parents: nothing the branch changed outside the results folder is
        carried forward."""
        if tip is None or tip == head or self._is_ancestor(tip, head):
            return [head]
        if self._is_ancestor(head, tip):
            return [tip]
        return [tip, head]

    def _tree(self, base: str, files: list[str]) -> str:
        """``base`` with the results folder replaced by exactly ``files`` as on disk,
        added without running any filter."""
        with tempfile.TemporaryDirectory(prefix="omni-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._git.read_tree(base, env=env)
            self._git.rm("-r", "--cached", "-q", "--ignore-unmatch", "--", self._results, env=env)
            if files:
                self._add_plainly(files, env["GIT_INDEX_FILE"])
            return str(self._git.write_tree(env=env))

    def _add_plainly(self, files: list[str], index: str) -> None:
        """Add ``files`` (relative to the repository) to ``index`` as they are on disk,
        by plumbing: no clean filter or attribute the repository names can run."""
        env = {"GIT_DIR": str(self._repo.git_dir), "GIT_INDEX_FILE": index}
        names = "".join(f"{self._root / f}\n" for f in files).encode()
        try:
            hashed = run_git(
                ["hash-object", "-w", "--no-filters", "--stdin-paths"], env=env, stdin=names
            )
            shas = hashed.stdout.decode().split()
            info = "".join(f"100644 {sha}\t{f}\n" for sha, f in zip(shas, files, strict=True))
            run_git(["update-index", "--index-info"], env=env, stdin=info.encode())
        except WorkspaceError as exc:
            raise GitOpsError(f"cannot add the result files: {exc}") from None

    def _push_with_retries(self, prepared: Prepared, files: list[str], message: str) -> bool:
        """Push the branch; when another job pushed in between, rebuild on top and retry."""
        branch = prepared.branch
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            local = self._tip(branch)
            if local is None or local == prepared.remote_tip:
                return False
            outcome = self._push(branch)
            if outcome is None:
                return True
            race = outcome == "non-fast-forward" and not prepared.diverged and not prepared.current
            if not race or attempt == PUSH_ATTEMPTS or not self._rebuild(prepared, files, message):
                raise self._push_error(prepared, outcome)
        return False  # pragma: no cover - the loop always returns or raises

    def _rebuild(self, prepared: Prepared, files: list[str], message: str) -> bool:
        """After a rejected push: fetch, rebase our commit onto the new tip. False if the
        remote moved in a way that is not a plain addition to what we built on."""
        ours, base = self._tip(prepared.branch), prepared.remote_tip
        if not self._fetch_only(prepared):
            return False
        new_tip = prepared.remote_tip
        if new_tip is None or ours is None:
            return False
        if base is not None and not self._is_ancestor(base, new_tip):
            return False
        self._git.update_ref(f"refs/heads/{prepared.branch}", new_tip, ours)
        if not prepared.current:
            self._restore(new_tip)
        # The other job's results stay: they are on the new tip, published by it.
        theirs = {f"{self._results}/{name}" for name in self.files_at(new_tip)}
        files[:] = sorted(set(files) | theirs)
        self._commit(prepared.branch, files, message, current=prepared.current)
        return True

    def _push(self, branch: str) -> str | None:
        """Push; ``None`` on success, else ``"non-fast-forward"``, ``"unreachable"`` or
        git's own message."""
        status, out, err = self._git.push(
            "--porcelain",
            self.remote,
            f"refs/heads/{branch}:refs/heads/{branch}",
            with_extended_output=True,
            with_exceptions=False,
            kill_after_timeout=NETWORK_TIMEOUT,
        )
        if status == 0:
            return None
        text = f"{out}\n{err}".lower()
        if any(mark in text for mark in _NON_FAST_FORWARD):
            return "non-fast-forward"
        if any(mark in text for mark in _UNREACHABLE):
            return f"unreachable: {first_line(err)}"
        return first_line(err) or f"git push exited {status}"

    def _push_error(self, prepared: Prepared, outcome: str) -> GitOpsError:
        branch, remote = prepared.branch, self.remote
        kept = (
            f"the results are committed on the local branch {branch!r} and on disk in"
            f" {self._results}/; the next --push sends them"
        )
        if outcome == "non-fast-forward":
            return GitOpsError(
                f"push of {branch!r} to {remote!r} rejected: not a fast-forward ({remote}'s"
                f" {branch} has commits this clone lacks). Merge them (git fetch {remote}"
                f" {branch}; git merge) or delete one side; {kept}"
            )
        if outcome.startswith("unreachable"):
            url = self._remote_url()
            return GitOpsError(
                f"cannot reach remote {remote!r} ({url}): {outcome.removeprefix('unreachable: ')};"
                f" {kept}"
            )
        note = f" (fetch failed earlier: {prepared.fetch_error})" if prepared.fetch_error else ""
        return GitOpsError(f"push of {branch!r} to {remote!r} failed: {outcome}{note}; {kept}")

    # -- reading the branch ---------------------------------------------------------

    def branch_results(self, base: str, branch: str) -> BranchReport:
        """What a pull request from ``branch`` into ``base`` brings: the result files
        ``branch`` added or changed since it left ``base`` that pass the checks, the
        entries there that do not, and what it touched outside the results folder."""
        for ref in (base, branch):
            if self._rev(ref) is None:
                raise GitOpsError(f"no branch or commit named {ref!r} in {self._root}")
        with git_errors(f"reading {branch!r}"):
            return branch_report(self._repo, base, branch, self._results, self._check)

    # -- plumbing -------------------------------------------------------------------

    def _relative(self, path: Path, what: str) -> str:
        try:
            rel = path.resolve().relative_to(self._root)
        except ValueError:
            raise GitOpsError(
                f"the {what} {path} is outside the repository {self._root}; it cannot be committed"
            ) from None
        if rel == Path("."):
            raise GitOpsError(f"the {what} cannot be the repository's top folder")
        return rel.as_posix()

    def _rev(self, ref: str) -> str | None:
        status, out, _ = self._git.rev_parse(
            "--verify", "--quiet", ref, with_extended_output=True, with_exceptions=False
        )
        return out.strip() if status == 0 and out.strip() else None

    def _tip(self, branch: str) -> str | None:
        return self._rev(f"refs/heads/{branch}")

    def _is_ancestor(self, older: str, newer: str) -> bool:
        status, _, _ = self._git.merge_base(
            "--is-ancestor", older, newer, with_extended_output=True, with_exceptions=False
        )
        return status == 0

    def _remote_url(self) -> str:
        try:
            return str(self._repo.remote(self.remote).url)
        except ValueError:
            return "no URL"
