"""The task-file model (DESIGN §4) and the loader that reads a folder of them.

The loader never stops at a bad file: each problem becomes one
``PATH:LINE: FIELD: message`` and the valid files still load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runner.core.clock import check_timezone
from runner.core.errors import FileRefusedError, InvalidTaskFile, TaskFileError
from runner.core.files import read_regular
from runner.core.ids import check_task_id
from runner.core.pathglob import compile_glob
from runner.core.yamlio import Lines, YamlProblem, dotted, line_of, read_yaml, yaml_from_bytes
from runner.defs.cron import CronError, parse_schedule
from runner.defs.problems import message as problem_message

if TYPE_CHECKING:
    from collections.abc import Iterable

TASK_SUFFIXES = (".yaml", ".yml")


def check_schedule(schedule: str) -> None:
    """Raise ``ValueError`` unless ``schedule`` is a cron expression Debian cron would run
    (5 fields or an ``@name``) or ``every N s|m|h|d``; the message says why."""
    problem = _schedule_problem(schedule)
    if problem is not None:
        raise ValueError(problem)


@lru_cache(maxsize=4096)  # a thousand tasks share a handful of schedules
def _schedule_problem(schedule: str) -> str | None:
    try:
        parse_schedule(schedule)
    except CronError as exc:
        return f"bad cron {schedule.strip()!r}: {exc}"
    return None


class PullRequest(BaseModel):
    """``pull_request:``: the run's file changes become this task's pull request."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    paths: list[str] = Field(min_length=1)
    """Globs of the paths the change may touch (``docs/**``); protected paths never."""
    title: str | None = Field(default=None, max_length=200)
    """The pull request's title; default ``omni: <task id>``."""
    draft: bool = False
    """Open the pull request as a draft."""
    labels: list[str] = Field(default_factory=list)
    """Labels for the pull request (they must exist in the repository)."""

    @field_validator("paths")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            compile_glob(pattern)  # a ValueError names the pattern
        return value


class TaskSpec(BaseModel):
    """One task file. Exactly one of ``tool`` (a tool task) or ``prompt`` (a prompt task)."""

    # allow_inf_nan=False: a timeout of .inf would wait for ever.
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, frozen=True, allow_inf_nan=False
    )

    id: str | None = None
    """Task id; default the file's path under the tasks folder without ``.yaml``."""
    description: str = ""
    """What the task is for; routing rules match words in it."""
    enabled: bool = True
    """``false`` pauses the task."""
    kind: Literal["coding", "general", "always_on"] | None = None
    """Routing hint: coding -> claude_code, general -> openclaw, always_on -> moltworker."""
    executor: str | None = None
    """The executor to use, overriding routing (a key of ``mcp_servers``, or ``builtin``)."""
    tool: str | None = None
    """A tool task: the MCP tool to call once."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Arguments for ``tool``."""
    prompt: str | None = None
    """A prompt task: what the agent should do."""
    tools: list[str] | None = None
    """Prompt tasks: the tools the agent may call (default: all of the executor's except
    opt-in ones such as the built-in ``run``, offered only when listed here)."""
    model: str | None = None
    """``free``, ``paid``, ``free_then_paid`` or a model name; default ``router.default_model``."""
    max_turns: int | None = Field(default=None, ge=1)
    """Prompt tasks: model turns allowed; default ``agent.max_turns``."""
    schedule: str | None = None
    """Cron (``0 3 * * *``, ``@daily``) or ``every 10m``; absent means run once per content."""
    timezone: str | None = None
    """IANA time zone for a cron schedule; default ``schedule.timezone`` (UTC)."""
    timeout: float = Field(default=300.0, gt=0)
    """Seconds the whole run may take."""
    retries: int = Field(default=0, ge=0, le=100)
    """Extra attempts after a failed one."""
    pull_request: PullRequest | None = None
    """Opt in: the run's file changes (limited to ``paths``) become this task's pull
    request; without it a model-driven run's changes are dropped."""
    network: bool = False
    """Model-driven runs: the sandboxed executors may reach the network."""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return None if value is None else check_task_id(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @model_validator(mode="after")
    def _shape(self) -> TaskSpec:
        if self.tool is not None and self.prompt is not None:
            raise PydanticCustomError(
                "task_shape",
                "give either `tool` (one MCP call) or `prompt` (an agent run), not both",
                {"field": "prompt"},
            )
        if self.tool is None and self.prompt is None:
            raise PydanticCustomError(
                "task_shape",
                "a task needs `tool` (one MCP call) or `prompt` (an agent run)",
                {"field": "tool"},
            )
        if self.schedule is not None:
            try:
                check_schedule(self.schedule)
            except ValueError as exc:
                raise PydanticCustomError("schedule", str(exc), {"field": "schedule"}) from None
        return self


@dataclass(frozen=True, slots=True)
class Task:
    """A task file that loaded: its id, where it came from, and its content hash."""

    id: str
    path: Path
    spec: TaskSpec
    task_hash: str

    @property
    def is_prompt(self) -> bool:
        """True for a prompt task (an agent run), false for a tool task."""
        return self.spec.prompt is not None

    @property
    def is_model_driven(self) -> bool:
        """True for a run that only proposes (DESIGN §3, Trust): a prompt task, or any
        task declaring ``pull_request:``. It gets its own workspace and executors."""
        return self.spec.prompt is not None or self.spec.pull_request is not None


@dataclass(slots=True)
class LoadResult:
    """What a folder gave: the tasks that loaded, and one problem a line for the rest."""

    tasks: list[Task] = field(default_factory=list)
    problems: list[TaskFileError] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    """Files not read although they look meant as task files (``.YAML``)."""
    cached: int = 0
    """Tasks answered from the parsed-task cache, their files not read."""


def task_hash(spec: TaskSpec, task_id: str) -> str:
    """A hash of what the task does; comments and key order do not change it."""
    body = spec.model_dump(mode="json", exclude={"id"})
    body["id"] = task_id
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def default_id(path: Path, root: Path) -> str:
    """The id a file gets without ``id:``: its path under ``root`` without the suffix."""
    shown, base = str(path), str(root)
    if base != "." and shown.startswith(base) and shown[len(base) : len(base) + 1] == os.sep:
        # What relative_to and with_suffix("") give, without their cost a file.
        folder, name = os.path.split(shown[len(base) + 1 :])
        dot = name.rfind(".")
        if 0 < dot < len(name) - 1:
            name = name[:dot]
        return f"{folder}/{name}".replace(os.sep, "/") if folder else name
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def _utf8(text: str) -> bool:
    """True if ``text`` (a path as Python decodes it) is valid UTF-8: bytes that are not
    come back as lone surrogates, which no file, row or terminal can take."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _printable_path(text: str) -> str:
    """A path whose bytes are not all UTF-8, with those bytes as ``\\xNN``."""
    return text.encode(errors="surrogateescape").decode(errors="backslashreplace")


def root_for(path: Path, tasks_root: Path) -> Path:
    """The folder a file's default id is taken relative to: the tasks folder when the
    file is inside it, else the file's own folder."""
    try:
        path.resolve().relative_to(tasks_root.resolve())
    except ValueError:
        return path.parent
    return tasks_root


def load_task_file(path: Path, root: Path, max_bytes: int, *, raw: bytes | None = None) -> Task:
    """Load one task file (``raw``: its bytes, when the caller has read them); raises
    :class:`InvalidTaskFile` listing every problem."""
    shown = str(path)
    if not shown.isascii() and not _utf8(shown):
        # Its path could be neither stored nor printed: a problem, not a stop for all.
        raise InvalidTaskFile(
            [TaskFileError(_printable_path(shown), 1, "(file)", "its name is not valid UTF-8")]
        )
    try:
        data, text = read_yaml(path, max_bytes) if raw is None else yaml_from_bytes(raw)
    except YamlProblem as exc:
        raise InvalidTaskFile([TaskFileError(shown, exc.line, "(file)", exc.message)]) from None
    except OSError as exc:
        raise InvalidTaskFile(
            [TaskFileError(shown, 1, "(file)", f"cannot read: {exc.strerror}")]
        ) from None
    if data is None:
        raise InvalidTaskFile(
            [TaskFileError(shown, 1, "(file)", "file is empty; a task needs `tool` or `prompt`")]
        )
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise InvalidTaskFile(
            [
                TaskFileError(
                    shown, 1, "(file)", f"a task file must be a mapping of keys, got {kind}"
                )
            ]
        )
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        lines = Lines(text)
        problems = [_problem(shown, lines, err) for err in exc.errors()]
        raise InvalidTaskFile(sorted(problems, key=lambda p: p.line or 1)) from None
    task_id = spec.id or default_id(path, root)
    if spec.id is None:
        try:
            check_task_id(task_id)
        except ValueError as exc:
            raise InvalidTaskFile(
                [
                    TaskFileError(
                        shown, 1, "id", f"{exc} (from the file name; rename the file or set `id:`)"
                    )
                ]
            ) from None
    return Task(id=task_id, path=path, spec=spec, task_hash=task_hash(spec, task_id))


def line_in_file(path: Path, loc: tuple[str | int, ...], max_bytes: int) -> int:
    """The line of the key at ``loc`` in the task file ``path`` (1 if it cannot be read
    again: it may have changed since it loaded)."""
    try:
        text = read_regular(path, max_bytes).decode("utf-8", errors="replace")
    except (OSError, FileRefusedError):
        return 1
    return line_of(text, loc)


def _problem(path: str, lines: Lines, err: Any) -> TaskFileError:
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if not loc and "field" in ctx:
        loc = (ctx["field"],)
    message = problem_message(TaskSpec, err, show_value=True)
    return TaskFileError(path, lines.of(loc), dotted(loc), message)


class TaskScan(NamedTuple):
    """What a walk of the tasks folder found."""

    found: list[Path]
    """Task files, sorted."""
    ignored: list[Path]
    """Files that look meant as task files but are not read (``.YAML``, ``.Yml``)."""
    unreadable: list[TaskFileError]
    """Folders that could not be listed (their task files would go unnoticed)."""


def scan_task_files(root: Path) -> TaskScan:
    """Task files under ``root`` (sorted; hidden files and folders skipped), the files
    that look meant as task files but are not read (a suffix in another case), named so
    a person hears of them once, and the folders that could not be listed.

    Every non-folder entry with a task suffix is listed, a FIFO or a device too: the
    loader refuses it with a message instead of it going unnoticed. Symlinked folders
    are followed, each folder once.
    """
    if not root.is_dir():
        return TaskScan([root] if os.path.lexists(root) else [], [], [])
    found: list[str] = []
    ignored: list[str] = []
    unreadable: list[TaskFileError] = []
    seen: set[tuple[int, int]] = set()

    def refused(exc: OSError) -> None:
        where = exc.filename if exc.filename is not None else root
        unreadable.append(
            TaskFileError(str(where), None, "(folder)", f"cannot list: {exc.strerror}")
        )

    for folder, dirs, files in os.walk(root, onerror=refused, followlinks=True):
        try:
            here = os.stat(folder)
        except OSError as exc:  # gone since it was listed
            refused(exc)
            continue
        if (here.st_dev, here.st_ino) in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add((here.st_dev, here.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            suffix = os.path.splitext(name)[1]
            if name.startswith(".") or suffix.lower() not in TASK_SUFFIXES:
                continue
            (found if suffix in TASK_SUFFIXES else ignored).append(os.path.join(folder, name))
    return TaskScan(_sorted_paths(found), _sorted_paths(ignored), unreadable)


def _sorted_paths(paths: list[str]) -> list[Path]:
    """``sorted(map(Path, paths))``: Paths sort by their parts; comparing them costs more
    than splitting the strings once."""
    return [Path(p) for p in sorted(paths, key=lambda p: p.split(os.sep))]


def find_task_files(root: Path) -> list[Path]:
    """Task files under ``root``, sorted; hidden files and folders are skipped."""
    return scan_task_files(root)[0]


#: Reads one task file as :func:`load_task_file` does (a cache may answer instead).
TaskReader = Callable[[Path, Path, int], Task]


def load_tasks(
    root: Path,
    max_bytes: int = 1_048_576,
    files: Iterable[Path] | None = None,
    *,
    read: TaskReader = load_task_file,
) -> LoadResult:
    """Load every task file under ``root`` (or just ``files``) with ``read``; duplicate
    ids are problems."""
    result = LoadResult()
    owners: dict[str, Path] = {}
    root_is_dir = root.is_dir()
    if files is None:
        files, result.ignored, result.problems = scan_task_files(root)
    for path in files:
        try:
            task = read(path, root if root_is_dir else path.parent, max_bytes)
        except InvalidTaskFile as exc:
            result.problems.extend(exc.problems)
            continue
        first = owners.get(task.id)
        if first is not None:
            line = line_in_file(path, ("id",), max_bytes) if task.spec.id else 1
            result.problems.append(
                TaskFileError(str(path), line, "id", f"id {task.id!r} is already used by {first}")
            )
            continue
        owners[task.id] = path
        result.tasks.append(task)
    return result
