"""Pure routing decisions: which executor serves a task, and why.

No I/O here: the same inputs always give the same answer, so ``omni route`` shows
exactly what a run would do.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from runner.config import Router, RuleMatch
from runner.tasks import TaskSpec

#: The original design's routing: each applies only when that executor is configured.
BUILTIN_RULES: tuple[tuple[str, str], ...] = (
    ("coding", "claude_code"),
    ("general", "openclaw"),
    ("always_on", "moltworker"),
)


@dataclass(frozen=True, slots=True)
class Route:
    """The executor chosen for a task and the reason, in words for a person."""

    executor: str
    reason: str
    configured: bool
    """False when the chosen executor is not in the config (the run will fail)."""


def _matches(match: RuleMatch, spec: TaskSpec) -> bool:
    if match.kind is not None and match.kind != spec.kind:
        return False
    if match.words:
        text = f"{spec.description}\n{spec.prompt or ''}".lower()
        return any(word.lower() in text for word in match.words)
    return True


def choose_executor(spec: TaskSpec, router: Router, configured: Collection[str]) -> Route:
    """The task's ``executor``, else the first matching rule, else the default."""
    if spec.executor is not None:
        return Route(spec.executor, "the task names it (`executor:`)", spec.executor in configured)
    for index, rule in enumerate(router.rules):
        if _matches(rule.match, spec):
            return Route(
                rule.executor, f"router.rules[{index}] matched", rule.executor in configured
            )
    for kind, executor in BUILTIN_RULES:
        if spec.kind == kind and executor in configured:
            return Route(executor, f"built-in rule: kind {kind} -> {executor}", True)
    return Route(
        router.default_executor,
        "no rule matched: router.default_executor",
        router.default_executor in configured,
    )
