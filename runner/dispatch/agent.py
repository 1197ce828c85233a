"""Prompt tasks: a tool-use loop over an executor's MCP tools, with a model via LiteLLM.

The model sees the executor's tools (filtered by the task's ``tools:``; opt-in tools
such as the built-in ``run`` only when ``tools:`` lists them) as function tools. What a
tool answers is redacted before the model sees it. Each tool call it asks for goes
through the executor pool; bad requests (a tool outside ``tools:``, an unknown tool,
arguments that are not a JSON object, a tool error) are answered to the model as the
tool's result, so it can correct itself. The loop
stops on a final answer, after ``max_turns`` model turns (failed, with the reason), or
when the dispatcher's timeout cancels it. An executor with an ``agent_tool`` gets the
whole prompt in one call instead.

Everything a run did is kept on a :class:`Transcript` the caller owns, so a run that
fails half-way still records its turns, tool calls, tokens and cost.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from runner.core.errors import (
    AgentError,
    ExecutorTimeoutError,
    ExecutorUnavailableError,
    ToolError,
)
from runner.core.text import truncate
from runner.state.results import Usage

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.core.redaction import Redactor
    from runner.defs.config import Config
    from runner.defs.routing import ModelChoice
    from runner.defs.tasks import Task
    from runner.dispatch.budget import SpendGuard
    from runner.reach.calls import Completion, GatewayCall, ModelClient, ToolRequest
    from runner.reach.tools import ToolInfo, ToolOutcome

SYSTEM_PROMPT = (
    "You are an agent run by Omni-Orchestrator for the task {task_id!r}. Use the tools "
    "when they help. When you are done, reply with the final result as plain text and "
    "no tool calls."
)
_FUNCTION_NAME = re.compile(r"[^A-Za-z0-9_-]")


class AgentPool(Protocol):
    """What the agent needs of an executor pool (:class:`~runner.reach.executors.ExecutorPool`)."""

    async def list_tools(self, executor: str) -> list[ToolInfo]:
        """The executor's tools."""

    async def call_tool(
        self,
        executor: str,
        tool: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the MCP read timeout, not ours
        meta: dict[str, Any] | None = None,
    ) -> ToolOutcome:
        """Call one tool."""

    def opt_in_tools(self, executor: str) -> frozenset[str]:
        """Tools offered to a model only when its task lists them."""


@dataclass(slots=True)
class ToolCallRecord:
    """One tool call the agent made (or was refused), for the result file."""

    turn: int
    name: str
    arguments: Any
    """The arguments as sent (secrets redacted), or the raw text if it was not JSON."""
    duration_s: float
    error: str | None = None


@dataclass(slots=True)
class Transcript:  # pylint: disable=too-many-instance-attributes  # one run's record
    """What a prompt run did: model turns, tool calls, tokens, cost. Owned by the caller."""

    model: str | None = None
    """The model that gave the last usable answer."""
    tier: str | None = None
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    model_calls: list[GatewayCall] = field(default_factory=list)
    """Every model call, failed fallback steps included, in order."""
    agent_tool: str | None = None
    """Set when the prompt went to the executor's ``agent_tool`` instead of the loop."""

    def add(self, completion: Completion) -> None:
        """Count one usable model answer."""
        self.turns += 1
        self.model, self.tier = completion.model, str(completion.tier)
        self.input_tokens += completion.input_tokens
        self.output_tokens += completion.output_tokens
        if completion.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + completion.cost_usd

    @property
    def spent(self) -> float:
        """Dollars spent so far (unknown prices count as 0)."""
        return self.cost_usd or 0.0

    def usage(self) -> Usage:
        """Tokens and cost for the result's ``usage``."""
        cost = None if self.cost_usd is None else round(self.cost_usd, 8)
        return Usage(
            input_tokens=self.input_tokens, output_tokens=self.output_tokens, cost_usd=cost
        )

    def as_dict(self) -> dict[str, Any]:
        """The result file's ``agent`` field."""
        model_calls = [
            {
                "model": c.model,
                "tier": str(c.tier),
                "outcome": str(c.outcome),
                "duration_s": c.duration_s,
                "error": c.detail or None,
                # A rate limit's reset: the next process (or CI run) skips the model.
                **({"until": c.until} if c.until else {}),
            }
            for c in self.model_calls
        ]
        tool_calls = [
            {
                "turn": c.turn,
                "name": c.name,
                "arguments": c.arguments,
                "duration_s": c.duration_s,
                "error": c.error,
            }
            for c in self.tool_calls
        ]
        return {
            "turns": self.turns,
            "agent_tool": self.agent_tool,
            "model_calls": model_calls,
            "tool_calls": tool_calls,
        }


def _function_names(executor: str, tools: list[ToolInfo]) -> dict[str, str]:
    """OpenAI function names (``[A-Za-z0-9_-]{1,64}``) for MCP tool names. Two tools
    whose names become the same function name (``a.b`` and ``a_b``) are refused: the
    model could not tell them apart, and its call would run whichever came first."""
    names: dict[str, str] = {}
    for tool in tools:
        name = _FUNCTION_NAME.sub("_", tool.name)[:64] or "tool"
        if (other := names.get(name)) is not None:
            raise AgentError(
                f"executor {executor!r} offers tools {other!r} and {tool.name!r}, which both "
                f"become the function name {name!r} for the model; list only one of them "
                "in the task's `tools:`, or rename one on the server"
            )
        names[name] = tool.name
    return names


def _schemas(functions: Mapping[str, str], tools: list[ToolInfo]) -> list[dict[str, Any]]:
    """The OpenAI function-tool definitions the model is offered."""
    by_name = {t.name: t for t in tools}
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": by_name[real].description[:1024],
                "parameters": by_name[real].input_schema or {"type": "object"},
            },
        }
        for name, real in functions.items()
    ]


@dataclass(frozen=True, slots=True)
class _Call:
    """What one run's tool calls go with: its task, executor, pool and ``_meta``."""

    task: Task
    executor: str
    pool: AgentPool
    meta: dict[str, Any]
    opt_in: frozenset[str]


class Agent:
    """Runs prompt tasks: the tool-use loop, or one call to an executor's agent tool."""

    def __init__(
        self, *, llm: ModelClient, pool: AgentPool, config: Config, redactor: Redactor
    ) -> None:
        self._llm = llm
        self._pool = pool
        self._config = config
        self._redactor = redactor

    async def run(
        self,
        task: Task,
        executor: str,
        *,
        choice: ModelChoice,
        spend: SpendGuard,
        transcript: Transcript,
        meta: dict[str, Any],
        pool: AgentPool | None = None,
    ) -> str:
        """The agent's final answer, with the executors of ``pool`` (a model-driven run's
        own) or else the shared ones. Raises :class:`AgentError` (max_turns, bad
        ``tools:``), :class:`BudgetExceededError`, ``ModelError`` (no model answered),
        ``ExecutorError`` (the executor is gone)."""
        pool = pool or self._pool
        agent_tool = self._agent_tool_of(executor)
        tools = await self._offered(task, executor, agent_tool, pool)
        if agent_tool:
            return await self._agent_tool(
                _Call(task, executor, pool, meta, frozenset()), agent_tool, tools, transcript
            )
        opt_in = pool.opt_in_tools(executor)
        allowed = self._allowed(task, executor, tools, opt_in)
        call = _Call(task, executor, pool, meta, opt_in)
        return await self._loop(call, allowed, {t.name for t in tools}, choice, spend, transcript)

    async def _loop(
        self,
        call: _Call,
        allowed: list[ToolInfo],
        every: set[str],
        choice: ModelChoice,
        spend: SpendGuard,
        transcript: Transcript,
    ) -> str:
        """The tool-use loop: model turns until a final answer or ``max_turns``."""
        task = call.task
        functions = _function_names(call.executor, allowed)
        schemas = _schemas(functions, allowed)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM_PROMPT.format(task_id=task.id)},
            {"role": "user", "content": task.spec.prompt or ""},
        ]
        max_turns = task.spec.max_turns or self._config.agent.max_turns
        for turn in range(1, max_turns + 1):
            spend.before_call(transcript)
            completion = await self._llm.complete(
                messages, schemas, choice, on_step=transcript.model_calls.append
            )
            transcript.add(completion)
            spend.after_call(transcript)
            if not completion.tool_calls:
                return truncate(completion.text, self._config.dispatch.output_limit_bytes)
            messages.append(completion.message())
            for request in completion.tool_calls:
                content = await self._tool_call(call, request, turn, functions, every, transcript)
                messages.append({"role": "tool", "tool_call_id": request.id, "content": content})
        asked = ", ".join(sorted({c.name for c in transcript.tool_calls[-5:]})) or "none"
        raise AgentError(
            f"stopped after max_turns={max_turns} model turns without a final answer "
            f"(the model kept calling tools; last asked for: {asked})"
        )

    def _agent_tool_of(self, executor: str) -> str | None:
        server = self._config.mcp_servers.get(executor)
        return server.agent_tool if server is not None else None

    @staticmethod
    async def _offered(
        task: Task, executor: str, agent_tool: str | None, pool: AgentPool
    ) -> list[ToolInfo]:
        """The executor's tools; none, and no executor started, when the task offers the
        model no tools (``tools: []``) and the executor has no agent tool."""
        if task.spec.tools == [] and not agent_tool:
            return []
        return await pool.list_tools(executor)

    def _allowed(
        self, task: Task, executor: str, tools: list[ToolInfo], opt_in: frozenset[str]
    ) -> list[ToolInfo]:
        wanted = task.spec.tools
        if wanted is None:
            return [t for t in tools if t.name not in opt_in]
        have = {t.name for t in tools}
        if missing := [name for name in wanted if name not in have]:
            raise AgentError(
                f"tools: {', '.join(map(repr, missing))} not offered by executor {executor!r} "
                f"(it has: {', '.join(sorted(have)) or 'none'})"
            )
        return [t for t in tools if t.name in wanted]

    async def _tool_call(
        self,
        call: _Call,
        request: ToolRequest,
        turn: int,
        functions: Mapping[str, str],
        every: set[str],
        transcript: Transcript,
    ) -> str:
        """Make one requested call; returns what the model is told (a result or why not),
        redacted."""
        task, executor = call.task, call.executor
        real = functions.get(request.name)
        record = ToolCallRecord(turn, real or request.name, None, 0.0)
        transcript.tool_calls.append(record)
        args, problem = self._check(request, record, functions, every, call.opt_in)
        if problem is not None:
            return self._refuse(record, problem)
        started = time.perf_counter()
        try:
            outcome = await call.pool.call_tool(
                executor, record.name, args, timeout=task.spec.timeout, meta=call.meta
            )
        except (ToolError, ExecutorTimeoutError) as exc:
            return self._refuse(record, str(exc))
        except ExecutorUnavailableError as exc:
            record.error = self._redactor.text(str(exc))
            raise
        finally:
            record.duration_s = round(time.perf_counter() - started, 4)
        limit = self._config.dispatch.output_limit_bytes
        if outcome.is_error:
            return self._refuse(
                record, f"the tool reported an error: {truncate(outcome.text, limit)}"
            )
        return self._redactor.text(_as_text(outcome, limit))

    def _check(
        self,
        request: ToolRequest,
        record: ToolCallRecord,
        functions: Mapping[str, str],
        every: set[str],
        opt_in: frozenset[str],
    ) -> tuple[dict[str, Any], str | None]:
        """The parsed arguments, and why the call may not be made (``None``: it may)."""
        try:
            args = json.loads(request.arguments or "{}")
        except json.JSONDecodeError as exc:
            record.arguments = self._redactor.text(request.arguments[:2000])
            return {}, f"the arguments are not valid JSON ({exc.msg}); send a JSON object"
        record.arguments = self._redactor.arguments(args)
        if request.name not in functions:
            allowed = ", ".join(functions) or "none"
            why = "is not allowed for this task" if request.name in every else "does not exist"
            if request.name in opt_in:
                why += " (it is offered only when the task lists it in `tools:`)"
            return {}, f"tool {request.name!r} {why}; allowed tools: {allowed}"
        if not isinstance(args, dict):
            return {}, "the arguments must be a JSON object"
        return args, None

    def _refuse(self, record: ToolCallRecord, message: str) -> str:
        record.error = self._redactor.text(message)
        return f"error: {record.error}"

    async def _agent_tool(
        self, call: _Call, tool: str, tools: list[ToolInfo], transcript: Transcript
    ) -> str:
        """Hand the whole prompt to the executor's agent tool (no model loop here)."""
        task, executor = call.task, call.executor
        info = next((t for t in tools if t.name == tool), None)
        if info is None:
            raise AgentError(
                f"executor {executor!r} names agent_tool {tool!r}, which it does not offer "
                f"(it has: {', '.join(sorted(t.name for t in tools)) or 'none'})"
            )
        key = _prompt_argument(info)
        args = {**task.spec.args, key: task.spec.prompt or ""}
        transcript.agent_tool = tool
        record = ToolCallRecord(0, tool, self._redactor.arguments(args), 0.0)
        transcript.tool_calls.append(record)
        started = time.perf_counter()
        try:
            outcome = await call.pool.call_tool(
                executor, tool, args, timeout=task.spec.timeout, meta=call.meta
            )
        except ToolError as exc:
            record.error = self._redactor.text(str(exc))
            raise
        finally:
            record.duration_s = round(time.perf_counter() - started, 4)
        limit = self._config.dispatch.output_limit_bytes
        if outcome.is_error:
            record.error = self._redactor.text(truncate(outcome.text, limit))
            raise ToolError(executor, f"the agent tool reported an error: {record.error}", tool)
        return _as_text(outcome, limit)


def _prompt_argument(info: ToolInfo) -> str:
    """The argument an agent tool takes the prompt in: ``prompt``, else its only required
    string argument."""
    properties = info.input_schema.get("properties") or {}
    if "prompt" in properties or not properties:
        return "prompt"
    required = [k for k in info.input_schema.get("required") or () if k in properties]
    strings = [k for k in required if (properties[k] or {}).get("type") == "string"]
    if len(strings) == 1:
        return strings[0]
    raise AgentError(
        f"agent_tool {info.name!r}: cannot tell which argument takes the prompt (no "
        f"`prompt`, and not exactly one required string among {sorted(properties)})"
    )


def _as_text(outcome: ToolOutcome, limit: int) -> str:
    """What the model is shown of a tool's answer: its text, or its structured content
    as JSON when it sent no text; cut to ``limit`` bytes."""
    if outcome.structured is not None and not outcome.text:
        return truncate(json.dumps(outcome.structured, ensure_ascii=False), limit)
    return truncate(outcome.text, limit)
