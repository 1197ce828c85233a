"""The fault monitor: gateway outcomes -> mode changes, probes, and the model client that
follows the mode.

What counts as a gateway failure (DESIGN §3): a model call chain in which nothing
answered -- every model asked failed by connection, 5xx or timeout, or the proxy itself
refused or hung (no response headers while its liveliness check went unanswered too).
A slow answer is not a failure, and neither is one dead deployment when the chain's
next model answers (the tier chain moves on). ``consecutive_failures`` such failures in
a row leave normal mode: for **degraded** when a backup key (``github_key``) is
configured, else for **brainstem**; failures that overlap in time (concurrent calls
meeting the same outage) count once. Degraded -> brainstem when the direct API fails
too. While not normal, probes run at once and then every ``check_interval``: the
gateway answering means normal, only the direct API answering means degraded. Every
change is a row in the store's mode history. Leaving normal writes one repair task per
fault (``runner.dispatch.repairs``); recovery closes it.

:class:`ResilientModels` is what the agent calls: the gateway in normal mode (a call
whose chain found the gateway down is asked again, up to ``consecutive_failures``
times, so a dead gateway trips the switch within one call and that call goes on in the
new mode, not lost), the direct API in degraded mode, and in brainstem mode
:class:`CloudsDownError`, on which the dispatcher parks the run ``waiting``.
:class:`Resumer` puts waiting runs back to work, oldest first, when a cloud answers
again. :class:`FaultHandling` wires it all for one process.

The monitor knows nothing of HTTP or LiteLLM: :class:`ResilientModels` tells it how each
call chain ended, and the model client (``runner.reach.modelclient``) hands it two probes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runner.core.clock import iso, utc_now
from runner.core.errors import CloudsDownError, ModelUnavailableError
from runner.core.states import Mode, RunState
from runner.defs.routing import ModelChoice, ModelPolicy
from runner.dispatch.repairs import (
    Fault,
    RepairRuns,
    RepairWriter,
    git_committer,
    kinds,
)
from runner.reach.calls import Completion, GatewayCall, ProbeResult
from runner.reach.modelclient import LlmClient
from runner.state.ratelimits import RateLimits
from runner.state.repairrecords import RepairRecords

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path
    from types import TracebackType

    from runner.core.redaction import Redactor
    from runner.defs.config import Config
    from runner.state.interface import StateStore
    from runner.state.records import ModeRecord, RunRecord

log = logging.getLogger(__name__)


Probe = Callable[[], Awaitable[ProbeResult]]


def probe_models(config: Config) -> list[str]:
    """The models a gateway probe may ask, in order: the tiers, then ``model_list``, then
    ``router.default_model`` when it names one."""
    tiers = config.router.model_tiers
    names = [*tiers.free, *tiers.paid, *(str(e["model_name"]) for e in config.model_list)]
    if config.router.default_model not in set(ModelPolicy):
        names.append(config.router.default_model)
    return list(dict.fromkeys(names))


class FaultMonitor:  # pylint: disable=too-many-instance-attributes  # the mode machine's state
    """Turns gateway and direct-API outcomes into mode changes (recorded in the store)."""

    def __init__(
        self,
        *,
        store: StateStore,
        config: Config,
        repairs: RepairWriter,
        redactor: Redactor,
        probe_gateway: Probe,
        probe_direct: Probe,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._config = config
        self._repairs = repairs
        self._redactor = redactor
        self._probe_gateway = probe_gateway
        self._probe_direct = probe_direct
        self._clock = clock
        self._monotonic = monotonic
        self._failures_in_a_row = 0
        self._counted_until = float("-inf")
        """When the last failure that counted ended: one that began earlier overlaps it."""
        self._fault: Fault | None = None
        self._checked = False
        self._checking = asyncio.Lock()
        self._stale_repairs = True  # open repair files from earlier processes not looked at
        self.changed = asyncio.Event()
        """Set on every mode change (waiting runs resume on it); the waiter clears it."""

    @property
    def mode(self) -> Mode:
        """The current mode, as recorded in the store."""
        return self._store.mode().mode

    def record(self) -> ModeRecord:
        """The current mode with since when and why."""
        return self._store.mode()

    def now(self) -> float:
        """The monitor's monotonic clock (a call chain's start, for :meth:`gateway_failed`)."""
        return self._monotonic()

    def gateway_answered(self, model: str) -> None:
        """A call chain got an answer from the gateway (a completion, or a 4xx / 429: the
        gateway is there): the failures in a row start again."""
        self._failures_in_a_row = 0
        if self._stale_repairs and self.mode is Mode.NORMAL:
            self._stale_repairs = False
            self._repairs.resolve(f"the gateway answered a model call ({model})")

    def gateway_failed(self, started: float, calls: Sequence[GatewayCall], detail: str) -> Mode:
        """A call chain begun at ``started`` (:meth:`now`) found the gateway down; returns
        the mode after. A chain that began before the last counted failure ended met the
        same outage and adds evidence, not a count."""
        fault = self._fault or Fault(started_at=iso(self._clock()))
        self._fault = fault
        fault.counts.update(str(c.outcome) for c in calls if c.asked)
        fault.last_errors = [*fault.last_errors[-4:], self._redactor.text(detail)]
        if started >= self._counted_until:
            self._failures_in_a_row += 1
            self._counted_until = self._monotonic()
        threshold = self._config.fault_handler.consecutive_failures
        if self.mode is Mode.NORMAL and self._failures_in_a_row >= threshold:
            backup = self._config.github_key is not None
            new = Mode.DEGRADED if backup else Mode.BRAINSTEM
            why = f"gateway failed {self._failures_in_a_row} times in a row ({kinds(fault)})"
            why += "" if backup else "; no backup key (github_key) is configured"
            self._change(new, why)
            self._stale_repairs = False
            self._repairs.write(fault, new)
        return self.mode

    def direct_failed(self, detail: str) -> Mode:
        """A direct-API call failed by connection, 5xx or timeout: degraded -> brainstem."""
        if self.mode is Mode.DEGRADED:
            self._change(Mode.BRAINSTEM, f"direct API failed too: {detail}")
        return self.mode

    async def probe_once(self) -> Mode:
        """Probe the gateway, then the direct API; move to the mode the answers allow."""
        gateway = await self._probe_gateway()
        self._note_probe("gateway", gateway)
        if gateway.up:
            self._failures_in_a_row = 0
            if self.mode is not Mode.NORMAL:
                why = f"gateway answered its probe: {gateway.detail}"
                self._change(Mode.NORMAL, why)
                self._fault = None
                self._stale_repairs = False
                self._repairs.resolve(why)
            return Mode.NORMAL
        if self.mode is Mode.NORMAL:
            return Mode.NORMAL  # calls, not probes, leave normal mode
        direct = await self._probe_direct()
        self._note_probe("direct API", direct)
        if direct.ok and self.mode is Mode.BRAINSTEM:
            self._change(Mode.DEGRADED, f"direct API answered its probe: {direct.detail}")
        elif not direct.ok and self.mode is Mode.DEGRADED:
            self._change(Mode.BRAINSTEM, f"direct API failed its probe: {direct.detail}")
        return self.mode

    async def checked(self) -> None:
        """Once per process, before the first model call (``run --once``: before any run):
        if the stored mode is not normal (left by an earlier process), probe now rather
        than trust it."""
        if self._checked:
            return
        async with self._checking:
            if not self._checked:
                try:
                    if self.mode is not Mode.NORMAL:
                        await self.probe_once()
                finally:
                    self._checked = True

    async def watch(self, stop: asyncio.Event) -> None:
        """Probe at once when the stored mode is not normal, then every
        ``check_interval`` while not normal; until ``stop`` is set."""
        interval = self._config.fault_handler.check_interval
        try:
            await self.checked()
        except Exception:  # pylint: disable=broad-exception-caught  # the loop retries
            log.exception("fault monitor: probe failed unexpectedly")
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
            else:
                return
            if self.mode is Mode.NORMAL:
                continue
            try:
                await self.probe_once()
            except Exception:  # pylint: disable=broad-exception-caught
                # A probe that blows up must not end monitoring; the next one retries.
                log.exception("fault monitor: probe failed unexpectedly")

    def _note_probe(self, what: str, result: ProbeResult) -> None:
        if self._fault is not None:
            verdict = "ok" if result.ok else "answered" if result.up else "failed"
            line = f"{iso(self._clock())} {what}: {verdict} {result.detail}"
            self._fault.probes = [*self._fault.probes[-4:], self._redactor.text(line)]

    def _change(self, new: Mode, why: str) -> ModeRecord:
        why = self._redactor.text(why)
        record = self._store.set_mode(new, why)
        log.warning("mode: %s (%s)", new, why)
        self.changed.set()
        return record


class ResilientModels:
    """The model client the agent uses: follows the monitor's mode (module docstring)."""

    def __init__(self, *, llm: LlmClient, monitor: FaultMonitor, config: Config) -> None:
        self._llm = llm
        self._monitor = monitor
        self._config = config

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        choice: ModelChoice,
        *,
        on_step: Callable[[GatewayCall], None] | None = None,
    ) -> Completion:
        """The first usable answer: the gateway along ``choice``, or the direct API.

        Raises :class:`CloudsDownError` in brainstem mode (the run should wait), and
        :class:`ModelUnavailableError` when the models answered but not usably.
        """
        monitor = self._monitor
        await monitor.checked()
        rounds = self._config.fault_handler.consecutive_failures
        while True:
            record = monitor.record()
            backup = self._config.github_key is not None
            if record.mode is Mode.BRAINSTEM or (record.mode is Mode.DEGRADED and not backup):
                lacking = "" if backup else " (no backup key, github_key, is configured)"
                raise CloudsDownError(
                    None,
                    f"{record.mode} mode since {record.since} ({record.why}); the run waits"
                    f" until a model answers{lacking}",
                )
            if record.mode is Mode.DEGRADED:
                answer = await self._direct(messages, tools, on_step)
            else:
                answer = await self._gateway(messages, tools, choice, on_step, rounds)
                rounds -= 1
            if answer is not None:
                return answer

    async def _direct(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        on_step: Callable[[GatewayCall], None] | None,
    ) -> Completion | None:
        """The direct API's answer; ``None`` when it failed and the mode moved on."""
        try:
            return await self._llm.complete_direct(messages, tools, on_step=on_step)
        except ModelUnavailableError as exc:
            if exc.gateway_down:
                self._monitor.direct_failed(str(exc))
            if self._monitor.mode is Mode.DEGRADED:
                raise  # the direct API answered, but not usably
            return None  # brainstem now (or the gateway is back): go round again

    async def _gateway(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        choice: ModelChoice,
        on_step: Callable[[GatewayCall], None] | None,
        rounds: int,
    ) -> Completion | None:
        """The gateway's answer along ``choice``; ``None`` when it found the gateway down
        and the call should go round again (the mode changed, or ``rounds`` remain)."""
        monitor = self._monitor
        seen: list[GatewayCall] = []
        started = monitor.now()
        try:
            answer = await self._llm.complete(messages, tools, choice, on_step=_tee(seen, on_step))
        except ModelUnavailableError as exc:
            if not exc.gateway_down:
                if any(c.asked for c in seen):
                    monitor.gateway_answered(seen[-1].model)
                raise  # the models answered, but not usably: a model failure
            if monitor.gateway_failed(started, seen, str(exc)) is not Mode.NORMAL:
                return None  # this call (or another) tripped the switch: go on there
            if rounds <= 1:
                raise
            return None  # ask again: a dead gateway trips the switch within this call
        monitor.gateway_answered(answer.model)
        return answer


def _tee(
    seen: list[GatewayCall], on_step: Callable[[GatewayCall], None] | None
) -> Callable[[GatewayCall], None]:
    def step(call: GatewayCall) -> None:
        seen.append(call)
        if on_step is not None:
            on_step(call)

    return step


class Resumer:
    """Waiting runs back to work, in their original order (store ``seq``), when the mode
    leaves brainstem; also every ``check_interval``, for a run that went waiting just
    as the mode changed."""

    def __init__(
        self,
        *,
        store: StateStore,
        monitor: FaultMonitor,
        start: Callable[[RunRecord], bool],
        interval: float,
    ) -> None:
        self._store = store
        self._monitor = monitor
        self._start = start
        self._interval = interval

    def resume(self) -> int:
        """Start every waiting run, oldest first, unless in brainstem; how many started."""
        if self._monitor.mode is Mode.BRAINSTEM:
            return 0
        waiting = self._store.runs(state=RunState.WAITING, newest_first=False)
        started = sum(1 for run in waiting if self._start(run))
        if started:
            log.info("resumed %d waiting run(s) (mode %s)", started, self._monitor.mode)
        return started

    async def run(self, stop: asyncio.Event) -> None:
        """Resume on each mode change until ``stop`` is set (a service background job)."""
        changed = self._monitor.changed
        while not stop.is_set():
            self.resume()
            waits = {asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stop.wait())}
            try:
                await asyncio.wait(
                    waits, timeout=self._interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waits:
                    waiter.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            changed.clear()


class FaultHandling:
    """One process's fault handling: the model client for the agent (:attr:`models`),
    the :attr:`monitor`, repair tasks, and probing in the background (:meth:`watching`)."""

    def __init__(
        self,
        config: Config,
        *,
        store: StateStore,
        redactor: Redactor,
        tasks_root: Path,
        results_root: Path,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        limits = RateLimits(store, results_root, config.limits.result_file_bytes)
        self.llm = LlmClient(config, limits=limits, clock=clock)
        runs = RepairRuns(
            store=store,
            tasks_root=tasks_root,
            results_root=results_root,
            redactor=redactor,
            max_bytes=config.limits.task_file_bytes,
            clock=clock,
        )
        repairs = RepairWriter(
            config=config,
            tasks_root=tasks_root,
            redactor=redactor,
            commit=git_committer(tasks_root, environ),
            clock=clock,
            on_resolved=runs.close,
            records=RepairRecords(
                results_root,
                redactor=redactor,
                max_bytes=config.limits.result_file_bytes,
                clock=clock,
            ),
        )
        self.monitor = FaultMonitor(
            store=store,
            config=config,
            repairs=repairs,
            redactor=redactor,
            probe_gateway=lambda: self.llm.probe_gateway(probe_models(config)),
            probe_direct=self.llm.probe_direct,
            clock=clock,
        )
        self.models = ResilientModels(llm=self.llm, monitor=self.monitor, config=config)
        self._stop = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    def mode(self) -> Mode:
        """The current mode (for result files)."""
        return self.monitor.mode

    async def __aenter__(self) -> FaultHandling:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_watching()
        await self.llm.aclose()

    def watching(self) -> None:
        """Start probing every ``check_interval`` in the background (``run --once``)."""
        if self._watch is None:
            self._watch = asyncio.create_task(self.monitor.watch(self._stop), name="fault monitor")

    async def stop_watching(self) -> None:
        """Stop the background probing started by :meth:`watching`."""
        self._stop.set()
        if self._watch is not None:
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
