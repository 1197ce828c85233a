"""Pure routing decisions: which executor serves a task, which models in which order,
and why.

No I/O here: the same inputs always give the same answer, so ``omni route`` shows
exactly what a run would do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection

    from runner.defs.config import Config, Router, RuleMatch
    from runner.defs.tasks import TaskSpec

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


class Tier(StrEnum):
    """A model's price tier as recorded on a run (``tier`` in rows and result files)."""

    FREE = "free"
    PAID = "paid"
    UNLISTED = "unlisted"
    """A model in neither ``router.model_tiers`` list."""


class ModelPolicy(StrEnum):
    """The tier words a task's ``model:`` (or ``router.default_model``) may use."""

    FREE = "free"
    PAID = "paid"
    FREE_THEN_PAID = "free_then_paid"


@dataclass(frozen=True, slots=True)
class ModelStep:
    """One model to try, with the tier it counts in."""

    model: str
    tier: Tier


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The models to try for a task, in order (each next one only if the last failed)."""

    requested: str
    """What the task asked for: a policy word or a model name."""
    steps: tuple[ModelStep, ...]
    reason: str
    """Why these steps, in words for a person (also why there are none)."""


def _tier_of(model: str, router: Router) -> Tier:
    if model in router.model_tiers.free:
        return Tier.FREE
    if model in router.model_tiers.paid:
        return Tier.PAID
    return Tier.UNLISTED


def choose_model(spec: TaskSpec, router: Router, model_names: Collection[str] = ()) -> ModelChoice:
    """The task's ``model`` (else ``router.default_model``) as an ordered list of steps.

    ``free`` is the free tier in listed order, ``paid`` the paid tier, ``free_then_paid``
    both; any other word is one model name. With both tiers empty, ``free_then_paid``
    falls back to ``model_names`` (the ``model_list`` names) in order, so a config with
    only a ``model_list`` works. In degraded mode a later step (the direct API) is meant
    to be appended by the caller; this function knows only the normal mode.
    """
    requested = spec.model or router.default_model
    source = "`model:`" if spec.model else "router.default_model"
    tiers = router.model_tiers
    free = tuple(ModelStep(m, Tier.FREE) for m in tiers.free)
    paid = tuple(ModelStep(m, Tier.PAID) for m in tiers.paid)
    if requested == ModelPolicy.FREE:
        reason = f"{source} is free: the free tier in order"
        return ModelChoice(requested, free, reason if free else "router.model_tiers.free is empty")
    if requested == ModelPolicy.PAID:
        reason = f"{source} is paid: the paid tier in order"
        return ModelChoice(requested, paid, reason if paid else "router.model_tiers.paid is empty")
    if requested == ModelPolicy.FREE_THEN_PAID:
        if free or paid:
            reason = f"{source} is free_then_paid: {len(free)} free, then {len(paid)} paid"
            return ModelChoice(requested, free + paid, reason)
        names = tuple(dict.fromkeys(model_names))
        if names:
            steps = tuple(ModelStep(m, Tier.UNLISTED) for m in names)
            return ModelChoice(requested, steps, "router.model_tiers is empty: model_list order")
        return ModelChoice(
            requested, (), "no models: router.model_tiers and model_list are both empty"
        )
    step = ModelStep(requested, _tier_of(requested, router))
    return ModelChoice(requested, (step,), f"{source} names the model {requested!r}")


def model_list_names(config: Config) -> list[str]:
    """The ``model_name`` of every ``model_list`` entry, in order, each once."""
    return list(dict.fromkeys(str(entry["model_name"]) for entry in config.model_list))


def waits_for_model(spec: TaskSpec, config: Config, configured: Collection[str]) -> str | None:
    """Why a prompt task cannot run yet (no model is configured at all), or ``None``.

    A prompt task on an executor with an ``agent_tool`` needs no model: the prompt goes
    to that tool. Tool tasks never wait here.
    """
    if spec.prompt is None or config.lite_llm_url or config.model_list:
        return None
    executor = choose_executor(spec, config.router, configured).executor
    server = config.mcp_servers.get(executor)
    if server is not None and server.agent_tool:
        return None
    return "prompt task: waits (idle) until a model is configured (model_list or lite_llm_url)"
