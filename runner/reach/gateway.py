"""Is the model gateway answering? Response-headers watch and the proxy's liveliness check.

A gateway call fails (DESIGN §3) when it is refused, gets a 5xx, or gets no response
headers within ``fault_handler.lite_llm_timeout``; a slow answer is not a failure. The
LiteLLM proxy sends its headers only with the finished reply (measured: a 2 s upstream
answer gives headers after 2 s), so "no headers yet" alone cannot tell a hung proxy from
a slow model. :func:`within_headers` therefore asks the proxy's ``/health/liveliness``
too: a call whose headers are late counts as timed out only when the liveliness endpoint
did not answer either (:class:`Liveliness` runs that check alongside the call, twice
every ``lite_llm_timeout`` while the headers stay away) and no other response came from
the gateway meanwhile (a busy gateway answering other calls is not hung). A gateway
that sends its headers early (a streaming-style gateway) is recognised by an httpx
response hook, which fires after the headers and before the body.

Plain httpx, imported lazily (no litellm here); ``runner.reach.openai_http`` makes its
clients with :func:`watched_client`.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx

T = TypeVar("T")

#: The event of the call running in this context, set by the response hook. Context-local
#: by construction (each watched call runs in its own task), so no state is shared.
_HEADERS_SEEN: ContextVar[asyncio.Event | None] = ContextVar("omni_headers_seen", default=None)


class HeadersTimeoutError(Exception):
    """No response headers in time, and the gateway's liveliness did not vouch for it."""


def watched_client(
    timeout: float, connect_timeout: float, heard: Callable[[], None] | None = None
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose responses mark the watched call they belong to, and
    tell ``heard`` (the gateway answered something: it is not hung)."""
    import httpx  # noqa: PLC0415 # pylint: disable=import-outside-toplevel  # lazy: see module doc

    async def on_response(_response: httpx.Response) -> None:
        # Runs once the headers are in, before the body is read.
        seen = _HEADERS_SEEN.get()
        if seen is not None:
            seen.set()
        if heard is not None:
            heard()

    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        event_hooks={"response": [on_response]},
    )


async def _stop(job: asyncio.Future[Any]) -> None:
    if not job.done():
        job.cancel()
    await asyncio.gather(job, return_exceptions=True)


class Vouch(Protocol):
    """What :func:`within_headers` asks of a liveliness check (:class:`Liveliness`)."""

    def now(self) -> float:
        """A clock reading, comparable with :meth:`alive`'s arguments."""

    def kick(self) -> None:
        """Start a check unless one is in flight."""

    async def alive(self, period: float, fresh: float) -> bool:
        """True when the gateway answered at or after ``fresh``; False when a check begun
        at or after ``period`` got no answer; else wait for such a check."""

    def heard(self) -> None:
        """The gateway just answered something (any response): it is not hung."""


#: Within a period, a second liveliness check starts this far in (a share of the
#: period): a gateway that hangs just after a call started is caught 1.1 periods in.
_FRESH = 0.1


async def within_headers(
    call: Callable[[], Awaitable[T]],
    *,
    within: float,
    live: Vouch | None = None,
    what: str = "the gateway",
) -> T:
    """``await call()``, made through a :func:`watched_client`.

    Raises :class:`HeadersTimeoutError` (and cancels the call) when no response headers
    arrived within ``within`` seconds, unless ``live`` (when given) vouches for the
    gateway: a liveliness check started with the period and another a tenth into it;
    either unanswered means a hung gateway, the later one answering means a slow answer,
    and the call goes on into another period (its own timeout bounds the rest). A
    gateway that hangs while a call waits is therefore caught 1.1 periods after the call
    started when it hangs early in it, at most two periods after it hung otherwise.
    """
    seen = asyncio.Event()

    async def marked() -> T:
        _HEADERS_SEEN.set(seen)  # in this task's own context copy
        return await call()

    job = asyncio.ensure_future(marked())
    waiter = asyncio.ensure_future(seen.wait())
    again: asyncio.TimerHandle | None = None
    try:
        while True:
            period = live.now() if live is not None else 0.0
            if live is not None:
                live.kick()
                again = asyncio.get_running_loop().call_later(within * _FRESH, live.kick)
            await asyncio.wait({job, waiter}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
            if again is not None:
                again.cancel()
            if job.done() or seen.is_set():
                return await job
            if live is None:
                raise HeadersTimeoutError(f"no response headers from {what} within {within:g} s")
            if not await live.alive(period, period + within * _FRESH):
                raise HeadersTimeoutError(
                    f"no response headers from {what} within {within:g} s, and its"
                    " /health/liveliness did not answer either"
                )
    finally:
        if again is not None:
            again.cancel()
        await _stop(waiter)
        await _stop(job)


class Liveliness:
    """``GET <base>/health/liveliness`` (the LiteLLM proxy's; needs no key), shared by
    concurrent calls: at most one check in flight, each bounded by ``timeout``."""

    def __init__(
        self, base_url: str, timeout: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.url = base_url.rstrip("/") + "/health/liveliness"
        self._timeout = timeout
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._inflight: asyncio.Task[tuple[bool, str]] | None = None
        self._inflight_started = -math.inf
        self._answered = -math.inf
        """When the latest check that got an answer began, or a response was heard."""
        self._unanswered = -math.inf
        """When the latest check that got none began."""

    def now(self) -> float:
        """The clock the checks are timed by."""
        return self._clock()

    def kick(self) -> None:
        """Start a check unless one is in flight."""
        if self._inflight is None or self._inflight.done():
            self._inflight_started = self._clock()
            self._inflight = asyncio.ensure_future(self._get())

    async def alive(self, period: float, fresh: float) -> bool:
        """True when the gateway answered at or after ``fresh`` (a check begun then, or
        any response heard since: a busy gateway answering other calls is not hung);
        False when a check begun at or after ``period`` got no answer; else wait for
        such a check (starting one if none is in flight)."""
        while True:
            if self._answered >= fresh:
                return True
            if self._unanswered >= period:
                return False
            if self._inflight is None or (self._inflight.done() and self._inflight_started < fresh):
                self.kick()
            assert self._inflight is not None
            await asyncio.shield(self._inflight)

    def heard(self) -> None:
        """A response from the gateway just arrived: it was alive now."""
        self._answered = max(self._answered, self._clock())

    async def check(self) -> tuple[bool, str]:
        """One fresh check: (answered, what was seen)."""
        return await self._get()

    async def _get(self) -> tuple[bool, str]:
        began = self._clock()
        ok, detail = await self._fetch()
        if ok:
            self._answered = max(self._answered, began)
        else:
            self._unanswered = max(self._unanswered, began)
        return ok, detail

    async def _fetch(self) -> tuple[bool, str]:
        import httpx  # noqa: PLC0415 # pylint: disable=import-outside-toplevel  # lazy

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        started = time.perf_counter()
        try:
            reply = await self._client.get(self.url)
        except httpx.TimeoutException:
            return False, f"no answer within {self._timeout:g} s"
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        took = (time.perf_counter() - started) * 1000
        if reply.status_code != 200:
            return False, f"HTTP {reply.status_code} in {took:.0f} ms"
        return True, f"HTTP 200 in {took:.0f} ms"

    async def aclose(self) -> None:
        """Stop a check in flight and close the connection pool."""
        if self._inflight is not None:
            await _stop(self._inflight)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
