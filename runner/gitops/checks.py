"""What ``omni publish`` checks before it commits anything: every result file and patch.

Result files and patches come from the job that ran the models (in GitHub Actions a
separate job, through an artifact): they are input, checked here before use (DESIGN
§3, Trust). A result is published only when its JSON is a valid result of a valid task
id and run id, within the size caps, its slot is not in the future, its costs are
finite, and no file of it shows a secret the publishing process knows. A patch is
published only beside a completed result that names it, when every path it touches is
covered by its task's ``pull_request.paths`` and none is protected, it creates no
symlink or nested repository, and it holds no secret (in its text, or in the content of
a binary file it carries).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from runner.core.errors import ResultFileError
from runner.core.gitpatch import BinaryPatchError, binary_contents
from runner.core.ids import check_task_id, is_run_id

if TYPE_CHECKING:
    from pathlib import Path

    from runner.core.pathglob import PathRules
    from runner.core.redaction import Redactor
    from runner.state.resultcheck import ResultCheck

#: Largest Markdown view published (the JSON's cap is ``limits.result_file_bytes``).
RESULT_BYTES = 4_194_304
_SUFFIXES = (".json", ".md", ".patch")
_DIFF_HEADER = re.compile(rb"^diff --git a/(.*) b/(.*)$")
_MODE_LINE = re.compile(rb"^(?:new file mode|new mode|index [0-9a-f]+\.\.[0-9a-f]+) (\d{6})$")
_BAD_MODES = {b"120000": "a symbolic link", b"160000": "a nested repository"}


class Kind(StrEnum):
    """A file in the results folder."""

    RESULT = "result"
    MARKDOWN = "markdown"
    PATCH = "patch"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A file ``omni publish`` will not publish, and why."""

    path: str
    """Relative to the results folder."""
    reason: str


@dataclass(frozen=True, slots=True)
class Approved:
    """A run whose files passed: its result, and its patch when it has one."""

    task_id: str
    run_id: str
    files: tuple[str, ...]
    """Its files, relative to the results folder."""
    result: dict[str, Any]
    patch: bytes | None = None
    patch_paths: tuple[str, ...] = ()


@dataclass(slots=True)
class Checked:
    """Every run of a results folder, approved or not."""

    approved: list[Approved] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def files(self) -> list[str]:
        """Every approved file, relative to the results folder, sorted."""
        return sorted(f for run in self.approved for f in run.files)


@dataclass(frozen=True, slots=True)
class Policy:
    """What a patch may touch and what counts as a secret."""

    redactor: Redactor
    protected: PathRules
    allowed: dict[str, PathRules | None]
    """Each known task's ``pull_request.paths`` (``None``: the task has none)."""
    patch_bytes: int
    results: ResultCheck
    """The checks every result file passes (size cap, schema, ids, times, costs)."""


def check_folder(root: Path, policy: Policy) -> Checked:
    """Check every file under ``root`` (a results folder, or an artifact of one)."""
    checked = Checked()
    groups: dict[tuple[str, str], dict[Kind, Path]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        key = _key(rel, path)
        if isinstance(key, str):
            checked.refused.append(Refusal(rel, key))
            continue
        task_id, run_id, kind = key
        groups.setdefault((task_id, run_id), {})[kind] = path
    for (task_id, run_id), files in sorted(groups.items()):
        _check_run(root, task_id, run_id, files, policy, checked)
    return checked


def _key(rel: str, path: Path) -> tuple[str, str, Kind] | str:
    """``(task id, run id, kind)`` of a results file, or why it does not belong there."""
    if path.is_symlink():
        return "a symbolic link"
    folder, _, name = rel.rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    if not folder or not dot or f".{suffix}" not in _SUFFIXES:
        return "not a result file (<task-id>/<run-id>.json, .md or .patch)"
    try:
        check_task_id(folder)
    except ValueError as exc:
        return f"not under a task id: {exc}"
    if not is_run_id(stem):
        return "not named by a run id"
    kinds = {".json": Kind.RESULT, ".md": Kind.MARKDOWN, ".patch": Kind.PATCH}
    return folder, stem, kinds[f".{suffix}"]


def _check_run(
    root: Path, task_id: str, run_id: str, files: dict[Kind, Path], policy: Policy, out: Checked
) -> None:
    rel = {kind: path.relative_to(root).as_posix() for kind, path in files.items()}
    if Kind.RESULT not in files:
        out.refused += [Refusal(r, "no result file beside it") for r in rel.values()]
        return
    result, why = _check_result(files[Kind.RESULT], rel[Kind.RESULT], policy)
    if result is None:
        for kind, name in rel.items():
            out.refused.append(
                Refusal(name, why if kind is Kind.RESULT else f"its result is refused: {why}")
            )
        return
    if Kind.MARKDOWN in files and (problem := _check_text(files[Kind.MARKDOWN], policy)):
        out.refused.append(Refusal(rel.pop(Kind.MARKDOWN), problem))
    patch: bytes | None = None
    paths: tuple[str, ...] = ()
    if Kind.PATCH in files:
        problem, patch, paths = _check_patch(files[Kind.PATCH], task_id, result, policy)
        if problem is not None:
            out.refused.append(Refusal(rel.pop(Kind.PATCH), problem))
    out.approved.append(
        Approved(task_id, run_id, tuple(sorted(rel.values())), result, patch, paths)
    )


def _check_text(path: Path, policy: Policy) -> str | None:
    """Why a result's JSON or Markdown file may not be published, or ``None``."""
    size = path.stat().st_size
    if size > RESULT_BYTES:
        return f"{size} bytes, more than {RESULT_BYTES}"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    if policy.redactor.text(text) != text:
        return "holds a secret"
    return None


def _check_result(path: Path, where: str, policy: Policy) -> tuple[dict[str, Any] | None, str]:
    """The result's data, or ``None`` and why it may not be published: the checks every
    result file passes before it counts (:class:`~runner.state.resultcheck.ResultCheck`),
    and no secret."""
    if why := _check_text(path, policy):
        return None, why
    try:
        result = policy.results.parse(path.read_bytes(), where)
    except ResultFileError as exc:
        return None, exc.reason
    return result.model_dump(mode="json"), ""


def _check_patch(
    path: Path, task_id: str, result: dict[str, Any], policy: Policy
) -> tuple[str | None, bytes | None, tuple[str, ...]]:
    """Why a patch may not be published (or ``None``), its bytes and its paths."""
    allowed = policy.allowed.get(task_id)
    size = path.stat().st_size
    changes = result.get("changes")
    why: str | None
    if result.get("state") != "completed":
        why = "its run did not complete"
    elif not isinstance(changes, dict) or changes.get("patch") != path.name:
        why = "its result does not name it"
    elif allowed is None:
        why = "its task has no pull_request: (or is gone)"
    elif size > policy.patch_bytes:
        why = f"{size} bytes, more than limits.patch_bytes ({policy.patch_bytes})"
    else:
        data = path.read_bytes()
        paths, why = _patch_problem(data, allowed, policy)
        if why is None:
            return None, data, tuple(paths)
    return why, None, ()


def _patch_problem(data: bytes, allowed: PathRules, policy: Policy) -> tuple[list[str], str | None]:
    """The patch's paths, and why it may not be published (``None``: it may)."""
    try:
        # A binary file's content is deflated in the patch: its secrets are read in the clear.
        contents = [data, *binary_contents(data)]
    except BinaryPatchError as exc:
        return [], str(exc)
    for content in contents:
        text = content.decode("utf-8", errors="replace")
        if policy.redactor.text(text) != text:
            return [], "holds a secret"
    paths, problem = patch_paths(data)
    if problem is not None:
        return [], problem
    for changed in paths:
        if (pattern := policy.protected.match(changed)) is not None:
            return [], f"touches {changed!r}, a protected path ({pattern!r})"
        if not allowed.covers(changed):
            return [], f"touches {changed!r}, outside pull_request.paths"
    return paths, None


def patch_paths(data: bytes) -> tuple[list[str], str | None]:
    """The paths a ``git diff`` patch touches, or why it is not one omni would write
    (renames, symlinks, nested repositories, unreadable headers)."""
    paths: list[str] = []
    for line in data.split(b"\n"):
        if line.startswith(b"diff --git "):
            match = _DIFF_HEADER.match(line)
            if match is None or match.group(1) != match.group(2):
                return [], "a diff header omni does not write (a rename or quoted path)"
            paths.append(match.group(1).decode("utf-8", errors="replace"))
        elif (mode := _MODE_LINE.match(line)) is not None and mode.group(1) in _BAD_MODES:
            return [], f"creates {_BAD_MODES[mode.group(1)]}"
        elif line.startswith((b"rename ", b"copy ")):
            return [], "a rename or copy (omni writes neither)"
    if not paths:
        return [], "no file in it"
    return paths, None
