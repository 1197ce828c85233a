"""OpenAI-compatible chat completions over plain HTTP: the LiteLLM proxy and the direct API.

The LiteLLM proxy (``lite_llm_url``) and GitHub Models (``direct_api``) both speak the
OpenAI chat-completions protocol, so omni talks to them with this small async client
(httpx, imported on the first call) instead of loading LiteLLM (seconds and ~200 MB)
for them. It sends tools, reads tool calls and usage, and
the proxy's cost header (``x-litellm-response-cost``).

Every failure becomes a :class:`~runner.reach.calls.StepFailed` with the outcome the fault
monitor counts (refused, 5xx, timeout, 429 with its ``Retry-After``, 4xx, a bad reply).
Through the proxy a call is watched: no response headers within ``lite_llm_timeout``
*and* no answer from the proxy's ``/health/liveliness`` means a hung gateway
(:func:`runner.reach.gateway.within_headers`); a slow model behind a live proxy may take
the whole ``request_timeout``. An error body is quoted on one line and cut short: it is
data from outside, never instructions.
"""

from __future__ import annotations

import json
import math
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from runner.core.clock import utc_now
from runner.core.redaction import text_without_userinfo
from runner.defs.config import MAX_RATE_LIMIT_S
from runner.reach.calls import Completion, GatewayOutcome, StepFailed, ToolRequest, short
from runner.reach.gateway import HeadersTimeoutError, watched_client, within_headers

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    import httpx

    from runner.defs.routing import Tier
    from runner.reach.gateway import Vouch

#: The proxy's header with the call's cost in US dollars.
COST_HEADER = "x-litellm-response-cost"
#: Headers that may say how long to wait: the standard one, the LiteLLM proxy's copy of
#: its provider's, and a milliseconds variant some providers send.
_RETRY_HEADERS = ("retry-after", "llm_provider-retry-after")
_RETRY_MS_HEADER = "retry-after-ms"
#: How much of an error body is looked at (the rest of a hostile body is ignored).
_BODY_CHARS = 4000


class OpenAIHttp:
    """``POST {base_url}/chat/completions`` with a bearer key; one connection pool.

    ``live`` (the proxy's liveliness check) makes late response headers a failure only
    when the liveliness check does not answer either; without it (the direct API) late
    headers fail the call after ``within`` seconds.
    """

    def __init__(
        self,
        base_url: str,
        key: str | None,
        *,
        request_timeout: float,
        within: float,
        live: Vouch | None,
        what: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._request_timeout = request_timeout
        self._within = within
        self._live = live
        self._what = what
        self._clock = clock
        self._client: httpx.AsyncClient | None = None

    async def chat(
        self,
        model: str,
        tier: Tier,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        *,
        send_as: str | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """One completion, recorded as ``model`` (sent as ``send_as`` when given).

        Raises :class:`StepFailed` however the call fails.
        """
        import httpx  # noqa: PLC0415 # pylint: disable=import-outside-toplevel  # lazy: module doc

        body: dict[str, Any] = {"model": send_as or model, "messages": list(messages)}
        if tools:
            body["tools"] = list(tools)
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if self._client is None:
            heard = self._live.heard if self._live is not None else None
            self._client = watched_client(self._request_timeout, self._within, heard)
        client = self._client
        try:
            reply = await within_headers(
                lambda: client.post(self.url, content=json.dumps(body), headers=self._headers),
                within=self._within,
                live=self._live,
                what=self._what,
            )
        except HeadersTimeoutError as exc:
            raise StepFailed(GatewayOutcome.TIMEOUT, str(exc), down=self._gateway) from None
        except httpx.ConnectTimeout:
            raise StepFailed(
                GatewayOutcome.TIMEOUT,
                f"no connection to {self._what} within {self._within:g} s",
                down=self._gateway,
            ) from None
        except httpx.TimeoutException:
            raise StepFailed(
                GatewayOutcome.TIMEOUT,
                f"no complete answer within request_timeout={self._request_timeout:g} s",
            ) from None
        except httpx.TransportError as exc:
            # Refused, reset, closed mid-answer: nothing usable came back.
            seen = text_without_userinfo(short(str(exc), type(exc).__name__))
            raise StepFailed(
                GatewayOutcome.REFUSED, f"cannot reach {self._what}: {seen}", down=self._gateway
            ) from None
        return self._read(model, tier, reply)

    @property
    def _gateway(self) -> bool:
        """True for the proxy (watched by its liveliness): when it cannot be reached, the
        gateway itself is down, whatever the model."""
        return self._live is not None

    def _read(self, model: str, tier: Tier, reply: httpx.Response) -> Completion:
        status = reply.status_code
        if status >= 400:
            why = f"HTTP {status}: {error_text(reply.text)}"
            wait = retry_after(reply.headers, self._clock())
            if status == 429:
                raise StepFailed(GatewayOutcome.RATE_LIMITED, why, retry_after=wait)
            outcome = GatewayOutcome.SERVER_ERROR if status >= 500 else GatewayOutcome.REJECTED
            raise StepFailed(outcome, why, retry_after=wait)
        try:
            data = json.loads(reply.content)
        except ValueError:
            raise StepFailed(GatewayOutcome.BAD_REPLY, "the reply is not JSON") from None
        return completion_from(model, tier, data, cost_of(reply.headers))

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def completion_from(model: str, tier: Tier, data: Any, cost: float | None) -> Completion:
    """Our record of an OpenAI-style completion (a JSON object); an unusable one raises
    :class:`StepFailed` (``bad_reply``)."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise StepFailed(GatewayOutcome.BAD_REPLY, "the reply has no choices")
    message = choices[0].get("message")
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    calls = tuple(
        _tool_request(i, call)
        for i, call in enumerate(message.get("tool_calls") or ())
        if isinstance(call, dict)
    )
    if not text.strip() and not calls:
        raise StepFailed(GatewayOutcome.BAD_REPLY, "empty reply: no text and no tool calls")
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return Completion(
        model=model,
        tier=tier,
        text=text,
        tool_calls=calls,
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
        cost_usd=cost,
    )


def _tool_request(index: int, call: Mapping[str, Any]) -> ToolRequest:
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments) if arguments is not None else ""
    return ToolRequest(
        id=str(call.get("id") or f"call_{index}"),
        name=str(function.get("name") or ""),
        arguments=arguments,
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def cost_of(headers: Mapping[str, str]) -> float | None:
    """The proxy's cost header as a finite number ≥ 0, else ``None`` (unknown)."""
    try:
        cost = float(headers.get(COST_HEADER, ""))
    except ValueError:
        return None
    return cost if math.isfinite(cost) and cost >= 0 else None


def retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), the proxy's
    ``llm_provider-retry-after`` or ``retry-after-ms``; capped at
    :data:`~runner.defs.config.MAX_RATE_LIMIT_S`."""
    for name in _RETRY_HEADERS:
        if (value := headers.get(name)) is not None and (wait := _seconds(value, now)) is not None:
            return wait
    if (value := headers.get(_RETRY_MS_HEADER)) is not None:
        wait = _seconds(value, now)
        return None if wait is None else wait / 1000
    return None


def _seconds(value: str, now: datetime) -> float | None:
    try:
        wait = float(value.strip())
    except ValueError:
        try:
            wait = (parsedate_to_datetime(value) - now).total_seconds()
        except (TypeError, ValueError, IndexError):
            return None
    if not math.isfinite(wait):
        return None
    return min(max(wait, 0.0), MAX_RATE_LIMIT_S)


def error_text(body: str) -> str:
    """An error body's message on one line, cut short (``error.message`` of an
    OpenAI-style body, else the text itself)."""
    body = body[:_BODY_CHARS]
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    message: Any = body
    if isinstance(data, dict):
        found = data.get("error", data.get("detail", data.get("message")))
        if isinstance(found, dict):
            found = found.get("message", found)
        message = found if found is not None else body
    return text_without_userinfo(short(str(message), "no error message"))
