"""The model client: the tier chain, the direct API, rate-limit memory and probes.

:meth:`LlmClient.complete` walks the task's :class:`~runner.defs.routing.ModelChoice`
(free before paid) step by step, so every backend records the same steps: the LiteLLM
proxy (``lite_llm_url``) and GitHub Models over plain OpenAI-compatible HTTP
(``runner.reach.openai_http``; a prompt task through the proxy never loads LiteLLM), the
in-process router through ``runner.reach.llm`` (the only importer of LiteLLM). A dead or
failing deployment is a model failure: the chain moves on. A model that answered HTTP
429 is marked rate-limited until its reset (``Retry-After``, else
``router.rate_limited_for``) in a :class:`RateLimitBook` that outlives the process
(``runner.state.ratelimits``), and is skipped, not asked, until then. When no step
answers, ``ModelUnavailableError`` lists every step's reason and says whether the
gateway itself looks down (every model asked failed by connection, 5xx or timeout, or
the proxy refused or hung): the fault monitor (``runner.dispatch.faults``) counts that.

No start-up time is ever timed: LiteLLM is imported, its router built and warmed
(:meth:`LlmClient.ready`) before a call's or a probe's clock starts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from runner.core.clock import iso, utc_now
from runner.core.errors import ModelUnavailableError
from runner.defs.config import MAX_RATE_LIMIT_S
from runner.defs.routing import Tier
from runner.reach.calls import (
    Completion,
    GatewayCall,
    GatewayOutcome,
    ProbeResult,
    StepFailed,
    Via,
)
from runner.reach.gateway import Liveliness
from runner.reach.llm import LiteLLM
from runner.reach.openai_http import OpenAIHttp

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from runner.defs.config import Config
    from runner.defs.routing import ModelChoice

#: What a probe asks for: one token, so it costs (almost) nothing.
_PROBE_MESSAGES = ({"role": "user", "content": "Reply with OK."},)
#: Direct providers reached over plain HTTP (their model id follows the prefix).
_OPENAI_COMPATIBLE = ("github/", "openai/")


class RateLimitBook(Protocol):
    """Which models answered 429 and until when (``runner.state.ratelimits`` keeps it
    across processes)."""

    def until(self, model: str, now: datetime) -> tuple[datetime, str] | None:
        """``(until, why)`` while ``model`` is rate-limited at ``now``, else ``None``."""

    def mark(self, model: str, until: datetime, why: str) -> None:
        """Remember that ``model`` is rate-limited until ``until``."""


class ProcessRateLimits:
    """A :class:`RateLimitBook` for this process only (``omni doctor``, tests)."""

    def __init__(self) -> None:
        self._until: dict[str, tuple[datetime, str]] = {}

    def until(self, model: str, now: datetime) -> tuple[datetime, str] | None:
        """``(until, why)`` while ``model`` is rate-limited at ``now``."""
        found = self._until.get(model)
        return found if found is not None and found[0] > now else None

    def mark(self, model: str, until: datetime, why: str) -> None:
        """Remember until when ``model`` is rate-limited."""
        self._until[model] = (until, why)


class LlmClient:  # pylint: disable=too-many-instance-attributes  # backends and their state
    """Model calls for prompt tasks: the proxy or an in-process router, chosen by config,
    and the direct API. Use as an async context manager (or call :meth:`aclose`).
    Nothing is imported or opened before the first call."""

    def __init__(
        self,
        config: Config,
        *,
        limits: RateLimitBook | None = None,
        clock: Callable[[], datetime] = utc_now,
        loader: Callable[[], Any] | None = None,
    ) -> None:
        self._config = config
        self._limits = limits if limits is not None else ProcessRateLimits()
        self._clock = clock
        self._litellm = LiteLLM(config, clock=clock, **({"loader": loader} if loader else {}))
        self._http: dict[Via, OpenAIHttp] = {}
        self._last_failure: dict[str, str] = {}
        """Each model's last failure, to say why the router now cools it down."""
        self._liveliness = (
            Liveliness(config.lite_llm_url, config.fault_handler.lite_llm_timeout)
            if config.lite_llm_url
            else None
        )

    @property
    def backend(self) -> str:
        """``proxy`` (``lite_llm_url`` is set) or ``router`` (in-process over model_list)."""
        return "proxy" if self._config.lite_llm_url else "router"

    @property
    def direct_model(self) -> str:
        """The direct provider's model string (``github/<model>`` when ``direct_api.model``
        names no provider)."""
        model = self._config.direct_api.model
        return model if "/" in model else f"github/{model}"

    async def __aenter__(self) -> LlmClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close our HTTP clients and drop the router."""
        self._litellm.close()
        if self._liveliness is not None:
            await self._liveliness.aclose()
        clients, self._http = list(self._http.values()), {}
        for client in clients:
            await client.aclose()

    async def ready(self, via: Via = Via.GATEWAY) -> None:
        """Import and warm what a call ``via`` needs (in-process: LiteLLM and its router),
        so that none of it counts toward a call's or a probe's timeout."""
        if self._needs_litellm(via):
            await self._litellm.ready(router=via is Via.GATEWAY)

    # -- the tier chain ------------------------------------------------------------------

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        choice: ModelChoice,
        *,
        on_step: Callable[[GatewayCall], None] | None = None,
    ) -> Completion:
        """The first usable answer along ``choice``'s steps (free before paid).

        A model still rate-limited is skipped (reported, not asked); each step that
        fails is reported to ``on_step`` and the next one is tried. Raises
        :class:`ModelUnavailableError` listing every step's reason when none answered.
        """
        if not choice.steps:
            raise ModelUnavailableError(
                None, f"no model to try for {choice.requested!r}: {choice.reason}"
            )
        await self.ready()
        calls: list[GatewayCall] = []
        waits: list[float] = []
        down = False
        for step in choice.steps:
            if (skipped := self._skipped(step.model, step.tier, Via.GATEWAY)) is not None:
                call, wait = skipped
                calls.append(call)
                waits.append(wait)
                _report(call, on_step)
                continue
            try:
                return await self._step(
                    step.model, step.tier, messages, tools, Via.GATEWAY, on_step
                )
            except _Failed as failed:
                calls.append(failed.call)
                if failed.retry_after is not None:
                    waits.append(failed.retry_after)
                if failed.down:
                    down = True  # the proxy itself refused or hung: every step would
                    break
        asked = [c for c in calls if c.asked]
        down = down or (bool(asked) and all(c.outcome.unreachable for c in asked))
        last = choice.steps[-1]
        single = len(choice.steps) == 1
        raise ModelUnavailableError(
            last.model if single else None,
            "no model answered usably: "
            + "; ".join(f"{c.model} ({c.tier}): {c.outcome}: {c.detail}" for c in calls),
            str(last.tier) if single else None,
            retry_after=min(waits) if waits else None,
            gateway_down=down,
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
        :class:`ModelUnavailableError` when it fails (``gateway_down``: by connection,
        5xx or timeout)."""
        model, tier = self.direct_model, Tier.UNLISTED
        await self.ready(Via.DIRECT)
        try:
            return await self._step(model, tier, messages, tools, Via.DIRECT, on_step)
        except _Failed as failed:
            call = failed.call
            raise ModelUnavailableError(
                model,
                f"direct API: {call.outcome}: {call.detail}",
                str(tier),
                retry_after=failed.retry_after,
                gateway_down=call.outcome.unreachable,
            ) from None

    def _skipped(self, model: str, tier: Tier, via: Via) -> tuple[GatewayCall, float] | None:
        """For a model still rate-limited: the step to report (not asked) and the seconds
        until its reset; else ``None``."""
        now = self._clock()
        found = self._limits.until(model, now)
        if found is None:
            return None
        until, why = found
        detail = f"not asked: rate-limited until {iso(until)} ({why})"
        call = GatewayCall(
            model, tier, GatewayOutcome.RATE_LIMITED, 0.0, detail, via, iso(until), asked=False
        )
        return call, (until - now).total_seconds()

    async def _step(
        self,
        model: str,
        tier: Tier,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        via: Via,
        on_step: Callable[[GatewayCall], None] | None,
        *,
        max_tokens: int | None = None,
        limit: float | None = None,
    ) -> Completion:
        """One model call, timed from its request (never an import), reported to
        ``on_step`` however it ends; a failure raises :class:`_Failed`."""
        started = time.perf_counter()
        try:
            completion = await self._call(model, tier, messages, tools, via, max_tokens, limit)
        except StepFailed as failed:
            took = round(time.perf_counter() - started, 4)
            call = self._failed_call(model, tier, via, took, failed)
            _report(call, on_step)
            raise _Failed(call, failed) from None
        took = round(time.perf_counter() - started, 4)
        _report(GatewayCall(model, tier, GatewayOutcome.OK, took, via=via), on_step)
        return completion

    def _failed_call(
        self, model: str, tier: Tier, via: Via, took: float, failed: StepFailed
    ) -> GatewayCall:
        """The record of a failed step; a 429 marks the model rate-limited."""
        detail, until = failed.detail, None
        if failed.outcome is GatewayOutcome.COOLDOWN and model in self._last_failure:
            detail = f"{detail} (the router cools it down after: {self._last_failure[model]})"
        elif failed.outcome is GatewayOutcome.RATE_LIMITED:
            if failed.retry_after is None:
                failed.retry_after = self._config.router.rate_limited_for
            failed.retry_after = min(failed.retry_after, MAX_RATE_LIMIT_S)
            now = self._clock()
            moment = now + timedelta(seconds=failed.retry_after)
            self._limits.mark(model, moment, f"HTTP 429 at {iso(now)}")
            until = iso(moment)
        else:
            self._last_failure[model] = f"{failed.outcome}: {failed.detail}"
        return GatewayCall(model, tier, failed.outcome, took, detail, via, until)

    async def _call(
        self,
        model: str,
        tier: Tier,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        via: Via,
        max_tokens: int | None,
        limit: float | None,
    ) -> Completion:
        """The call itself, within ``limit`` (default ``request_timeout``) seconds."""
        limit = limit or self._config.request_timeout
        extra = {} if max_tokens is None else {"max_tokens": max_tokens}
        try:
            async with asyncio.timeout(limit):
                if self._needs_litellm(via):
                    return await self._litellm.call(
                        model, tier, messages, tools, direct=via is Via.DIRECT, extra=extra
                    )
                send_as = _provider_id(model) if via is Via.DIRECT else None
                return await self._http_for(via).chat(
                    model, tier, messages, tools, send_as=send_as, max_tokens=max_tokens
                )
        except TimeoutError:
            raise StepFailed(
                GatewayOutcome.TIMEOUT, f"no complete answer within {limit:g} s"
            ) from None

    def _needs_litellm(self, via: Via) -> bool:
        if via is Via.DIRECT:
            return not self.direct_model.startswith(_OPENAI_COMPATIBLE)
        return self._liveliness is None

    def _http_for(self, via: Via) -> OpenAIHttp:
        if via not in self._http:
            config, handler = self._config, self._config.fault_handler
            if via is Via.DIRECT:
                secret, base = config.github_key, config.direct_api.api_base
                within, live, what = handler.cloud_check_timeout, None, "the direct API"
            else:
                secret, base = config.lite_llm_key, config.lite_llm_url or ""
                within, live, what = handler.lite_llm_timeout, self._liveliness, "the LiteLLM proxy"
            self._http[via] = OpenAIHttp(
                base,
                secret.get_secret_value() if secret else None,
                request_timeout=config.request_timeout,
                within=within,
                live=live,
                what=what,
                clock=self._clock,
            )
        return self._http[via]

    # -- probes ------------------------------------------------------------------------

    async def probe_gateway(self, models: Sequence[str]) -> ProbeResult:
        """Is the gateway there? The proxy's ``/health/liveliness``, then a one-token
        completion (each within ``cloud_check_timeout``) from the first of ``models`` not
        rate-limited that answers; in-process, the completions alone.

        ``ok``: a model completed. ``reachable``: something answered (a completion, or a
        4xx / 429: the gateway is there even if that model is not usable).
        """
        await self.ready()
        started = time.perf_counter()
        seen: list[str] = []
        if self._liveliness is not None:
            alive, detail = await self._liveliness.check()
            if not alive:
                return _probe(False, f"GET {self._liveliness.url}: {detail}", started)
            seen.append(f"liveliness {detail}")
            if not models:
                return _probe(True, f"{seen[0]}; no model named in config to ask", started)
        elif not models:
            return _probe(False, "no proxy and no model in model_list to ask", started)
        # A probe is judged like a call (through the proxy: late headers fail it only when
        # the proxy's liveliness does not answer either), within cloud_check_timeout: a
        # probe must not hold up a run --once for a whole request_timeout.
        limit = self._config.fault_handler.cloud_check_timeout
        reachable = False
        for model in models:
            if (skipped := self._skipped(model, Tier.UNLISTED, Via.GATEWAY)) is not None:
                seen.append(f"{model}: {skipped[0].detail}")
                continue
            answer = await self._ping(model, Via.GATEWAY, limit)
            seen.append(answer.detail)
            if answer.ok:
                return _probe(True, "; ".join(seen), started)
            reachable = reachable or answer.reachable
            if answer.down:
                break
        return _probe(False, "; ".join(seen), started, reachable=reachable)

    async def probe_direct(self) -> ProbeResult:
        """The direct API's probe: a one-token completion within ``cloud_check_timeout``."""
        if self._config.github_key is None:
            return ProbeResult(False, "github_key is not set (env GITHUB_LITELLM_KEY)")
        await self.ready(Via.DIRECT)
        started = time.perf_counter()
        answer = await self._ping(self.direct_model, Via.DIRECT, None)
        return _probe(answer.ok, answer.detail, started, reachable=answer.reachable)

    async def _ping(self, model: str, via: Via, limit: float | None) -> _Ping:
        started = time.perf_counter()
        try:
            await self._step(
                model,
                Tier.UNLISTED,
                list(_PROBE_MESSAGES),
                (),
                via,
                None,
                max_tokens=1,
                limit=limit,
            )
        except _Failed as failed:
            call = failed.call
            reachable = not call.outcome.unreachable
            return _Ping(False, reachable, failed.down, f"{model}: {call.outcome}: {call.detail}")
        took = (time.perf_counter() - started) * 1000
        return _Ping(True, True, False, f"{model} answered in {took:.0f} ms")


@dataclass(frozen=True, slots=True)
class _Ping:
    """One probe completion: completed, reachable, gateway down, and what was seen."""

    ok: bool
    reachable: bool
    down: bool
    detail: str


class _Failed(Exception):
    """A reported failed step: its record, whether the gateway itself is down, and how
    long the far end asked to wait."""

    def __init__(self, call: GatewayCall, failed: StepFailed) -> None:
        super().__init__(call.detail)
        self.call = call
        self.down = failed.down
        self.retry_after = failed.retry_after


def _report(call: GatewayCall, on_step: Callable[[GatewayCall], None] | None) -> None:
    if on_step is not None:
        on_step(call)


def _probe(ok: bool, detail: str, started: float, *, reachable: bool = False) -> ProbeResult:
    return ProbeResult(ok, detail, round(time.perf_counter() - started, 4), reachable and not ok)


def _provider_id(model: str) -> str:
    """The id an OpenAI-compatible provider knows the model by (its prefix dropped)."""
    return model.split("/", 1)[1] if model.startswith(_OPENAI_COMPATIBLE) else model
