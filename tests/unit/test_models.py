"""Model choice (tiers), the no-model wait, spend caps and LiteLLM error classes: the
pure parts of prompt tasks, without litellm (which these tests never import)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from runner.core.errors import AgentError, BudgetExceededError, ModelUnavailableError
from runner.core.ids import new_run_id
from runner.core.redaction import Redactor
from runner.core.states import RunState
from runner.defs.config import Budget, Config, Router
from runner.defs.routing import ModelChoice, Tier, choose_model, waits_for_model
from runner.defs.tasks import TaskSpec
from runner.dispatch.agent import Transcript, _function_names
from runner.dispatch.budget import SpendGuard
from runner.reach.calls import Completion, GatewayOutcome
from runner.reach.llm import _classify
from runner.reach.modelclient import LlmClient
from runner.reach.tools import ToolInfo
from runner.state.resultcheck import ResultCheck
from runner.state.results import RunResult, write_result
from runner.state.spend import spend_in_results

if TYPE_CHECKING:
    from pathlib import Path

TIERS = Router.model_validate({"model_tiers": {"free": ["f1", "f2"], "paid": ["p1"]}})


def spec(**fields: object) -> TaskSpec:
    return TaskSpec.model_validate({"prompt": "do it", **fields})


def steps(choice: ModelChoice) -> list[tuple[str, str]]:
    return [(s.model, str(s.tier)) for s in choice.steps]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("free", [("f1", "free"), ("f2", "free")]),
        ("paid", [("p1", "paid")]),
        ("free_then_paid", [("f1", "free"), ("f2", "free"), ("p1", "paid")]),
        ("f2", [("f2", "free")]),
        ("p1", [("p1", "paid")]),
        ("elsewhere", [("elsewhere", "unlisted")]),
    ],
)
def test_model_choice_follows_the_tiers(model: str, expected: list[tuple[str, str]]) -> None:
    assert steps(choose_model(spec(model=model), TIERS)) == expected


def test_no_model_key_uses_router_default_model() -> None:
    router = TIERS.model_copy(update={"default_model": "paid"})
    choice = choose_model(spec(), router)
    assert steps(choice) == [("p1", "paid")]
    assert "router.default_model" in choice.reason


def test_empty_tiers_fall_back_to_model_list_order_only_for_free_then_paid() -> None:
    assert steps(choose_model(spec(), Router(), ["a", "b", "a"])) == [
        ("a", "unlisted"),
        ("b", "unlisted"),
    ]
    free = choose_model(spec(model="free"), Router(), ["a"])
    assert free.steps == ()
    assert "model_tiers.free is empty" in free.reason
    assert choose_model(spec(), Router()).steps == ()


def test_prompt_tasks_wait_only_when_no_model_and_no_agent_tool() -> None:
    bare = Config()
    assert "until a model is configured" in (waits_for_model(spec(), bare, {"builtin"}) or "")
    assert waits_for_model(TaskSpec(tool="echo"), bare, {"builtin"}) is None
    proxied = Config(lite_llm_url="http://127.0.0.1:4000")
    assert waits_for_model(spec(), proxied, {"builtin"}) is None
    agent = Config.model_validate({"mcp_servers": {"cc": {"command": "x", "agent_tool": "Agent"}}})
    assert waits_for_model(spec(executor="cc"), agent, {"builtin", "cc"}) is None
    assert waits_for_model(spec(), agent, {"builtin", "cc"}) is not None


def completion(cost: float | None) -> Completion:
    return Completion("m", Tier.FREE, "hi", (), 10, 5, cost)


def test_spend_guard_per_run_and_per_day() -> None:
    transcript = Transcript()
    guard = SpendGuard(Budget(per_run_usd=0.01, per_day_usd=1.0), today_usd=0.5)
    guard.before_call(transcript)
    transcript.add(completion(0.006))
    guard.after_call(transcript)
    guard.before_call(transcript)
    transcript.add(completion(0.006))
    with pytest.raises(BudgetExceededError, match="run budget passed"):
        guard.after_call(transcript)
    with pytest.raises(BudgetExceededError, match="daily budget reached"):
        SpendGuard(Budget(per_day_usd=0.5), today_usd=0.5).before_call(Transcript())
    # Unknown prices cannot be capped: they count as 0, and usage says "unknown".
    unknown = Transcript()
    unknown.add(completion(None))
    SpendGuard(Budget(per_run_usd=0.0), today_usd=0.0).after_call(unknown)
    assert unknown.usage().cost_usd is None
    assert (unknown.usage().input_tokens, unknown.usage().output_tokens) == (10, 5)


def test_function_names_are_openai_safe() -> None:
    tools = [ToolInfo(n, "", {}) for n in ("git.log", "read file", "x" * 80)]
    names = _function_names("git", tools)
    assert list(names.values()) == ["git.log", "read file", "x" * 80]
    assert all(len(n) <= 64 and n.replace("_", "").replace("-", "").isalnum() for n in names)


@pytest.mark.parametrize("pair", [("a.b", "a_b"), ("x" * 70, "x" * 64 + "y")])
def test_tools_that_collide_after_renaming_are_refused_by_name(pair: tuple[str, str]) -> None:
    tools = [ToolInfo(pair[0], "", {}), ToolInfo("echo", "", {}), ToolInfo(pair[1], "", {})]
    with pytest.raises(AgentError) as info:
        _function_names("hostile", tools)
    message = str(info.value)
    assert f"executor 'hostile' offers tools {pair[0]!r} and {pair[1]!r}" in message
    assert "list only one of them in the task's `tools:`" in message


class StatusError(Exception):
    """Shaped like LiteLLM's HTTP errors: a message and a ``status_code``."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status_code = status


class Timeout(StatusError):
    """Named like ``litellm.Timeout``."""


class RouterRateLimitError(ValueError):
    """Named like LiteLLM's router cooldown error."""


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (Timeout("litellm.Timeout: APITimeoutError - Request timed out", 408), "timeout"),
        (StatusError("InternalServerError: OpenAIException - Connection error.", 500), "refused"),
        (
            StatusError("litellm.InternalServerError: scripted 500\n\nLiteLLM: advice", 500),
            "server_error",
        ),
        (StatusError("litellm.NotFoundError: no such model", 404), "rejected"),
        (RouterRateLimitError("No deployments available for selected model"), "cooldown"),
        (RuntimeError("something else"), "rejected"),
    ],
)
def test_litellm_errors_are_classified_for_the_fault_monitor(exc: Exception, outcome: str) -> None:
    found = _classify(exc, datetime(2026, 11, 21, tzinfo=UTC))
    assert found.outcome == outcome
    assert "\n" not in found.detail
    assert "LiteLLM: advice" not in found.detail
    unreachable = {"timeout", "refused", "server_error", "cooldown"}
    assert found.outcome.unreachable is (outcome in unreachable)


def test_a_choice_without_steps_fails_before_litellm_loads() -> None:
    loads: list[int] = []

    def loader() -> object:
        loads.append(1)
        return object()

    client = LlmClient(Config(), loader=loader)
    choice = ModelChoice("free", (), "router.model_tiers.free is empty")
    with pytest.raises(ModelUnavailableError, match=r"model_tiers\.free is empty"):
        asyncio.run(client.complete([], [], choice))
    assert loads == []
    assert client.backend == "router"
    assert GatewayOutcome.REJECTED.unreachable is False


def test_spend_from_result_files_counts_only_today(tmp_path: Path) -> None:
    now = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    midnight = now.replace(hour=0)

    def result(at: datetime, cost: float | None) -> None:
        stamp = at.isoformat().replace("+00:00", "Z")
        write_result(
            tmp_path,
            RunResult(
                task_id="t",
                run_id=new_run_id(at),
                task_hash="h",
                state=RunState.COMPLETED,
                attempt=1,
                started_at=stamp,
                finished_at=stamp,
                duration_s=0.1,
                usage={"cost_usd": cost},
            ),
            Redactor([]),
        )

    result(now - timedelta(days=1), 5.0)
    result(now - timedelta(hours=1), 0.25)
    result(now, 0.5)
    result(now, None)
    assert spend_in_results(tmp_path, midnight, ResultCheck(now)) == pytest.approx(0.75)
    assert spend_in_results(tmp_path / "missing", midnight, ResultCheck(now)) == 0.0
