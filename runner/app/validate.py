"""``omni validate``: check task files and the config before anything runs.

Plain ``validate`` makes every check that needs no server: the task model, executor
names (the task's own and the config's rules and default), tool names and arguments on
the built-in executor (its tools are known statically), ``tools:`` entries there, and
model names against ``model_list`` and the tiers. ``--deep`` also starts each executor
the tasks use and checks tool names, arguments and ``tools:`` against what it lists, and
asks a LiteLLM proxy which models it serves. Every problem is one
``PATH:LINE: FIELD: message`` line.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.core.errors import OmniError, TaskFileError
from runner.core.yamlio import Lines
from runner.defs.config import BUILTIN, Config
from runner.defs.problems import did_you_mean
from runner.defs.routing import ModelPolicy, choose_executor, model_list_names
from runner.defs.tasks import Task, line_in_file, load_tasks, root_for, scan_task_files
from runner.defs.toolargs import ArgsSchema
from runner.reach.builtin.catalog import TOOLS as BUILTIN_TOOLS
from runner.state.results import result_path_problem

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence
    from pathlib import Path

    from runner.defs.tasks import TaskSpec

_POLICIES = frozenset(p.value for p in ModelPolicy)


@dataclass(slots=True)
class Checked:
    """What ``validate`` read and found."""

    files: int = 0
    problems: list[TaskFileError] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    """Files that look meant as task files but are not read (``.YAML``)."""
    tasks: list[Task] = field(default_factory=list)
    """The tasks that loaded (``--deep`` checks them further)."""
    executors: dict[str, str] = field(default_factory=dict)
    """``--deep``: each executor started and what it said (tool count, or why not)."""
    models: str | None = None
    """``--deep`` with a proxy: how many models it lists, or why it could not say."""


def executor_names(config: Config) -> set[str]:
    """Executors a task may name: the configured servers plus ``builtin``."""
    return {*config.mcp_servers, BUILTIN}


def validate_paths(
    config: Config,
    paths: Sequence[Path],
    tasks_root: Path,
    results_root: Path,
    config_path: Path | None,
) -> Checked:
    """Validate the config and every task file under ``paths`` (ids relative to
    ``tasks_root``; each task's result files must fit under ``results_root``) with no
    server: see the module docstring."""
    names = None if config.lite_llm_url else set(model_list_names(config))
    checked = Checked(problems=config_problems(config, config_path, names))
    for path in paths:
        if not path.exists():
            checked.problems.append(
                TaskFileError(str(path), None, "(file)", "no such file or folder")
            )
            continue
        files, ignored, unreadable = scan_task_files(path)
        checked.ignored += ignored
        checked.problems += unreadable
        root = path if path.is_dir() else root_for(path, tasks_root)
        loaded = load_tasks(root, config.limits.task_file_bytes, files=files)
        checked.files += len(files)
        checked.problems.extend(loaded.problems)
        checked.tasks += loaded.tasks
    limit = config.limits.task_file_bytes
    builtin = {tool: ArgsSchema.of(schema) for tool, schema in BUILTIN_TOOLS.items()}
    for task in checked.tasks:
        too_long = result_path_problem(results_root, task.id)
        if too_long is not None:
            line = line_in_file(task.path, ("id",), limit) if task.spec.id else 1
            checked.problems.append(TaskFileError(str(task.path), line, "id", too_long))
        checked.problems += task_problems(
            task, config, lambda name: builtin if name == BUILTIN else None, names
        )
    return checked


def config_problems(
    config: Config, config_path: Path | None, model_names: Collection[str] | None
) -> list[TaskFileError]:
    """Executors and models (when ``model_names`` is known) the config names that do
    not exist. No value is echoed: a config value may be an expanded secret."""
    text = config_path.read_text(encoding="utf-8") if config_path is not None else ""
    shown = str(config_path) if config_path is not None else "(defaults)"
    configured = executor_names(config)
    found: list[TaskFileError] = []
    lines = Lines(text)

    def add(loc: tuple[str | int, ...], key: str, message: str) -> None:
        found.append(TaskFileError(shown, lines.of(loc), key, message))

    router = config.router
    if router.default_executor not in configured:
        add(
            ("router", "default_executor"),
            "router.default_executor",
            _not_configured(router.default_executor, configured, echo=False),
        )
    for i, rule in enumerate(router.rules):
        if rule.executor not in configured:
            message = _not_configured(rule.executor, configured, echo=False)
            add(("router", "rules", i, "executor"), f"router.rules[{i}].executor", message)
    if model_names is None:
        return found  # behind a proxy: `--deep` asks it
    names = list(model_names)
    for tier in ("free", "paid"):
        for j, model in enumerate(getattr(router.model_tiers, tier)):
            if not _known_model(model, names):
                message = _unknown_model(model, names, echo=False)
                add(("router", "model_tiers", tier, j), f"router.model_tiers.{tier}[{j}]", message)
    default = router.default_model
    if default not in _POLICIES and not _known_model(default, names):
        add(
            ("router", "default_model"),
            "router.default_model",
            _unknown_model(router.default_model, names, echo=False),
        )
    return found


def task_problems(
    task: Task,
    config: Config,
    tools_of: Callable[[str], Mapping[str, ArgsSchema] | None],
    model_names: Collection[str] | None,
) -> list[TaskFileError]:
    """One task's executor, tool, arguments, ``tools:`` and model, as far as
    ``tools_of`` (an executor's tools, ``None``: unknown) and ``model_names`` (``None``:
    unknown, e.g. behind a proxy) tell."""
    spec = task.spec
    configured = executor_names(config)
    route = choose_executor(spec, config.router, configured)
    found: list[tuple[tuple[str | int, ...], str, str]] = []
    if not route.configured:
        if spec.executor is not None:  # the config's own names are checked once, there
            found.append((("executor",), "executor", _not_configured(spec.executor, configured)))
        return _located(task, found, config.limits.task_file_bytes)
    tools = tools_of(route.executor)
    if tools is not None and spec.tool is not None:
        found += _tool_problems(spec.tool, spec.args, tools)
    server = config.mcp_servers.get(route.executor)
    agent_tool = server.agent_tool if server is not None else None
    if tools is not None and spec.tools is not None and not agent_tool:
        for i, name in enumerate(spec.tools):
            if name not in tools:
                found.append((("tools", i), f"tools[{i}]", _unknown_tool(name, tools)))
    if spec.prompt is not None and not agent_tool:
        found += _model_problems(spec, config, model_names)
    return _located(task, found, config.limits.task_file_bytes)


def _model_problems(
    spec: TaskSpec, config: Config, model_names: Collection[str] | None
) -> list[tuple[tuple[str | int, ...], str, str]]:
    """A prompt task's model: none to run on at all, or a name nothing serves."""
    if model_names is not None and not model_names:
        return [(("prompt",), "prompt", _NO_MODEL)] if spec.enabled else []
    if not model_names or spec.model is None:
        return []
    if spec.model not in _POLICIES and not _known_model(spec.model, model_names):
        return [(("model",), "model", _unknown_model(spec.model, model_names))]
    if spec.model in _POLICIES and not _tier_has_models(config, spec.model):
        return [(("model",), "model", f"router.model_tiers has no {spec.model} models")]
    return []


_NO_MODEL = (
    "no model is configured (model_list or lite_llm_url in the config): this prompt task"
    " would wait (idle) until one is; configure one, or set enabled: false"
)


def _tool_problems(
    tool: str, args: dict[str, Any], tools: Mapping[str, ArgsSchema]
) -> list[tuple[tuple[str | int, ...], str, str]]:
    schema = tools.get(tool)
    if schema is None:
        return [(("tool",), "tool", _unknown_tool(tool, tools))]
    if (problem := schema.problem(args, strict=True)) is not None:
        return [(("args",), "args", problem)]
    return []


def _known_model(name: str, names: Collection[str]) -> bool:
    """True when ``name`` is one of ``names`` or matches one with ``*`` in it (a LiteLLM
    wildcard deployment, such as a proxy's ``openai/*``)."""
    return name in names or any("*" in n and fnmatch.fnmatchcase(name, n) for n in names)


def _tier_has_models(config: Config, policy: str) -> bool:
    tiers = config.router.model_tiers
    if policy == ModelPolicy.FREE:
        return bool(tiers.free)
    if policy == ModelPolicy.PAID:
        return bool(tiers.paid)
    return True  # free_then_paid falls back to the model_list order


def _located(
    task: Task, found: list[tuple[tuple[str | int, ...], str, str]], limit: int
) -> list[TaskFileError]:
    if not found:
        return []
    return [
        TaskFileError(str(task.path), line_in_file(task.path, loc, limit), key, m)
        for loc, key, m in found
    ]


def _hint(word: str, choices: Collection[str]) -> str:
    guess = did_you_mean(word, choices)
    return f"did you mean {guess!r}? " if guess is not None else ""


def _not_configured(name: str, configured: Collection[str], *, echo: bool = True) -> str:
    what = f"{name!r} is not" if echo else "not"
    return (
        f"{what} a configured executor; {_hint(name, configured)}"
        f"configured: {', '.join(sorted(configured))}"
    )


def _unknown_tool(name: str, tools: Mapping[str, ArgsSchema]) -> str:
    return (
        f"unknown tool {name!r}; {_hint(name, tools)}the executor has: {', '.join(sorted(tools))}"
    )


def _unknown_model(name: str, names: Collection[str], *, echo: bool = True) -> str:
    what = f"model {name!r} is" if echo else "the model is"
    known = ", ".join(names) if names else "none (model_list is empty)"
    return f"{what} not in model_list; {_hint(name, names)}model_list has: {known}"


async def deep_check(
    config: Config,
    checked: Checked,
    config_path: Path | None,
    *,
    environ: Mapping[str, str],
    workspace: Path,
) -> None:
    """``--deep``: start every executor the loaded tasks use, check them against what
    it lists, and ask a proxy for its models; problems and executors go into
    ``checked``."""
    # The MCP SDK (and asyncio) load only here: plain `validate` never imports them.
    # pylint: disable=import-outside-toplevel
    import asyncio  # noqa: PLC0415

    from runner.reach.executors import ExecutorPool  # noqa: PLC0415

    configured = executor_names(config)
    used = sorted(
        {
            route.executor
            for task in checked.tasks
            if (route := choose_executor(task.spec, config.router, configured)).configured
        }
    )
    listed: dict[str, Mapping[str, ArgsSchema] | None] = {}
    pool = ExecutorPool(config.mcp_servers, workspace=workspace, environ=environ)

    async def one(name: str) -> None:
        limit = config.mcp_servers[name].timeout if name in config.mcp_servers else 60.0
        try:
            async with asyncio.timeout(limit):
                tools = await pool.list_tools(name)
        except TimeoutError:
            checked.executors[name] = f"no tool list within {limit:g} s"
            return
        except OmniError as exc:
            checked.executors[name] = " ".join(str(exc).split())
            return
        listed[name] = {t.name: ArgsSchema.of(t.input_schema) for t in tools}
        checked.executors[name] = f"ok: {len(tools)} tools"

    try:
        async with pool:
            await asyncio.gather(*(one(n) for n in used))
    except ExceptionGroup:
        pass  # connections that failed while open: each is recorded already
    names = await _model_names(config, checked)
    problems = [] if names is None else config_problems(config, config_path, names)
    for task in checked.tasks:
        route = choose_executor(task.spec, config.router, configured)
        if route.configured and route.executor not in listed:
            why = checked.executors.get(route.executor, "not started")
            problems.append(
                TaskFileError(
                    str(task.path), 1, "executor", f"{route.executor!r} did not start: {why}"
                )
            )
            continue
        problems += task_problems(task, config, listed.get, names)
    # The static problems of these tasks are found again here: keep each line once.
    checked.problems = list({p.render(): p for p in [*checked.problems, *problems]}.values())


async def _model_names(config: Config, checked: Checked) -> Collection[str] | None:
    """The model names prompt tasks may use: a proxy's list, else ``model_list``."""
    if not config.lite_llm_url:
        return set(model_list_names(config))
    from runner.reach.proxymodels import proxy_model_names  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

    key = config.lite_llm_key.get_secret_value() if config.lite_llm_key else None
    try:
        names = await proxy_model_names(
            config.lite_llm_url, key, config.fault_handler.cloud_check_timeout
        )
    except OmniError as exc:
        checked.models = str(exc)
        return None
    checked.models = f"ok: {len(names)} models"
    return set(names)
