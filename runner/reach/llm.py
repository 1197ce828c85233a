"""LiteLLM, and only where its translation is needed: the in-process router.

The only module that imports ``litellm`` (seconds and ~200 MB), and lazily: on the first
call that needs it, in a worker thread, and warmed (the router built, a mocked first call
made, the parts a first real call would import loaded) before any call's or probe's
clock starts (:meth:`LiteLLM.ready`). It serves the in-process ``litellm.Router`` over
``model_list`` (no ``lite_llm_url``) and a ``direct_api`` provider that is not
OpenAI-compatible; the LiteLLM proxy and GitHub Models get plain HTTP
(``runner.reach.openai_http``). The model client (``runner.reach.modelclient``) drives
both. Every LiteLLM error becomes a :class:`~runner.reach.calls.StepFailed` here, where
it enters.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import logging
import math
import os
from typing import TYPE_CHECKING, Any, TypeGuard

from runner.reach.calls import GatewayOutcome, StepFailed, short
from runner.reach.openai_http import completion_from, retry_after

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from runner.defs.config import Config
    from runner.defs.routing import Tier
    from runner.reach.calls import Completion

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
#: The warm-up's (mocked, offline) first call.
_WARM_UP = ({"role": "user", "content": "Reply with OK."},)


#: The loggers litellm writes to, each with its own handler (INFO to stdout, coloured).
_LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


def _load_litellm() -> Any:
    """Import litellm without letting it fetch its price list from the network, and the
    parts its first call would import lazily (so they are not timed with that call)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    level = _litellm_level()
    for name in _LITELLM_LOGGERS:  # before the import: it logs while it loads
        logging.getLogger(name).setLevel(level)
    # pylint: disable-next=import-outside-toplevel
    import litellm  # noqa: PLC0415 - deliberate: see the module docstring

    # Its "Give Feedback / Get Help" banner would land on our stdout with every error.
    litellm.suppress_debug_info = True
    _route_logging(level)
    importlib.import_module("openai.resources.chat")  # the OpenAI client's lazy `chat`
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


class LiteLLM:
    """The in-process router over ``model_list``, and LiteLLM's own ``acompletion`` for a
    direct provider that needs its translation; nothing is imported before :meth:`ready`."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime],
        loader: Callable[[], Any] = _load_litellm,
    ) -> None:
        self._config = config
        self._clock = clock
        self._loader = loader
        self._litellm: Any = None
        self._router: Any = None
        self._loading = asyncio.Lock()

    async def ready(self, *, router: bool) -> None:
        """Import LiteLLM (in a worker thread) and, with ``router``, build and warm the
        in-process router: never timed with a call."""
        if self._litellm is not None and (self._router is not None or not router):
            return
        async with self._loading:
            if self._litellm is None:
                self._litellm = await asyncio.to_thread(self._loader)
            if router and self._router is None:
                self._router = await self._warm_router(self._litellm)

    def close(self) -> None:
        """Drop the router (LiteLLM's own client cache closes with the process)."""
        self._router = None

    async def _warm_router(self, litellm: Any) -> Any:
        """The in-process router over ``model_list``, its first (mocked, offline) call
        made, so the lazy work of a first call is not timed with a real one."""
        settings = self._config.litellm_settings
        kwargs = {k: settings[k] for k in ROUTER_SETTINGS if k in settings}
        # A one-deployment group is never cooled down unless allowed_fails is set, and
        # LiteLLM's own retries would only repeat a dead call: the tiers fall back.
        kwargs.setdefault("allowed_fails", 1)
        kwargs.setdefault("num_retries", 0)
        router = litellm.Router(
            model_list=copy.deepcopy(self._config.model_list),
            timeout=self._config.request_timeout,
            **kwargs,
        )
        if self._config.model_list:
            name = self._config.model_list[0]["model_name"]
            with contextlib.suppress(Exception):  # only a warm-up
                await router.acompletion(model=name, messages=list(_WARM_UP), mock_response="OK")
        return router

    async def call(
        self,
        model: str,
        tier: Tier,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        *,
        direct: bool,
        extra: Mapping[str, Any],
    ) -> Completion:
        """One completion: through the router, or (``direct``) to ``direct_api`` with
        ``github_key``. Raises :class:`StepFailed` however it fails."""
        request: dict[str, Any] = {"messages": list(messages), **extra}
        if tools:
            request["tools"] = list(tools)
        try:
            if not direct:
                response = await self._router.acompletion(model=model, **request)
            else:
                key = self._config.github_key
                response = await self._litellm.acompletion(
                    model=model,
                    api_base=self._config.direct_api.api_base,
                    api_key=key.get_secret_value() if key else None,
                    timeout=self._config.request_timeout,
                    num_retries=0,
                    **request,
                )
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # LiteLLM raises many types (openai's, its own, ValueError from the router);
            # every one of them ends this step, and the next model is tried.
            raise _classify(exc, self._clock()) from exc
        hidden = getattr(response, "_hidden_params", None) or {}
        cost = hidden.get("response_cost")
        return completion_from(model, tier, response.model_dump(), cost if _is_cost(cost) else None)


def _is_cost(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def _classify(exc: BaseException, now: datetime) -> StepFailed:
    """The outcome a failed LiteLLM call counts as, and why."""
    name = type(exc).__name__
    detail = short(str(exc), name)
    status = getattr(exc, "status_code", None)
    if status == 429 or name == "RateLimitError":
        headers = getattr(exc, "litellm_response_headers", None) or getattr(
            getattr(exc, "response", None), "headers", None
        )
        wait = retry_after(headers, now) if headers is not None else None
        return StepFailed(GatewayOutcome.RATE_LIMITED, f"HTTP 429: {detail}", retry_after=wait)
    outcome = _outcome(name, str(exc), detail, status)
    if outcome in {GatewayOutcome.SERVER_ERROR, GatewayOutcome.REJECTED}:
        detail = f"HTTP {status}: {detail}" if isinstance(status, int) else f"{name}: {detail}"
    return StepFailed(outcome, detail)


def _outcome(name: str, text: str, detail: str, status: object) -> GatewayOutcome:
    if "Timeout" in name or status == 408:
        return GatewayOutcome.TIMEOUT
    if name == "RouterRateLimitError" or "No deployments available" in text:
        return GatewayOutcome.COOLDOWN
    if "APIConnectionError" in name or "connection error" in detail.lower():
        return GatewayOutcome.REFUSED
    if isinstance(status, int) and status >= 500:
        return GatewayOutcome.SERVER_ERROR
    return GatewayOutcome.REJECTED
