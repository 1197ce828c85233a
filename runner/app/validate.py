"""``omni validate`` and ``omni route``: check task files against the model and config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.core.errors import TaskFileError
from runner.defs.config import BUILTIN, Config
from runner.defs.routing import choose_executor
from runner.defs.tasks import find_task_files, line_in_file, load_task_file, load_tasks
from runner.state.results import result_path_problem

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(slots=True)
class Checked:
    """How many files were read and every problem found."""

    files: int = 0
    problems: list[TaskFileError] = field(default_factory=list)


def executor_names(config: Config) -> set[str]:
    """Executors a task may name: the configured servers plus ``builtin``."""
    return {*config.mcp_servers, BUILTIN}


def validate_paths(
    config: Config, paths: list[Path], tasks_root: Path, results_root: Path
) -> Checked:
    """Validate every task file under ``paths``; ids are relative to ``tasks_root``, and
    each task's result files must fit under ``results_root``."""
    checked = Checked()
    configured = executor_names(config)
    for path in paths:
        if not path.exists():
            checked.problems.append(
                TaskFileError(str(path), None, "(file)", "no such file or folder")
            )
            continue
        files = find_task_files(path)
        root = path if path.is_dir() else (tasks_root if _under(path, tasks_root) else path.parent)
        loaded = load_tasks(root, config.limits.task_file_bytes, files=files)
        checked.files += len(files)
        checked.problems.extend(loaded.problems)
        limit = config.limits.task_file_bytes
        for task in loaded.tasks:
            too_long = result_path_problem(results_root, task.id)
            if too_long is not None:
                line = line_in_file(task.path, ("id",), limit) if task.spec.id else 1
                checked.problems.append(TaskFileError(str(task.path), line, "id", too_long))
            route = choose_executor(task.spec, config.router, configured)
            if not route.configured:
                checked.problems.append(
                    TaskFileError(
                        str(task.path),
                        line_in_file(task.path, ("executor",), limit) if task.spec.executor else 1,
                        "executor",
                        f"{route.executor!r} ({route.reason}) is not configured; "
                        f"configured: {', '.join(sorted(configured))}",
                    )
                )
    return checked


def _under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def route_file(config: Config, path: Path, tasks_root: Path) -> dict[str, Any]:
    """The router's decision for one task file, as a mapping for printing."""
    root = tasks_root if _under(path, tasks_root) else path.parent
    task = load_task_file(path.resolve(), root.resolve(), config.limits.task_file_bytes)
    route = choose_executor(task.spec, config.router, executor_names(config))
    return {
        "task": task.id,
        "executor": route.executor,
        "why": route.reason,
        "configured": route.configured,
        "kind of task": "prompt (agent run)" if task.is_prompt else f"tool: {task.spec.tool}",
        "schedule": task.spec.schedule or "none (runs once per content)",
    }
