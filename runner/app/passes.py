"""What a pass over the tasks shares between ``run --once``, its ``--dry-run``,
``omni tasks`` and the service: the due rule and why a task cannot run yet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runner.core.errors import UsageError
from runner.defs.config import BUILTIN
from runner.defs.problems import did_you_mean
from runner.defs.routing import waits_for_model
from runner.defs.tasks import LoadResult, default_id, load_tasks
from runner.dispatch.repairs import repair_waits
from runner.planning.dueness import DueRule
from runner.state.taskcache import CACHE_NAME, TaskCache

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from runner.defs.config import Config
    from runner.defs.environment import ResolvedPaths
    from runner.defs.tasks import Task


def due_rule(config: Config, results: Path | None, now: datetime) -> DueRule:
    """The due rule of a pass at ``now``; ``results`` ``None`` decides from the store alone."""
    return DueRule(
        now=now,
        results=results,
        timezone=config.schedule.timezone,
        misfire_grace=config.schedule.misfire_grace,
        result_bytes=config.limits.result_file_bytes,
    )


def waits_for(config: Config) -> Callable[[Task], str | None]:
    """Why a task cannot run yet (a prompt task with no model configured, a repair task
    without its executor), or ``None``."""
    configured = {BUILTIN, *config.mcp_servers}

    def why(task: Task) -> str | None:
        return repair_waits(task, config, configured) or waits_for_model(
            task.spec, config, configured
        )

    return why


def load_pass(
    config: Config, paths: ResolvedPaths, task_id: str | None = None, *, remember: bool = False
) -> LoadResult:
    """The tasks folder's tasks. :class:`UsageError` when the folder is missing, or
    ``task_id`` names no task file (one that exists but is invalid is in the problems).

    With a SQLite state file, unchanged files come from the parsed-task cache beside it
    (:mod:`runner.state.taskcache`); ``remember`` writes what this pass parsed back to it
    (a pass that keeps state: not ``--dry-run`` or the commands that only look).
    """
    folder = paths.tasks
    if not folder.exists():
        raise UsageError(
            f"tasks folder {folder} not found (run `omni init` to make one with examples,"
            " or point --tasks or OMNI_TASKS at yours)"
        )
    max_bytes = config.limits.task_file_bytes
    if paths.state_url is not None or not paths.state.is_file():
        loaded = load_tasks(folder, max_bytes)  # no state kept here: nothing to remember
    else:
        cache = TaskCache(paths.state.with_name(CACHE_NAME), folder, max_bytes)
        loaded = load_tasks(folder, max_bytes, read=cache.read)
        loaded.cached = cache.hits
        if remember:
            cache.save()
    if task_id is None or any(t.id == task_id for t in loaded.tasks):
        return loaded
    root = folder if folder.is_dir() else folder.parent
    invalid = {default_id(Path(p.path), root) for p in loaded.problems}
    if task_id in invalid:
        return loaded  # its problems say why it cannot run
    known = [t.id for t in loaded.tasks]
    guess = did_you_mean(task_id, known)
    hint = f"; did you mean {guess!r}?" if guess else ""
    raise UsageError(f"--task {task_id!r}: no task in {folder} has this id{hint}")
