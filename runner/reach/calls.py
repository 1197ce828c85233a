"""The model client's records: how one model call went, a usable answer, a probe's verdict.

Plain data shared by the model client (``runner.reach.modelclient``), its HTTP transport
(``runner.reach.openai_http``), the agent loop and the fault monitor; no I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from runner.defs.routing import ModelChoice, Tier

#: A failure's detail is cut to this many characters (it may be a hostile error body).
DETAIL_CHARS = 300


class Via(StrEnum):
    """Which way a model call went."""

    GATEWAY = "gateway"
    """The LiteLLM proxy, or the in-process router over ``model_list`` (normal mode)."""
    DIRECT = "direct"
    """The direct provider API with the backup key (degraded mode)."""


class GatewayOutcome(StrEnum):
    """How one model call (one step of a model choice) ended."""

    OK = "ok"
    REFUSED = "refused"
    """Nothing answered: connection refused, reset or unreachable."""
    SERVER_ERROR = "server_error"
    """An HTTP 5xx."""
    TIMEOUT = "timeout"
    """No answer in time: the whole call's ``request_timeout``, or, through the proxy, no
    response headers while its liveliness check went unanswered too (a hung gateway)."""
    REJECTED = "rejected"
    """An HTTP 4xx other than 429 (auth, unknown model, bad request)."""
    RATE_LIMITED = "rate_limited"
    """An HTTP 429, or a model skipped (not asked) while an earlier 429 lasts."""
    COOLDOWN = "cooldown"
    """The in-process router skipped the model: its deployments failed lately."""
    BAD_REPLY = "bad_reply"
    """An answer that cannot be used: no choices, or neither text nor tool calls."""

    @property
    def unreachable(self) -> bool:
        """True for a failure by connection, 5xx or timeout (a cooldown is one that the
        router remembers): what makes a whole chain count as a gateway failure."""
        return self in _UNREACHABLE


_UNREACHABLE = frozenset(
    {
        GatewayOutcome.REFUSED,
        GatewayOutcome.SERVER_ERROR,
        GatewayOutcome.TIMEOUT,
        GatewayOutcome.COOLDOWN,
    }
)


@dataclass(frozen=True, slots=True)
class GatewayCall:
    """One model call (one fallback step): which model, how it ended, how long it took."""

    model: str
    tier: Tier
    outcome: GatewayOutcome
    duration_s: float
    detail: str = ""
    """Why it failed (empty when ``ok``)."""
    via: Via = Via.GATEWAY
    until: str | None = None
    """For ``rate_limited``: until when (ISO time) the model is skipped."""
    asked: bool = True
    """False for a step skipped without a call (a model still rate-limited)."""


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """A tool call the model asked for; ``arguments`` is the raw JSON text it sent."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Completion:
    """A usable model answer: final text, or tool calls to make (or both)."""

    model: str
    tier: Tier
    text: str
    tool_calls: tuple[ToolRequest, ...]
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    """What the call cost (the proxy's cost header, or LiteLLM's price list); ``None``
    when unknown."""

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return message


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe: did the endpoint answer, what was seen, and how long it took."""

    ok: bool
    """A model completed."""
    detail: str
    took_s: float = 0.0
    """The probe's own time (never an import or start-up)."""
    reachable: bool = False
    """Something answered that was not a completion (a 4xx, a 429): the far end is
    there, though that model is not usable."""

    @property
    def up(self) -> bool:
        """The far end answered at all: what the fault monitor's modes follow."""
        return self.ok or self.reachable


class ModelClient(Protocol):
    """What the agent loop needs of a model client (:class:`~runner.reach.modelclient.LlmClient`
    is one, ``runner.dispatch.faults.ResilientModels`` another)."""

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        choice: ModelChoice,
        *,
        on_step: Callable[[GatewayCall], None] | None = None,
    ) -> Completion:
        """The first usable answer along ``choice``'s steps."""


class StepFailed(Exception):
    """One model call failed (internal to the model client: it becomes a
    :class:`GatewayCall` and, when no step answers, a ``ModelUnavailableError``)."""

    def __init__(
        self,
        outcome: GatewayOutcome,
        detail: str,
        *,
        retry_after: float | None = None,
        down: bool = False,
    ) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.retry_after = retry_after
        """Seconds the far end asked to wait (``Retry-After``), when it said."""
        self.down = down
        """The gateway itself failed (the proxy refused or hung), not just this model."""


_PREFIX = re.compile(r"^(litellm\.)?\w*(Error|Exception|Timeout)( -|:) ")


def short(text: str, fallback: str = "") -> str:
    """An error message on one line, without LiteLLM's class-name prefixes and advice,
    cut to :data:`DETAIL_CHARS` characters."""
    text = text.split("\n\nLiteLLM:", maxsplit=1)[0].strip()
    while (stripped := _PREFIX.sub("", text, count=1)) != text:
        text = stripped
    text = " ".join(text.split())
    if len(text) > DETAIL_CHARS:
        text = text[: DETAIL_CHARS - 1] + "…"
    return text or fallback
