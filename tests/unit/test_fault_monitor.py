"""The fault monitor's mode machine and repair tasks, on a real store and real files."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from runner.config import Config
from runner.faults import FaultMonitor, Outcome, ProbeResult, RepairWriter
from runner.results import Redactor
from runner.states import Mode
from runner.store import Store
from runner.tasks import load_tasks

SECRET = "sk-planted-secret-123"
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


class Endpoint:
    """A probe target whose health the test sets."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    async def probe(self) -> ProbeResult:
        self.calls += 1
        return ProbeResult(self.up, "200 OK" if self.up else f"refused (key {SECRET})")


def monitor(
    tmp_path: Path, gateway: Endpoint, direct: Endpoint, **cfg: object
) -> tuple[FaultMonitor, list[tuple[Path, str]]]:
    config = Config.model_validate(
        {"lite_llm_url": "http://127.0.0.1:4000", "lite_llm_key": SECRET, **cfg}
    )
    commits: list[tuple[Path, str]] = []
    redactor = Redactor(config.secret_values())
    repairs = RepairWriter(
        config=config,
        tasks_root=tmp_path / "tasks",
        redactor=redactor,
        commit=lambda path, message: commits.append((path, message)),
        clock=lambda: NOW,
    )
    fm = FaultMonitor(
        store=Store(tmp_path / "state.db", clock=lambda: NOW),
        config=config,
        repairs=repairs,
        redactor=redactor,
        probe_gateway=gateway.probe,
        probe_direct=direct.probe,
        clock=lambda: NOW,
    )
    return fm, commits


def test_consecutive_failures_switch_to_degraded_and_write_one_repair_task(tmp_path: Path) -> None:
    fm, commits = monitor(tmp_path, Endpoint(), Endpoint())
    assert fm.gateway_outcome(Outcome.REFUSED, f"connect refused, key={SECRET}") is Mode.NORMAL
    assert fm.gateway_outcome(Outcome.OK) is Mode.NORMAL  # a success resets the count
    fm.gateway_outcome(Outcome.TIMEOUT, "no headers in 1 s")
    assert fm.gateway_outcome(Outcome.SERVER_ERROR, "502") is Mode.DEGRADED
    fm.gateway_outcome(Outcome.REFUSED, "again")  # same fault: no second task
    repairs = list((tmp_path / "tasks" / "repair").glob("*.yaml"))
    assert [p.name for p in repairs] == ["gateway-20261121T100000Z.yaml"]
    text = repairs[0].read_text()
    assert SECRET not in text
    loaded = load_tasks(tmp_path / "tasks")
    assert loaded.problems == []
    [task] = loaded.tasks
    assert task.id == "repair/gateway-20261121T100000Z"
    assert (task.spec.executor, task.spec.kind) == ("claude_code", "coding")
    assert "http://127.0.0.1:4000" in (task.spec.prompt or "")
    assert "1 server_error, 1 timeout" in (task.spec.prompt or "")
    assert len(commits) == 1
    committed, message = commits[0]
    assert committed == repairs[0]
    assert "repair task" in message


def test_probes_walk_the_modes_and_history_records_each(tmp_path: Path) -> None:
    gateway, direct = Endpoint(), Endpoint()
    fm, _ = monitor(tmp_path, gateway, direct, fault_handler={"consecutive_failures": 1})
    fm.gateway_outcome(Outcome.REFUSED)
    assert fm.mode is Mode.DEGRADED
    assert asyncio.run(fm.probe_once()) is Mode.BRAINSTEM  # both down
    direct.up = True
    assert asyncio.run(fm.probe_once()) is Mode.DEGRADED  # only the direct API
    gateway.up = True
    assert asyncio.run(fm.probe_once()) is Mode.NORMAL
    with Store(tmp_path / "state.db") as store:
        history = [(h["from_mode"], h["to_mode"]) for h in reversed(store.mode_history())]
        whys = " ".join(h["why"] for h in store.mode_history())
    assert history == [
        ("normal", "degraded"),
        ("degraded", "brainstem"),
        ("brainstem", "degraded"),
        ("degraded", "normal"),
    ]
    assert SECRET not in whys


def test_direct_failure_in_degraded_means_brainstem(tmp_path: Path) -> None:
    fm, _ = monitor(tmp_path, Endpoint(), Endpoint(), fault_handler={"consecutive_failures": 1})
    assert fm.direct_outcome(False, "boom") is Mode.NORMAL  # only from degraded
    fm.gateway_outcome(Outcome.TIMEOUT)
    assert fm.direct_outcome(False, "503") is Mode.BRAINSTEM


async def test_watch_probes_until_recovered_and_stops(tmp_path: Path) -> None:
    gateway = Endpoint()
    fm, _ = monitor(
        tmp_path, gateway, Endpoint(),
        fault_handler={"consecutive_failures": 1, "check_interval": 0.01},
    )  # fmt: skip
    fm.gateway_outcome(Outcome.REFUSED)
    stop = asyncio.Event()
    watcher = asyncio.create_task(fm.watch(stop))
    await asyncio.sleep(0.05)
    assert gateway.calls >= 2
    gateway.up = True
    async with asyncio.timeout(5):
        while fm.mode is not Mode.NORMAL:
            await fm.changed.wait()
            fm.changed.clear()
    stop.set()
    await asyncio.wait_for(watcher, 5)
