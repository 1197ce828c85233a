"""The fault monitor: gateway outcomes -> mode changes, probes, and repair tasks.

Normal -> degraded after ``consecutive_failures`` gateway failures in a row (refused,
5xx, or no response headers within ``lite_llm_timeout``; a slow but answering gateway
is not a failure). Degraded -> brainstem when the direct API fails too. While not
normal, probes run every ``check_interval``: the gateway answering means normal, only
the direct API answering means degraded. Every change is a row in the store's mode
history. Entering degraded writes one repair task for Claude Code per fault.

The monitor knows nothing of LiteLLM: the model client reports outcomes to it and
hands it two probe functions, so this module never imports litellm.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import yaml

from runner.config import Config
from runner.results import Redactor, atomic_write, iso, utc_now
from runner.states import Mode
from runner.store import ModeRecord, Store

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What one gateway call (or probe) met."""

    OK = "ok"
    REFUSED = "refused"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe: did the endpoint answer, and what was seen."""

    ok: bool
    detail: str


Probe = Callable[[], Awaitable[ProbeResult]]
#: Commits one file (path) with a message; ``None`` when the tasks folder is not in git.
Committer = Callable[[Path, str], None]


@dataclass(slots=True)
class Fault:
    """The gateway fault in progress: kinds and counts of errors, last probe results."""

    started_at: str
    counts: Counter[str] = field(default_factory=Counter)
    last_errors: list[str] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)
    repair_task: Path | None = None


class FaultMonitor:
    """Turns gateway and direct-API outcomes into mode changes (recorded in the store)."""

    def __init__(
        self,
        *,
        store: Store,
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
        self.changed = asyncio.Event()
        """Set on every mode change (waiting runs resume on it); the waiter clears it."""

    @property
    def mode(self) -> Mode:
        """The current mode, as recorded in the store."""
        return self._store.mode().mode

    def gateway_outcome(self, outcome: Outcome, detail: str = "") -> Mode:
        """Feed one gateway call's outcome; returns the mode after it."""
        if outcome is Outcome.OK:
            self._failures_in_a_row = 0
            return self.mode
        self._failures_in_a_row += 1
        fault = self._fault or Fault(started_at=iso(self._clock()))
        self._fault = fault
        fault.counts[outcome.value] += 1
        fault.last_errors = [*fault.last_errors[-4:], self._redactor.text(detail or outcome)]
        threshold = self._config.fault_handler.consecutive_failures
        if self.mode is Mode.NORMAL and self._failures_in_a_row >= threshold:
            why = f"gateway failed {self._failures_in_a_row} times in a row ({_kinds(fault)})"
            self._change(Mode.DEGRADED, why)
            fault.repair_task = self._repairs.write(fault)
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
                self._change(Mode.NORMAL, f"gateway answered its probe: {gateway.detail}")
                self._fault = None
            return Mode.NORMAL
        direct = await self._probe_direct()
        self._note_probe("direct API", direct)
        if direct.ok and self.mode is Mode.BRAINSTEM:
            self._change(Mode.DEGRADED, f"direct API answered its probe: {direct.detail}")
        elif not direct.ok and self.mode is Mode.DEGRADED:
            self._change(Mode.BRAINSTEM, f"direct API failed its probe: {direct.detail}")
        return self.mode

    async def watch(self, stop: asyncio.Event) -> None:
        """Probe every ``check_interval`` while not normal, until ``stop`` is set."""
        interval = self._config.fault_handler.check_interval
        while not stop.is_set():
            if self.mode is not Mode.NORMAL:
                try:
                    await self.probe_once()
                except Exception:  # pylint: disable=broad-exception-caught
                    # A probe that blows up must not end monitoring; the next one retries.
                    log.exception("fault monitor: probe failed unexpectedly")
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                continue

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


class RepairWriter:
    """Writes one repair task per fault into ``tasks/repair/``, and commits it."""

    def __init__(
        self,
        *,
        config: Config,
        tasks_root: Path,
        redactor: Redactor,
        commit: Committer | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._config = config
        self._tasks_root = tasks_root
        self._redactor = redactor
        self._commit = commit
        self._clock = clock

    def write(self, fault: Fault) -> Path:
        """Write (and commit) the repair task for ``fault``; returns its path."""
        stamp = self._clock().strftime("%Y%m%dT%H%M%SZ")
        path = self._tasks_root / "repair" / f"gateway-{stamp}.yaml"
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self._redactor.text(repair_task_yaml(self._config, fault)))
        if self._commit is not None:
            try:
                self._commit(path, f"omni: repair task for LiteLLM gateway fault ({_kinds(fault)})")
            except Exception as exc:  # pylint: disable=broad-exception-caught
                # The task file is written either way; a failed commit is told, not fatal.
                log.warning("repair task written but not committed: %s", exc)
        return path


def _kinds(fault: Fault) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(fault.counts.items()))


def repair_task_yaml(config: Config, fault: Fault) -> str:
    """A prompt task for Claude Code: what failed, the evidence, and what to check."""
    handler = config.fault_handler
    url = config.lite_llm_url or "(in-process LiteLLM router; no proxy configured)"
    lines = [
        f"The LiteLLM gateway at {url} stopped answering; omni switched to degraded",
        f"mode at {fault.started_at} and now calls {config.direct_api.model} directly",
        "with the backup key.",
        "",
        f"Errors by kind: {_kinds(fault) or 'none recorded'}.",
        "Last errors:",
        *[f"  - {e}" for e in fault.last_errors],
        "Last probes:",
        *([f"  - {p}" for p in fault.probes] or ["  - none yet"]),
        "",
        "Config keys involved: lite_llm_url, lite_llm_key (env LITELLM_API_KEY),",
        "model_list, litellm_settings, fault_handler.lite_llm_timeout"
        f" ({handler.lite_llm_timeout:g} s), fault_handler.consecutive_failures"
        f" ({handler.consecutive_failures}).",
        "",
        "Check: is the proxy process running and listening; does GET /health/liveliness",
        "answer; do its logs show crashes, out-of-memory kills or upstream errors; is its",
        "master key still valid; did a recent config change break model_list. Fix what",
        "you can in this repository (config, deployment files) and explain the rest.",
    ]
    task = {
        "description": f"Repair the LiteLLM gateway ({_kinds(fault)})",
        "kind": "coding",
        "executor": "claude_code",
        "prompt": "\n".join(lines) + "\n",
        "timeout": 900,
    }
    header = "# Written by omni's fault monitor. Runs on claude_code when it is configured.\n"
    return header + yaml.safe_dump(task, sort_keys=False, allow_unicode=True, width=100)
