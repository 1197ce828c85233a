"""Executor routing: the task's choice, then rules in order, then built-in kind rules."""

from __future__ import annotations

from runner.defs.config import Router, Rule, RuleMatch
from runner.defs.routing import choose_executor
from runner.defs.tasks import TaskSpec

CONFIGURED = {"builtin", "claude_code", "openclaw"}


def spec(**fields: object) -> TaskSpec:
    return TaskSpec.model_validate({"tool": "echo", **fields})


def test_task_executor_wins_over_rules() -> None:
    router = Router(rules=[Rule(match=RuleMatch(), executor="openclaw")])
    route = choose_executor(spec(executor="claude_code"), router, CONFIGURED)
    assert (route.executor, route.configured) == ("claude_code", True)
    assert "executor:" in route.reason


def test_first_matching_rule_wins() -> None:
    router = Router(
        rules=[
            Rule(match=RuleMatch(words=["Refactor"]), executor="claude_code"),
            Rule(match=RuleMatch(words=["refactor"]), executor="openclaw"),
        ]
    )
    route = choose_executor(spec(description="please REFACTOR the parser"), router, CONFIGURED)
    assert route.executor == "claude_code"
    assert route.reason == "router.rules[0] matched"


def test_rule_needs_every_part_to_match() -> None:
    router = Router(rules=[Rule(match=RuleMatch(kind="coding", words=["x"]), executor="openclaw")])
    assert choose_executor(spec(kind="coding"), router, CONFIGURED).executor == "claude_code"


def test_words_match_the_prompt_too() -> None:
    router = Router(rules=[Rule(match=RuleMatch(words=["pytest"]), executor="openclaw")])
    task = TaskSpec.model_validate({"prompt": "run pytest and fix failures"})
    assert choose_executor(task, router, CONFIGURED).executor == "openclaw"


def test_builtin_kind_rules_apply_only_when_configured() -> None:
    router = Router()
    assert choose_executor(spec(kind="coding"), router, CONFIGURED).executor == "claude_code"
    assert choose_executor(spec(kind="general"), router, CONFIGURED).executor == "openclaw"
    # moltworker is not configured: the default executor serves.
    route = choose_executor(spec(kind="always_on"), router, CONFIGURED)
    assert (route.executor, route.configured) == ("builtin", True)


def test_unconfigured_choice_is_reported_not_hidden() -> None:
    route = choose_executor(spec(executor="nope"), Router(), CONFIGURED)
    assert (route.executor, route.configured) == ("nope", False)
