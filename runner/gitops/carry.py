"""What on the results branch may be carried forward: the branch is input, not memory.

Anyone who can push the results branch controls what it holds. So:

* its results folder is read entry by entry (``git ls-tree``), never walked as objects:
  a result file (``<task-id>/<run-id>.json``) counts only if it passes the checks of
  :mod:`runner.state.resultcheck`; its ``.md`` (and ``.patch``) only beside one that
  passes; a symbolic link, a submodule, any other file, or ``results`` itself committed
  as a file is skipped with a warning naming it;
* outside the results folder nothing of the branch is carried forward: the publish
  step builds its tree from ``HEAD`` (this checkout), the results folder as on disk,
  and the files this run changed. What the branch changed outside the results folder
  is left behind and named, in a warning and in the pull request's body.

Git failures here become :class:`~runner.core.errors.GitOpsError`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from git.exc import GitError, ODBError

from runner.core.errors import GitOpsError, ResultFileError
from runner.state.resultcheck import warn_skipped
from runner.state.results import COMPANIONS

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

    from git import Repo

    from runner.state.resultcheck import ResultCheck
    from runner.state.results import RunResult

_REGULAR = frozenset({"100644", "100755"})


@contextmanager
def git_errors(what: str) -> Iterator[None]:
    """Turn a GitPython error raised inside into a :class:`GitOpsError` saying ``what``
    failed, with git's own first line."""
    try:
        yield
    except (GitError, ODBError) as exc:
        stderr = getattr(exc, "stderr", "") or str(exc)
        raise GitOpsError(
            f"{what} failed: {first_line(str(stderr)) or type(exc).__name__}"
        ) from None


def first_line(text: str) -> str:
    """Git's message without hints and prefixes, first line only."""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("stderr: '"):  # GitCommandError's quoting of git's stderr
            line = line.removeprefix("stderr: '").removesuffix("'").strip()
        if line and not line.lower().startswith("hint:"):
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return ""


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a commit's tree, as ``git ls-tree -r -l`` lists it."""

    path: str
    mode: str
    kind: str
    sha: str
    size: int | None


@dataclass(slots=True)
class BranchResults:
    """What a commit's results folder holds that may count, and what it holds that may not."""

    results: list[tuple[Entry, RunResult]] = field(default_factory=list)
    """Result files that pass the checks, with their content."""
    companions: list[Entry] = field(default_factory=list)
    """``.md`` / ``.patch`` files beside a result file that passes."""
    refused: list[tuple[str, str]] = field(default_factory=list)
    """Every other entry (its path in the repository) and why it does not count."""


class BranchReader:
    """Reads a commit's results folder with the checks of the module docstring."""

    def __init__(self, repo: Repo, folder: str, check: ResultCheck) -> None:
        self._repo = repo
        self._folder = folder
        self._check = check

    def entries(self, commit: str) -> list[Entry]:
        """Every non-folder entry at or under the results folder in ``commit``."""
        with git_errors(f"reading {self._folder}/ in {commit[:12]}"):
            out = self._repo.git.ls_tree(
                "-r", "-l", "-z", "--full-tree", commit, "--", self._folder
            )
        found = []
        for record in out.split("\0"):
            if not record:
                continue
            meta, _, path = record.partition("\t")
            mode, kind, sha, size = meta.split()
            found.append(Entry(path, mode, kind, sha, int(size) if size.isdigit() else None))
        return found

    def read(self, commit: str, only: Collection[str] | None = None) -> BranchResults:
        """The results folder of ``commit`` sorted into what counts and what does not
        (only the paths in ``only``, when given). Warns once for each refused entry."""
        sorted_out = BranchResults()
        companions: list[Entry] = []
        passing: set[str] = set()
        for entry in self.entries(commit):
            if only is not None and entry.path not in only:
                continue
            if entry.kind == "blob" and entry.size is None:
                raise GitOpsError(
                    f"{entry.path}: its content is missing from this clone (a broken or"
                    " partial clone?); fetch the branch again"
                )
            reason = self._refusal(entry)
            if reason is not None:
                sorted_out.refused.append((entry.path, reason))
            elif entry.path.endswith(".json"):
                outcome = self._result(entry)
                if isinstance(outcome, str):
                    sorted_out.refused.append((entry.path, outcome))
                else:
                    sorted_out.results.append((entry, outcome))
                    passing.add(entry.path.removesuffix(".json"))
            else:
                companions.append(entry)
        for entry in companions:
            if str(PurePosixPath(entry.path).with_suffix("")) in passing:
                sorted_out.companions.append(entry)
            else:
                sorted_out.refused.append((entry.path, "no result file beside it counts"))
        for path, reason in sorted_out.refused:
            warn_skipped(f"{path} (on the branch)", reason)
        return sorted_out

    def blob(self, entry: Entry) -> bytes:
        """The content of a file entry."""
        with git_errors(f"reading {entry.path}"):
            try:
                return bytes(self._repo.odb.stream(bytes.fromhex(entry.sha)).read())
            except ValueError as exc:  # GitPython's cat-file reader: a missing object
                raise GitOpsError(f"reading {entry.path} failed: {first_line(str(exc))}") from None

    def _refusal(self, entry: Entry) -> str | None:
        """Why ``entry`` can never count, or None."""
        name = PurePosixPath(entry.path).name
        cap = self._check.max_bytes
        checks = (
            (entry.path == self._folder, f"{self._folder} is not a folder here"),
            (entry.kind == "commit", "a submodule"),
            (entry.mode == "120000", "a symbolic link"),
            (entry.mode not in _REGULAR, "not a regular file"),
            (
                name.startswith(".") or not name.endswith((".json", *COMPANIONS)),
                "not a result file (<task-id>/<run-id>.json, .md or .patch)",
            ),
            ((entry.size or 0) > cap, f"larger than the {cap:,}-byte cap"),
        )
        return next((reason for failed, reason in checks if failed), None)

    def _result(self, entry: Entry) -> RunResult | str:
        """The checked content of a ``.json`` entry, or why it does not count."""
        where = entry.path.removeprefix(f"{self._folder}/")
        try:
            return self._check.parse(self.blob(entry), where)
        except ResultFileError as exc:
            return exc.reason


#: What a change outside the results folder is called in the pull request's body.
_CHANGE = {"A": "added", "M": "changed", "D": "deleted", "T": "changed type"}
#: git's empty tree: the base when two histories share no commit.
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@dataclass(slots=True)
class BranchReport:
    """What a pull request from the results branch brings, for its body."""

    results: list[dict[str, Any]] = field(default_factory=list)
    """Result files the branch added or changed that pass the checks (as JSON data)."""
    refused: list[tuple[str, str]] = field(default_factory=list)
    """Entries under the results folder that do not count, and why."""
    outside: list[tuple[str, str]] = field(default_factory=list)
    """Paths outside the results folder the branch touched, and how (added, changed,
    deleted, or left behind: pushed to the branch and not carried forward by omni)."""


def branch_report(
    repo: Repo, base: str, branch: str, folder: str, check: ResultCheck
) -> BranchReport:
    """The results ``branch`` added or changed since it left ``base``, the entries there
    that do not count, and everything its commits touched outside ``folder``."""
    changed = _git_lines(
        repo,
        "diff",
        "--name-only",
        "-z",
        "--no-renames",
        "--diff-filter=AMT",
        f"{base}...{branch}",
        "--",
        folder,
    )
    found = BranchReader(repo, folder, check).read(branch, only=set(changed))
    report = BranchReport(
        results=[result.model_dump(mode="json") for _, result in found.results],
        refused=found.refused,
    )
    outside = f":(exclude,literal){folder}"
    status = _git_lines(
        repo,
        "diff",
        "--name-status",
        "-z",
        "--no-renames",
        f"{base}...{branch}",
        "--",
        ".",
        outside,
    )
    on_branch = dict(zip(status[1::2], status[0::2], strict=True))
    touched = _git_lines(
        repo, "log", "--format=", "--name-only", "-z", f"{base}..{branch}", "--", ".", outside
    )
    for path in sorted({*on_branch, *touched}):
        code = on_branch.get(path)
        how = _CHANGE.get(code[:1], code) if code else "left behind: not carried forward by omni"
        report.outside.append((path, how))
    return report


def left_behind(
    repo: Repo, tip: str | None, head: str | None, folder: str, changed: Collection[str]
) -> list[str]:
    """Paths outside ``folder`` that the branch at ``tip`` changed since it left ``head``
    (and this run did not change): what a commit built on ``HEAD``'s tree leaves behind."""
    if tip is None or head is None or tip == head:
        return []
    status, out, _ = repo.git.merge_base(
        tip, head, with_extended_output=True, with_exceptions=False
    )
    base = out.strip() if status == 0 and out.strip() else _EMPTY_TREE
    if base == tip:
        return []
    names = _git_lines(
        repo,
        "diff",
        "--name-only",
        "-z",
        "--no-renames",
        base,
        tip,
        "--",
        ".",
        f":(exclude,literal){folder}",
    )
    return sorted(set(names) - set(changed))


def _git_lines(repo: Repo, command: str, *args: str) -> list[str]:
    """The NUL-separated output of a read-only git command; :class:`GitOpsError` if it fails."""
    status, out, err = getattr(repo.git, command.replace("-", "_"))(
        *args, with_extended_output=True, with_exceptions=False, strip_newline_in_stdout=False
    )
    if status != 0:
        raise GitOpsError(f"git {command} failed: {first_line(err) or f'exit {status}'}")
    return [part for part in out.split("\0") if part]
