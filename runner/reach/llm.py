"""Model calls through LiteLLM. The only module that imports ``litellm``, and lazily.

``import litellm`` costs seconds and ~200 MB, so it happens on the first model call
(in a worker thread, so the event loop keeps serving tool tasks meanwhile), never at
import time: ``omni status``, ``omni validate`` and tool-only runs never load it.

Two backends serve the normal mode (DESIGN §3):

- a LiteLLM proxy at ``lite_llm_url``: each model name goes out as
  ``litellm_proxy/<name>`` with ``lite_llm_key``; the proxy does its own routing and
  reports each call's cost in a header LiteLLM reads back;
- with no proxy, an in-process ``litellm.Router`` over ``model_list``, with
  ``allowed_fails`` (default 1) so a dead deployment is cooled down and skipped,
  ``num_retries`` (default 0: the tiers are the fallback) and ``request_timeout``.

The tier fallback (free, then paid) is ours, not LiteLLM's: :meth:`LlmClient.complete`
walks the task's :class:`~runner.defs.routing.ModelChoice` step by step, so both backends
record the same steps. Every gateway call's outcome goes to an ``on_call`` hook: the
fault monitor (``runner.dispatch.faults``) counts refused / 5xx / timeout there.

A proxy call counts as timed out when no response headers arrived within
``fault_handler.lite_llm_timeout`` and the proxy's ``/health/liveliness`` did not answer
either (``runner.reach.gateway``); otherwise it may take up to ``request_timeout``. In degraded
mode :meth:`LlmClient.complete_direct` calls the direct provider (``direct_api``, GitHub
Models by default) with ``github_key``; :meth:`LlmClient.probe_gateway` and
:meth:`LlmClient.probe_direct` are the fault monitor's probes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from runner.core.errors import ModelUnavailableError
from runner.defs.routing import ModelChoice, Tier
from runner.reach.gateway import HeadersTimeoutError, Liveliness, watched_client, within_headers

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from runner.defs.config import Config

#: ``litellm_settings`` keys handed to the in-process ``litellm.Router``; the rest of
#: that mapping is LiteLLM-proxy configuration and is not used in-process.
ROUTER_SETTINGS = (
    "allowed_fails",
    "num_retries",
    "cooldown_time",
    "retry_after",
    "routing_strategy",
    "disable_cooldowns",
)
_DETAIL_CHARS = 300
#: What a probe asks for: one token, so it costs (almost) nothing.
_PROBE_MESSAGES = ({"role": "user", "content": "Reply with OK."},)


class Via(StrEnum):
    """Which way a model call went."""

    GATEWAY = "gateway"
    """The LiteLLM proxy, or the in-process router over ``model_list`` (normal mode)."""
    DIRECT = "direct"
    """The direct provider API with the backup key (degraded mode)."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe: did the endpoint answer, and what was seen."""

    ok: bool
    detail: str


class GatewayOutcome(StrEnum):
    """How one model call ended. ``refused``, ``server_error`` and ``timeout`` are
    gateway failures (the fault monitor counts them, and ``cooldown``); the rest mean the
    gateway answered."""

    OK = "ok"
    REFUSED = "refused"
    """Nothing answered: connection refused or unreachable."""
    SERVER_ERROR = "server_error"
    """An HTTP 5xx."""
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    """The gateway answered with a 4xx (auth, unknown model, bad request, rate limit)."""
    COOLDOWN = "cooldown"
    """The in-process router skipped the model: its deployments are cooling down."""
    BAD_REPLY = "bad_reply"
    """An answer that cannot be used: no choices, or neither text nor tool calls."""

    @property
    def gateway_failure(self) -> bool:
        """True for what counts towards degraded mode (DESIGN §3)."""
        return self in {GatewayOutcome.REFUSED, GatewayOutcome.SERVER_ERROR, GatewayOutcome.TIMEOUT}


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
    """What LiteLLM says the call cost; ``None`` when it does not know."""

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


class ModelClient(Protocol):
    """What the agent loop needs of a model client (:class:`LlmClient` is one)."""

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        choice: ModelChoice,
        *,
        on_step: Callable[[GatewayCall], None] | None = None,
    ) -> Completion:
        """The first usable answer along ``choice``'s steps."""


class _StepFailed(Exception):
    def __init__(self, outcome: GatewayOutcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


#: The loggers litellm writes to, each with its own handler (INFO to stdout, coloured).
_LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


def _load_litellm() -> Any:
    """Import litellm without letting it fetch its price list from the network."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    level = _litellm_level()
    for name in _LITELLM_LOGGERS:  # before the import: it logs while it loads
        logging.getLogger(name).setLevel(level)
    # pylint: disable-next=import-outside-toplevel
    import litellm  # noqa: PLC0415 - deliberate: see the module docstring

    # Its "Give Feedback / Get Help" banner would land on our stdout with every error.
    litellm.suppress_debug_info = True
    _route_logging(level)
    return litellm


def _litellm_level() -> int:
    """WARNING, or INFO when omni logs at DEBUG (``--verbose``)."""
    return (
        logging.INFO if logging.getLogger("runner").isEnabledFor(logging.DEBUG) else logging.WARNING
    )


def _route_logging(level: int) -> None:
    """litellm's log lines go through omni's logging (stderr, secrets masked, one copy
    each): its own handlers (INFO to stdout, coloured) go, its loggers propagate."""
    for name in _LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level)


class LlmClient:
    """Model calls for prompt tasks: the proxy or an in-process router, chosen by config.

    Use as an async context manager (or call :meth:`aclose`). Nothing is imported or
    opened before the first :meth:`complete`.
    """

    def __init__(
        self,
        config: Config,
        *,
        on_call: Callable[[GatewayCall], None] | None = None,
        loader: Callable[[], Any] = _load_litellm,
    ) -> None:
        self._config = config
        self._on_call = on_call
        self._loader = loader
        self._litellm: Any = None
        self._router: Any = None
        self._loading = asyncio.Lock()
        self._clients: dict[Via, Any] = {}  # AsyncOpenAI clients on watched httpx clients
        self._liveliness = (
            Liveliness(config.lite_llm_url, config.fault_handler.lite_llm_timeout)
            if config.lite_llm_url
            else None
        )

    @property
    def backend(self) -> str:
        """``proxy`` (``lite_llm_url`` is set) or ``router`` (in-process over model_list)."""
        return "proxy" if self._config.lite_llm_url else "router"

    async def __aenter__(self) -> LlmClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Drop the router, close our HTTP clients (LiteLLM's own cache closes with the
        process)."""
        self._router = None
        if self._liveliness is not None:
            await self._liveliness.aclose()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        choice: ModelChoice,
        *,
        on_step: Callable[[GatewayCall], None] | None = None,
    ) -> Completion:
        """The first usable answer along ``choice``'s steps (free before paid).

        Each step that fails (refused, 5xx, timeout, 4xx, cooling down, an empty reply)
        is reported to ``on_step`` and the client's ``on_call`` hook, and the next step
        is tried. Raises :class:`ModelUnavailableError` listing every step's reason when
        none answered usably.
        """
        if not choice.steps:
            raise ModelUnavailableError(
                None, f"no model to try for {choice.requested!r}: {choice.reason}"
            )
        await self._ensure_loaded()
        failures: list[str] = []
        for step in choice.steps:
            try:
                return await self._step(
                    step.model, step.tier, messages, tools, Via.GATEWAY, on_step
                )
            except _StepFailed as failed:
                failures.append(f"{step.model} ({step.tier}): {failed.outcome}: {failed.detail}")
        last = choice.steps[-1]
        raise ModelUnavailableError(
            last.model if len(choice.steps) == 1 else None,
            "no model answered usably: " + "; ".join(failures),
            str(last.tier) if len(choice.steps) == 1 else None,
        )

    async def complete_direct(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        *,
        on_step: Callable[[GatewayCall], None] | None = None,
    ) -> Completion:
        """One call to the direct provider (``direct_api``) with ``github_key``, reported
        like a gateway step but ``via`` direct. A call whose response headers do not start
        within ``fault_handler.cloud_check_timeout`` fails (``timeout``). Raises
        :class:`ModelUnavailableError` when it fails."""
        model, tier = self.direct_model, Tier.UNLISTED
        await self._ensure_loaded()
        try:
            return await self._step(model, tier, messages, tools, Via.DIRECT, on_step)
        except _StepFailed as failed:
            raise ModelUnavailableError(
                model, f"direct API: {failed.outcome}: {failed.detail}", str(tier)
            ) from None

    @property
    def direct_model(self) -> str:
        """The direct provider's LiteLLM model string (``github/<model>`` when
        ``direct_api.model`` names no provider)."""
        model = self._config.direct_api.model
        return model if "/" in model else f"github/{model}"

    async def probe_gateway(self, model: str | None) -> ProbeResult:
        """The gateway's probe: the proxy's ``/health/liveliness``, then a one-token
        completion from ``model`` (``lite_llm_timeout`` each); in-process, the completion
        alone."""
        detail = ""
        if self._liveliness is not None:
            ok, seen = await self._liveliness.check()
            if not ok:
                return ProbeResult(False, f"GET {self._liveliness.url}: {seen}")
            detail = f"liveliness {seen}"
            if not model:
                return ProbeResult(True, f"{detail}; no model named in config to ask")
        elif not model:
            return ProbeResult(False, "no proxy and no model in model_list to ask")
        asked = await self._ping(model, Via.GATEWAY, self._config.fault_handler.lite_llm_timeout)
        return ProbeResult(asked.ok, "; ".join(filter(None, (detail, asked.detail))))

    async def probe_direct(self) -> ProbeResult:
        """The direct API's probe: a one-token completion within ``cloud_check_timeout``."""
        if self._config.github_key is None:
            return ProbeResult(False, "github_key is not set (env GITHUB_LITELLM_KEY)")
        timeout = self._config.fault_handler.cloud_check_timeout
        return await self._ping(self.direct_model, Via.DIRECT, timeout)

    async def _ping(self, model: str, via: Via, limit: float) -> ProbeResult:
        await self._ensure_loaded()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                await self._request(model, list(_PROBE_MESSAGES), (), via, max_tokens=1)
        except Exception as exc:  # pylint: disable=broad-exception-caught  # any failure: down
            outcome, detail = (
                (GatewayOutcome.TIMEOUT, f"no answer within {limit:g} s")
                if isinstance(exc, TimeoutError)
                else _classify(exc)
            )
            return ProbeResult(False, f"{model}: {outcome}: {detail}")
        took = (time.perf_counter() - started) * 1000
        return ProbeResult(True, f"{model} answered in {took:.0f} ms")

    async def _step(
        self,
        model: str,
        tier: Tier,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        via: Via,
        on_step: Callable[[GatewayCall], None] | None,
    ) -> Completion:
        """One model call, reported (``on_step``, ``on_call``) however it ends; a failure
        raises :class:`_StepFailed`."""
        started = time.perf_counter()
        try:
            completion = await self._call_model(model, tier, messages, tools, via)
        except _StepFailed as failed:
            took = round(time.perf_counter() - started, 4)
            self._report(
                GatewayCall(model, tier, failed.outcome, took, failed.detail, via), on_step
            )
            raise
        took = round(time.perf_counter() - started, 4)
        self._report(GatewayCall(model, tier, GatewayOutcome.OK, took, via=via), on_step)
        return completion

    def _report(self, call: GatewayCall, on_step: Callable[[GatewayCall], None] | None) -> None:
        if on_step is not None:
            on_step(call)
        if self._on_call is not None:
            self._on_call(call)

    async def _ensure_loaded(self) -> None:
        if self._litellm is not None:
            return
        async with self._loading:
            if self._litellm is None:
                self._litellm = await asyncio.to_thread(self._loader)

    def _router_for(self, litellm: Any) -> Any:
        if self._router is None:
            settings = self._config.litellm_settings
            kwargs = {k: settings[k] for k in ROUTER_SETTINGS if k in settings}
            # A one-deployment group is never cooled down unless allowed_fails is set, and
            # LiteLLM's own retries would only repeat a dead call: the tiers fall back.
            kwargs.setdefault("allowed_fails", 1)
            kwargs.setdefault("num_retries", 0)
            self._router = litellm.Router(
                model_list=copy.deepcopy(self._config.model_list),
                timeout=self._config.request_timeout,
                **kwargs,
            )
        return self._router

    async def _call_model(
        self,
        model: str,
        tier: Tier,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        via: Via,
    ) -> Completion:
        handler, limit = self._config.fault_handler, self._config.request_timeout
        try:
            async with asyncio.timeout(limit):
                if via is Via.GATEWAY and self._liveliness is None:  # the in-process router
                    response = await self._request(model, messages, tools, via)
                else:
                    direct = via is Via.DIRECT
                    response = await within_headers(
                        lambda: self._request(model, messages, tools, via),
                        within=handler.cloud_check_timeout if direct else handler.lite_llm_timeout,
                        live=None if direct else self._liveliness,
                        what="the direct API" if direct else "the LiteLLM proxy",
                    )
        except HeadersTimeoutError as exc:
            raise _StepFailed(GatewayOutcome.TIMEOUT, str(exc)) from None
        except TimeoutError:
            raise _StepFailed(
                GatewayOutcome.TIMEOUT, f"no complete answer within request_timeout={limit:g} s"
            ) from None
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # LiteLLM raises many types (openai's, its own, ValueError from the router);
            # every one of them ends this step, and the next model is tried.
            raise _StepFailed(*_classify(exc)) from exc
        return _completion(model, tier, response)

    async def _request(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        via: Via,
        **extra: Any,
    ) -> Any:
        """The LiteLLM call itself: the direct provider, the proxy, or the router."""
        litellm, config = self._litellm, self._config
        request: dict[str, Any] = {"messages": list(messages), **extra}
        if tools:
            request["tools"] = list(tools)
        if via is Via.GATEWAY and not config.lite_llm_url:
            return await self._router_for(litellm).acompletion(model=model, **request)
        base: str | None
        if via is Via.DIRECT:
            base, secret, name = config.direct_api.api_base, config.github_key, model
        else:
            base, secret, name = config.lite_llm_url, config.lite_llm_key, f"litellm_proxy/{model}"
        key = secret.get_secret_value() if secret else None
        return await litellm.acompletion(
            model=name,
            api_base=base,
            api_key=key,
            timeout=config.request_timeout,
            num_retries=0,
            client=self._client(via, base, key),
            **request,
        )

    def _client(self, via: Via, base: str | None, key: str | None) -> Any:
        """The ``AsyncOpenAI`` client LiteLLM is handed for ``via``: our watched httpx
        client underneath (the response-headers hook), no retries of its own."""
        if via not in self._clients:
            from openai import AsyncOpenAI  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

            handler = self._config.fault_handler
            connect = handler.cloud_check_timeout if via is Via.DIRECT else handler.lite_llm_timeout
            self._clients[via] = AsyncOpenAI(
                base_url=base,
                api_key=key or "none",
                max_retries=0,
                http_client=watched_client(self._config.request_timeout, connect),
            )
        return self._clients[via]


def _completion(model: str, tier: Tier, response: Any) -> Completion:
    """Our record of a LiteLLM ``ModelResponse``; an unusable one is a failed step."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise _StepFailed(GatewayOutcome.BAD_REPLY, "the reply has no choices")
    message = choices[0].message
    text = message.content if isinstance(message.content, str) else ""
    calls = tuple(
        ToolRequest(
            id=str(call.id or f"call_{i}"),
            name=str(call.function.name or ""),
            arguments=str(call.function.arguments or ""),
        )
        for i, call in enumerate(message.tool_calls or ())
    )
    if not text.strip() and not calls:
        raise _StepFailed(GatewayOutcome.BAD_REPLY, "empty reply: no text and no tool calls")
    usage = getattr(response, "usage", None)
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    return Completion(
        model=model,
        tier=tier,
        text=text,
        tool_calls=calls,
        input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
    )


_PREFIX = re.compile(r"^(litellm\.)?\w+(Error|Exception|Timeout)?: ")


def _short(exc: BaseException) -> str:
    """LiteLLM's message without its class-name prefixes and advice, on one line."""
    text = str(exc).split("\n\nLiteLLM:", maxsplit=1)[0].strip()
    while (stripped := _PREFIX.sub("", text, count=1)) != text:
        text = stripped
    text = " ".join(text.split())
    return text[:_DETAIL_CHARS] or type(exc).__name__


def _classify(exc: BaseException) -> tuple[GatewayOutcome, str]:
    """The outcome a failed call counts as, and why (for the run and the fault monitor)."""
    name = type(exc).__name__
    detail = _short(exc)
    status = getattr(exc, "status_code", None)
    if "Timeout" in name or status == 408:
        return GatewayOutcome.TIMEOUT, detail
    if name == "RouterRateLimitError" or "No deployments available" in str(exc):
        return GatewayOutcome.COOLDOWN, detail
    if "APIConnectionError" in name or "connection error" in detail.lower():
        return GatewayOutcome.REFUSED, detail
    if isinstance(status, int) and status >= 500:
        return GatewayOutcome.SERVER_ERROR, f"HTTP {status}: {detail}"
    if isinstance(status, int):
        return GatewayOutcome.REJECTED, f"HTTP {status}: {detail}"
    return GatewayOutcome.REJECTED, f"{name}: {detail}"
