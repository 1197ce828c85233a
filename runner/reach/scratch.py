"""A model-driven run's own workspace, and the change it proposes (DESIGN §3, Trust).

:meth:`Scratch.create` lays out, in a fresh temp folder::

    work/          the repository's tracked files at the base commit, minus the hidden
                   paths (tasks and results folders, config, ``.omni``); writable, the
                   only folder a sandboxed executor may write. ``work/.git`` is a git
                   file pointing at ``history.git``.
    history.git/   a git folder omni writes: HEAD at the base commit, the real
                   repository's objects reached through ``objects/info/alternates``, its
                   own config (no remotes, no hooks). Read-only in the sandbox, so
                   ``git log`` and mcp-server-git work inside, while nothing done there
                   reaches the real repository's refs, config, hooks or remotes.
    private/       omni's own index for computing the change; never in a sandbox.

A folder that is not in a git repository is copied instead (regular files only) and
its snapshot committed into ``history.git`` as the base.

:meth:`Scratch.proposal` is the diff of ``work/`` against the base: each changed path is
accepted (into the patch), refused (protected path, outside the task's
``pull_request.paths``, a symlink, a nested repository, holding a secret, too large)
or dropped (the task has no ``pull_request:``). Every git command here runs with a
fixed environment and config: no system or user config, no hooks, no fsmonitor, and
never a filter or diff driver, so nothing in the scratch can make omni run a command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from runner.core.errors import WorkspaceError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from runner.core.pathglob import PathRules

#: ``-c`` settings on every git command omni runs on a repository or a scratch.
SAFE_GIT_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.autocrlf=false",
    "core.symlinks=true",
    "core.quotePath=false",
    "diff.external=",
    "protocol.allow=never",
)
#: The same for commands that fetch and push the repository's own remotes: the usual
#: transports, never ``ext::`` (which runs a command).
SAFE_GIT_CONFIG_PUSH = (
    *(c for c in SAFE_GIT_CONFIG if not c.startswith("protocol.")),
    *(f"protocol.{name}.allow=always" for name in ("file", "git", "http", "https", "ssh")),
)
#: Seconds one git command may take.
GIT_TIMEOUT = 120.0
#: Who omni's own commits are by, unless the environment says otherwise.
OMNI_IDENTITY = {
    "GIT_AUTHOR_NAME": "omni",
    "GIT_AUTHOR_EMAIL": "omni@localhost",
    "GIT_COMMITTER_NAME": "omni",
    "GIT_COMMITTER_EMAIL": "omni@localhost",
}
#: A scratch snapshot's commit is the same for the same files.
_SNAPSHOT_IDENTITY = OMNI_IDENTITY | {
    "GIT_AUTHOR_DATE": "1970-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "1970-01-01T00:00:00Z",
}
_HISTORY_CONFIG = """\
[core]
\trepositoryformatversion = 0
\tbare = false
\tfilemode = true
\tlogallrefupdates = false
\thooksPath = /dev/null
\tfsmonitor = false
[user]
\tname = omni
\temail = omni@localhost
"""
_SYMLINK, _GITLINK = "120000", "160000"


class Refused(StrEnum):
    """Why a changed path is not in the proposed patch."""

    PROTECTED = "protected path"
    OUTSIDE = "outside pull_request.paths"
    SYMLINK = "symbolic link"
    NESTED_REPOSITORY = "nested repository"
    SECRET = "holds a secret"
    TOO_LARGE = "the patch would pass limits.patch_bytes"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One changed path kept out of the patch, and why."""

    path: str
    reason: Refused


@dataclass(frozen=True, slots=True)
class Proposal:
    """What a model-driven run changed, sorted into the patch and the rest."""

    base: str
    """The commit the run started from (and the patch applies to)."""
    patch: bytes = b""
    """``git apply``-able diff of the accepted paths (``b""`` when none)."""
    files: tuple[str, ...] = ()
    """Paths in the patch."""
    refused: tuple[Refusal, ...] = ()
    dropped: tuple[str, ...] = ()
    """Changed paths not published because the task has no ``pull_request:``."""

    def as_dict(self) -> dict[str, Any]:
        """The result file's ``changes`` field (the patch itself is a file beside it)."""
        return {
            "base": self.base,
            "files": list(self.files),
            "refused": [{"path": r.path, "reason": r.reason.value} for r in self.refused],
            "not_published": list(self.dropped),
        }


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of omni's git commands: no system or user config, no
    prompts, no inherited ``GIT_*`` variables."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/"),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_OPTIONAL_LOCKS": "0",
    }
    return env | (extra or {})


def run_git(
    args: Iterable[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """``git -c SAFE… args`` with :func:`git_env` (plus ``env``); raises
    :class:`WorkspaceError` naming the command when ``check`` and it fails."""
    argv = ["git"]
    for setting in SAFE_GIT_CONFIG:
        argv += ["-c", setting]
    argv += list(args)
    try:
        done = subprocess.run(
            argv,
            env=git_env(env),
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorkspaceError(f"git {' '.join(_subcommand(argv)[:1])}: {exc}") from None
    if check and done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        command = " ".join(_subcommand(argv)[:3])
        raise WorkspaceError(f"git {command} failed: {said[-1] if said else done.returncode}")
    return done


def _subcommand(argv: list[str]) -> list[str]:
    """``argv`` from the git subcommand on (without ``git`` and its ``-c`` settings)."""
    rest = argv[1:]
    while len(rest) >= 2 and rest[0] == "-c":
        rest = rest[2:]
    return rest


@dataclass(frozen=True, slots=True)
class Source:
    """Where a scratch comes from: a git work tree at a commit, or a plain folder."""

    root: Path
    """The repository's top folder (or the plain folder)."""
    base: str | None
    """The commit (``None``: not a git work tree with a commit)."""
    objects: tuple[Path, ...] = ()
    """The object folders the base's history lives in (the repository's and its
    alternates')."""
    shallow: Path | None = None
    """The repository's ``shallow`` file, for a shallow clone."""


def find_source(folder: Path) -> Source:
    """The git work tree containing ``folder`` at its ``HEAD``, or ``folder`` itself."""
    folder = folder.resolve()
    # Read-only plumbing on the real repository (no hooks, filters or fsmonitor run),
    # so its owner need not be ours.
    top = run_git(
        [
            "-c",
            "safe.directory=*",
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-common-dir",
        ],
        cwd=folder,
        check=False,
    )
    lines = top.stdout.decode(errors="surrogateescape").splitlines()
    if top.returncode != 0 or len(lines) != 2:
        return Source(folder, None)
    root, common = Path(lines[0]), Path(lines[1])
    head = run_git(
        ["-c", "safe.directory=*", "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
        cwd=root,
        check=False,
    )
    if head.returncode != 0:
        return Source(folder, None)
    objects = [common / "objects"]
    alternates = common / "objects" / "info" / "alternates"
    with contextlib.suppress(OSError):
        for line in alternates.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                objects.append((common / "objects" / line.strip()).resolve())
    shallow = common / "shallow"
    return Source(
        root,
        head.stdout.decode().strip(),
        tuple(objects),
        shallow if shallow.is_file() else None,
    )


@dataclass(slots=True)
class Scratch:
    """One run's workspace; :meth:`close` (or leaving the ``with``) removes it."""

    root: Path
    source: Source
    base: str
    hidden: frozenset[str] = field(default_factory=frozenset)
    """Tracked paths left out of ``work/`` (they are not changes when missing)."""

    @property
    def work(self) -> Path:
        """The writable workspace."""
        return self.root / "work"

    @property
    def history(self) -> Path:
        """The git folder ``work/.git`` points at (read-only in a sandbox)."""
        return self.root / "history.git"

    def read_only(self) -> tuple[Path, ...]:
        """What a sandbox must see read-only for git inside to work."""
        return (self.history, *self.source.objects)

    @classmethod
    def create(cls, folder: Path, hide: PathRules, *, parent: Path | None = None) -> Self:
        """A scratch of the repository containing ``folder`` (see the module docstring),
        without the paths ``hide`` covers. Raises :class:`WorkspaceError`."""
        source = find_source(folder)
        root = Path(tempfile.mkdtemp(prefix="omni-run-", dir=parent)).resolve()
        try:
            (root / "work").mkdir()
            (root / "private").mkdir(mode=0o700)
            run_git(["init", "-q", "--bare", "--template=", str(root / "history.git")])
            (root / "history.git" / "config").write_text(_HISTORY_CONFIG, encoding="utf-8")
            if source.base is not None:
                scratch = cls(root, source, source.base)
                scratch.hidden = scratch._checkout(hide)
            else:
                scratch = cls(root, source, "")
                scratch.base = scratch._snapshot(hide)
            (root / "work" / ".git").write_text(f"gitdir: {root / 'history.git'}\n")
            return scratch
        except BaseException:
            _remove(root)
            raise

    def _git(
        self, args: Iterable[str], *, index: Path | None = None, stdin: bytes | None = None
    ) -> bytes:
        env = {"GIT_DIR": str(self.history), "GIT_WORK_TREE": str(self.work)}
        env["GIT_INDEX_FILE"] = str(index or self.history / "index")
        return run_git(args, env=env | _SNAPSHOT_IDENTITY, cwd=self.work, stdin=stdin).stdout

    def _checkout(self, hide: PathRules) -> frozenset[str]:
        """Check the base's tracked files out into ``work/``, except the hidden ones."""
        objects = "".join(f"{p}\n" for p in self.source.objects)
        (self.history / "objects" / "info").mkdir(parents=True, exist_ok=True)
        (self.history / "objects" / "info" / "alternates").write_text(objects, encoding="utf-8")
        if self.source.shallow is not None:
            shutil.copyfile(self.source.shallow, self.history / "shallow")
        self._git(["update-ref", "--no-deref", "HEAD", self.base])
        self._git(["read-tree", self.base])
        names = [n for n in self._git(["ls-files", "-z"]).split(b"\0") if n]
        shown: list[bytes] = []
        hidden: list[bytes] = []
        for name in names:
            (hidden if hide.covers(os.fsdecode(name)) else shown).append(name)
        if shown:
            self._git(["checkout-index", "-u", "-f", "-z", "--stdin"], stdin=b"\0".join(shown))
        if hidden:
            self._git(
                ["update-index", "--skip-worktree", "-z", "--stdin"], stdin=b"\0".join(hidden)
            )
        return frozenset(os.fsdecode(n) for n in hidden)

    def _snapshot(self, hide: PathRules) -> str:
        """Copy a plain folder's regular files (not the hidden ones) and commit them as
        the base; symlinks and special files are left out."""
        source = self.source.root
        for folder, dirs, files in os.walk(source):
            rel = Path(folder).relative_to(source)
            dirs[:] = [
                d
                for d in dirs
                if d != ".git"
                and not hide.covers((rel / d).as_posix())
                and not (Path(folder) / d).is_symlink()
            ]
            for name in files:
                path = (rel / name).as_posix()
                origin = Path(folder) / name
                if hide.covers(path) or not stat.S_ISREG(os.lstat(origin).st_mode):
                    continue
                target = self.work / path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
        self._git(["add", "-A", "-f", "--", "."])
        tree = self._git(["write-tree"]).decode().strip()
        commit = self._git(["commit-tree", tree, "-m", "omni: workspace snapshot"]).decode()
        self._git(["update-ref", "--no-deref", "HEAD", commit.strip()])
        return commit.strip()

    def proposal(
        self,
        *,
        protected: PathRules,
        allowed: PathRules | None,
        has_secret: Callable[[str], bool],
        limit: int,
    ) -> Proposal:
        """The run's change against its base, sorted (see the module docstring)."""
        index = self.root / "private" / "index"
        # copy2 keeps the index's timestamp: git re-reads any file no older than it
        # (racy git), so a same-size rewrite in the checkout's clock tick is still seen.
        shutil.copy2(self.history / "index", index)
        if self.hidden:
            hidden = "\0".join(sorted(self.hidden)).encode()
            args = ["update-index", "--no-skip-worktree", "-z", "--stdin"]
            self._git(args, index=index, stdin=hidden)
        self._git(["add", "-A", "--ignore-errors", "--", "."], index=index)
        args = ["diff-index", "--cached", "--raw", "-z", "--no-renames", self.base]
        raw = self._git(args, index=index)
        refused: list[Refusal] = []
        dropped: list[str] = []
        accepted: list[tuple[str, str]] = []  # (path, new blob)
        for path, new_mode, new_sha in self._entries(raw):
            if path in self.hidden and new_mode == "000000":
                continue  # never checked out: not a change
            reason = _refusal(path, new_mode, protected, allowed)
            if reason is not None:
                refused.append(Refusal(path, reason))
            elif allowed is None:
                dropped.append(path)
            else:
                accepted.append((path, new_sha))
        refused += self._ignored(protected)
        secret = self._secret_paths(accepted, has_secret)
        refused += [Refusal(p, Refused.SECRET) for p in secret]
        files = [p for p, _ in accepted if p not in secret]
        patch = b""
        if files:
            args = ["diff", "--cached", "--binary", "--full-index", "--no-renames"]
            args += ["--no-color", "--no-ext-diff", "--no-textconv", self.base, "--"]
            patch = self._git([*args, *(f":(literal){p}" for p in files)], index=index)
        if len(patch) > limit:
            refused += [Refusal(p, Refused.TOO_LARGE) for p in files]
            files, patch = [], b""
        return Proposal(
            self.base,
            patch,
            tuple(files),
            tuple(sorted(refused, key=lambda r: r.path)),
            tuple(dropped),
        )

    @staticmethod
    def _entries(raw: bytes) -> list[tuple[str, str, str]]:
        """``(path, new mode, new blob)`` of ``diff-index --raw -z`` output."""
        parts = raw.split(b"\0")
        found = []
        for head, name in zip(parts[0::2], parts[1::2], strict=False):
            if not head.startswith(b":"):
                continue
            _, new_mode, _, new_sha, _ = head[1:].decode().split(" ")
            found.append((os.fsdecode(name), new_mode, new_sha))
        return found

    def _ignored(self, protected: PathRules) -> list[Refusal]:
        """New files the repository's ignore rules hide from the diff but that sit on a
        protected path: refused all the same (so the result names them)."""
        args = ["ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"]
        raw = self._git(args, index=self.root / "private" / "index")
        found = []
        for name in raw.split(b"\0"):
            path = os.fsdecode(name).rstrip("/")
            if path and protected.covers(path):
                found.append(Refusal(path, Refused.PROTECTED))
        return found

    def _secret_paths(
        self, accepted: list[tuple[str, str]], has_secret: Callable[[str], bool]
    ) -> set[str]:
        """Accepted paths whose name or new content holds a secret."""
        found = {p for p, _ in accepted if has_secret(p)}
        blobs = [(p, sha) for p, sha in accepted if sha.strip("0")]
        if not blobs:
            return found
        asked = "".join(f"{sha}\n" for _, sha in blobs).encode()
        out = self._git(["cat-file", "--batch"], stdin=asked)
        offset = 0
        for path, _ in blobs:
            header_end = out.index(b"\n", offset)
            size = int(out[offset:header_end].split(b" ")[2])
            content = out[header_end + 1 : header_end + 1 + size]
            offset = header_end + 1 + size + 1
            if has_secret(content.decode("utf-8", errors="replace")):
                found.add(path)
        return found

    def close(self) -> None:
        """Remove the whole scratch (even read-only folders a command left)."""
        _remove(self.root)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _refusal(
    path: str, new_mode: str, protected: PathRules, allowed: PathRules | None
) -> Refused | None:
    if protected.covers(path):
        return Refused.PROTECTED
    if new_mode == _SYMLINK:
        return Refused.SYMLINK
    if new_mode == _GITLINK:
        return Refused.NESTED_REPOSITORY
    if allowed is not None and not allowed.covers(path):
        return Refused.OUTSIDE
    return None


def _remove(root: Path) -> None:
    """Remove ``root``; folders a command made read-only are opened up first."""
    for folder, dirs, _ in os.walk(root):
        for name in dirs:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(path):
                    os.chmod(path, 0o700)
    shutil.rmtree(root, ignore_errors=True)
