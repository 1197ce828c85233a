"""The fault monitor: gateway outcomes -> mode changes, probes, and the model client that
follows the mode.

Normal -> degraded after ``consecutive_failures`` gateway failures in a row (refused,
5xx, or no response headers within ``lite_llm_timeout``; a slow but answering gateway
is not a failure, see ``runner.reach.gateway``). Degraded -> brainstem when the direct API
fails too. While not normal, probes run every ``check_interval``: the gateway answering
means normal, only the direct API answering means degraded. Every change is a row in the
store's mode history. Entering degraded writes one repair task for Claude Code per fault
(``runner.dispatch.repairs``); recovery marks it resolved.

:class:`ResilientModels` is what the agent calls: the gateway in normal mode (a call
that trips the switch is retried on the direct API, not lost), the direct API in
degraded mode, and in brainstem mode :class:`CloudsDownError`, on which the dispatcher
parks the run ``waiting``. :class:`Resumer` puts waiting runs back to work, oldest
first, when a cloud answers again. :class:`FaultHandling` wires it all for one process.

The monitor knows nothing of LiteLLM: the model client (``runner.reach.llm``) reports each
call's outcome to it and hands it two probe functions.
"""

from __future__ import annotations

import asyncio
import logging
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
from runner.reach.llm import Completion, GatewayCall, GatewayOutcome, LlmClient, ProbeResult, Via

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path
    from types import TracebackType

    from runner.core.redaction import Redactor
    from runner.defs.config import Config
    from runner.state.backend import StateStore
    from runner.state.records import ModeRecord, RunRecord

log = logging.getLogger(__name__)


Probe = Callable[[], Awaitable[ProbeResult]]
_UNREACHABLE = frozenset({GatewayOutcome.REFUSED, GatewayOutcome.TIMEOUT, GatewayOutcome.COOLDOWN})


def probe_model(config: Config) -> str | None:
    """The model a gateway probe asks: the first named in the tiers, else in model_list,
    else ``router.default_model`` when it names one."""
    tiers = config.router.model_tiers
    names = [*tiers.free, *tiers.paid, *(str(e["model_name"]) for e in config.model_list)]
    if config.router.default_model not in set(ModelPolicy):
        names.append(config.router.default_model)
    return names[0] if names else None


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
    ) -> None:
        self._store = store
        self._config = config
        self._repairs = repairs
        self._redactor = redactor
        self._probe_gateway = probe_gateway
        self._probe_direct = probe_direct
        self._clock = clock
        self._failures_in_a_row = 0
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

    def on_call(self, call: GatewayCall) -> None:
        """The model client's hook: every call's outcome (gateway or direct)."""
        if call.via is Via.DIRECT:
            if call.outcome.gateway_failure:
                self.direct_outcome(False, f"{call.model}: {call.outcome}: {call.detail}")
            return
        if call.outcome.gateway_failure or call.outcome is GatewayOutcome.COOLDOWN:
            # A cooldown: every deployment of the model failed lately (in-process, or the
            # proxy's own router), which counts the same way (DESIGN §3).
            self.gateway_outcome(call.outcome, f"{call.model}: {call.detail}")
            return
        self.gateway_outcome(GatewayOutcome.OK)  # an answer, even a 4xx: the gateway is there
        if self._stale_repairs and self.mode is Mode.NORMAL:
            self._stale_repairs = False
            self._repairs.resolve(f"the gateway answered a model call ({call.model})")

    def gateway_outcome(self, outcome: GatewayOutcome, detail: str = "") -> Mode:
        """Feed one gateway call's outcome (``ok`` or a failure); returns the mode after."""
        if outcome is GatewayOutcome.OK:
            self._failures_in_a_row = 0
            return self.mode
        self._failures_in_a_row += 1
        fault = self._fault or Fault(started_at=iso(self._clock()))
        self._fault = fault
        fault.counts[outcome.value] += 1
        fault.last_errors = [*fault.last_errors[-4:], self._redactor.text(detail or outcome)]
        threshold = self._config.fault_handler.consecutive_failures
        if self.mode is Mode.NORMAL and self._failures_in_a_row >= threshold:
            why = f"gateway failed {self._failures_in_a_row} times in a row ({kinds(fault)})"
            self._change(Mode.DEGRADED, why)
            self._stale_repairs = False
            self._repairs.write(fault)
        return self.mode

    def direct_outcome(self, ok: bool, detail: str = "") -> Mode:
        """Feed one direct-API call's outcome (degraded mode); failure -> brainstem."""
        if not ok and self.mode is Mode.DEGRADED:
            self._change(Mode.BRAINSTEM, f"direct API failed too: {detail}")
        return self.mode

    async def probe_once(self) -> Mode:
        """Probe the gateway, then the direct API; move to the mode the answers allow."""
        gateway = await self._probe_gateway()
        self._note_probe("gateway", gateway)
        if gateway.ok:
            self._failures_in_a_row = 0
            if self.mode is not Mode.NORMAL:
                why = f"gateway answered its probe: {gateway.detail}"
                self._change(Mode.NORMAL, why)
                self._fault = None
                self._stale_repairs = False
                self._repairs.resolve(why)
            return Mode.NORMAL
        direct = await self._probe_direct()
        self._note_probe("direct API", direct)
        if direct.ok and self.mode is Mode.BRAINSTEM:
            self._change(Mode.DEGRADED, f"direct API answered its probe: {direct.detail}")
        elif not direct.ok and self.mode is Mode.DEGRADED:
            self._change(Mode.BRAINSTEM, f"direct API failed its probe: {direct.detail}")
        return self.mode

    async def checked(self) -> None:
        """Once per process, before the first model call: if the stored mode is not
        normal (left by an earlier run), probe now rather than trust it."""
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
        """Every ``check_interval`` while not normal, probe; until ``stop`` is set."""
        interval = self._config.fault_handler.check_interval
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
            line = f"{iso(self._clock())} {what}: {'ok' if result.ok else 'failed'} {result.detail}"
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
        direct = self._config.github_key is not None
        rounds = self._config.fault_handler.consecutive_failures
        while True:
            record = monitor.record()
            if record.mode is Mode.BRAINSTEM:
                raise CloudsDownError(
                    None,
                    f"brainstem mode since {record.since} ({record.why}); the run waits"
                    " until the gateway or the direct API answers",
                )
            if record.mode is Mode.DEGRADED and direct:
                try:
                    return await self._llm.complete_direct(messages, tools, on_step=on_step)
                except ModelUnavailableError:
                    if monitor.mode is Mode.DEGRADED:
                        raise  # the direct API answered, but not usably
                    continue  # brainstem now (or the gateway is back): go round again
            seen: list[GatewayCall] = []
            try:
                return await self._llm.complete(
                    messages, tools, choice, on_step=_tee(seen, on_step)
                )
            except ModelUnavailableError:
                if direct and monitor.mode is not Mode.NORMAL:
                    continue  # this call (or another) tripped the switch: retry there
                rounds -= 1
                # Nothing answered at all (refused, hung): ask again, up to the threshold,
                # so a dead gateway trips the switch within this call. A 5xx counts
                # towards the switch but is an answer: the run fails (and may retry).
                # Without github_key there is no direct API: degraded mode keeps using
                # the gateway, and its probes lead to brainstem while it stays down.
                if rounds <= 0 or not seen or not all(c.outcome in _UNREACHABLE for c in seen):
                    raise


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
        self.llm = LlmClient(config, on_call=self._on_call)
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
        )
        self.monitor = FaultMonitor(
            store=store,
            config=config,
            repairs=repairs,
            redactor=redactor,
            probe_gateway=lambda: self.llm.probe_gateway(probe_model(config)),
            probe_direct=self.llm.probe_direct,
            clock=clock,
        )
        self.models = ResilientModels(llm=self.llm, monitor=self.monitor, config=config)
        self._stop = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    def _on_call(self, call: GatewayCall) -> None:
        self.monitor.on_call(call)

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
