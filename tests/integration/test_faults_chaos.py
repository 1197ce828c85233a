"""Chaos: 200 prompt tasks through the service while a real LiteLLM proxy is killed
(SIGKILL) and restarted five times. Every run ends completed exactly once, and the mode
history shows each switch."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.support.faults import KillableProxy, Project, fault_config
from tests.support.service import drop, rows, running, wait_for
from tests.support.upstream import ScriptedUpstream

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

CYCLES = 5
BATCH = 20  # tasks dropped while the proxy is up, and again while it is down


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


def completed(root: Path, names: list[str]) -> int:
    done = {r["task_id"] for r in rows(root) if r["state"] == "completed"}
    return sum(1 for name in names if name in done)


@pytest.mark.soak
@pytest.mark.timeout(240)
async def test_200_prompt_tasks_while_the_proxy_dies_and_returns_five_times(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    # Replies take a little while, so calls are in flight when the proxy dies.
    upstream.script("c-gw", [{"content": "via gateway", "delay": 0.15}])
    upstream.script("c-probe", [{"content": "ok"}])
    upstream.script("direct-model", [{"content": "via direct", "delay": 0.05}])
    Project(tmp_path)  # a git repository: repair tasks are committed
    tasks = tmp_path / "tasks"
    names: list[str] = []

    def batch(label: str) -> list[str]:
        new = [f"{label}-{n:02d}" for n in range(BATCH)]
        for name in new:
            drop(tasks / f"{name}.yaml", f"prompt: answer {name}\nmodel: c-gw\n")
        names.extend(new)
        return new

    with KillableProxy(upstream.url) as proxy:
        sections = fault_config(
            proxy.url,
            upstream.url,
            free=["c-probe"],
            service={"settle_ms": 30},
            fault_handler={"lite_llm_timeout": 1.0, "check_interval": 0.3},
        )
        async with running(tmp_path, **sections):
            for cycle in range(CYCLES):
                up = batch(f"c{cycle}-up")
                await wait_for(
                    lambda u=up: completed(tmp_path, u) >= 4,
                    within=30,
                    what="some runs through the gateway",
                )
                proxy.kill()  # the rest of the batch is in flight or queued
                await wait_for(
                    lambda u=up: completed(tmp_path, u) == BATCH,
                    within=30,
                    what="the batch, through the direct API",
                )
                restarting = asyncio.ensure_future(asyncio.to_thread(proxy.restart))
                down = batch(f"c{cycle}-down")
                await wait_for(
                    lambda d=down: completed(tmp_path, d) == BATCH,
                    within=30,
                    what="the batch dropped while the proxy is down",
                )
                await restarting
                await wait_for(
                    lambda: _modes(tmp_path)[-1:] == [("degraded", "normal")],
                    within=15,
                    what="back to normal",
                )
            await wait_for(lambda: completed(tmp_path, names) == len(names), within=30)
            await asyncio.sleep(0.5)  # nothing runs twice

    assert len(names) == CYCLES * 2 * BATCH == 200
    runs = [r for r in rows(tmp_path) if not r["task_id"].startswith("repair/")]
    assert sorted(r["task_id"] for r in runs) == sorted(names)
    assert {r["state"] for r in runs} == {"completed"}
    events = _query(tmp_path, "SELECT run_id FROM events WHERE to_state = 'completed'")
    per_run = Counter(e[0] for e in events)
    assert all(per_run[r["run_id"]] == 1 for r in runs)
    files = Counter(p.parent.name for p in (tmp_path / "results").glob("c*/*.json"))
    assert files == dict.fromkeys(names, 1)
    modes = _modes(tmp_path)
    assert modes.count(("normal", "degraded")) == CYCLES
    assert modes.count(("degraded", "normal")) == CYCLES
    assert ("degraded", "brainstem") not in modes
    repairs = [r for r in rows(tmp_path) if r["task_id"].startswith("repair/")]
    assert len(repairs) == CYCLES  # one repair task a fault, each closed as resolved
    assert {r["state"] for r in repairs} == {"completed"}


def _query(root: Path, sql: str) -> list[tuple[object, ...]]:
    import sqlite3  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

    with sqlite3.connect(f"file:{root / '.omni' / 'state.db'}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def _modes(root: Path) -> list[tuple[object, ...]]:
    return _query(root, "SELECT from_mode, to_mode FROM modes ORDER BY id")
