"""Bench: how fast the runner falls back when its gateway dies, and resumes when a cloud
comes back (DESIGN §6 / issue 5 bars).

Starts the tests' scripted OpenAI-compatible upstream and a real ``litellm`` proxy on
127.0.0.1 (``tests/support/upstream.py``, ``tests/support/faults.py``), then, each
trial on a fresh state database with the default ``fault_handler`` (``lite_llm_timeout``
1 s, ``consecutive_failures`` 2):

- ``refused``: model calls one after another through ``FaultHandling.models`` (what the
  agent uses); the proxy is killed (SIGKILL) at a random moment; time from the kill to
  the first call answered by the direct API. The proxy is restarted between trials.
- ``hung``: the same, the proxy stopped (SIGSTOP: connections accepted, never answered).
- ``resume``: the service (``omni run`` in-process) in brainstem mode (gateway dead,
  upstream answering 503) with a prompt run waiting; the upstream recovers; time until
  that run is claimed again (and until it completed), with ``check_interval`` 2 s.

Prints one JSON object. ``uv run python bench/fallback.py [--trials 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.app.service import Service
from runner.core.redaction import Redactor
from runner.defs.config import Config
from runner.defs.environment import ResolvedPaths
from runner.defs.routing import ModelChoice, ModelStep, Tier
from runner.dispatch.faults import FaultHandling
from runner.reach.calls import GatewayCall, Via
from runner.state.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The tests' helpers, from the repository root.
from tests.support.faults import KillableProxy  # pylint: disable=wrong-import-position
from tests.support.upstream import (  # pylint: disable=wrong-import-position
    MASTER_KEY,
    ScriptedUpstream,
    free_port,
)

if TYPE_CHECKING:
    from collections.abc import Callable

BARS_S = {"refused": 1.0, "hung": 2.5}
CHECK_INTERVAL = 2.0
GATEWAY_MODEL = "bench-gw"
DIRECT_MODEL = "bench-direct"
CHOICE = ModelChoice(GATEWAY_MODEL, (ModelStep(GATEWAY_MODEL, Tier.FREE),), "bench")
MESSAGES = [{"role": "user", "content": "Say ok."}]


def _config(gateway: str, upstream: str, **more: Any) -> Config:
    return Config.model_validate(
        {
            "lite_llm_url": gateway,
            "lite_llm_key": MASTER_KEY,
            "github_key": "sk-bench-backup",
            "direct_api": {"model": f"github/{DIRECT_MODEL}", "api_base": upstream},
            "router": {"model_tiers": {"free": [GATEWAY_MODEL]}},
            **more,
        }
    )


async def _fallback_trial(config: Config, fail: Callable[[], None]) -> float:
    """Seconds from ``fail()`` (the gateway dies) to the first answer from the direct API."""
    with tempfile.TemporaryDirectory(prefix="omni-bench-") as tmp, Store(Path(tmp) / "s.db") as db:
        faults = FaultHandling(
            config,
            store=db,
            redactor=Redactor([]),
            tasks_root=Path(tmp) / "tasks",
            results_root=Path(tmp) / "results",
            environ={},
        )
        async with faults:
            for _ in range(3):  # warm: litellm loaded, connections open
                await faults.models.complete(MESSAGES, [], CHOICE)
            died: list[float] = []
            answered: list[float] = []

            async def calls() -> None:
                while True:
                    steps: list[GatewayCall] = []
                    await faults.models.complete(MESSAGES, [], CHOICE, on_step=steps.append)
                    if died and steps[-1].via is Via.DIRECT:
                        answered.append(time.perf_counter())
                        return

            loop = asyncio.create_task(calls())
            await asyncio.sleep(random.uniform(0.05, 0.3))
            died.append(time.perf_counter())
            fail()
            await asyncio.wait_for(loop, 30)
            return answered[0] - died[0]


def _left_waiting(state: Path, task_id: str) -> tuple[bool, bool]:
    """Whether the task's run left ``waiting`` (was claimed again), and completed."""
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT r.state FROM events e JOIN runs r USING (run_id)"
            " WHERE r.task_id = ? AND e.from_state = 'waiting'",
            (task_id,),
        ).fetchall()
    return bool(rows), bool(rows) and rows[0][0] == "completed"


async def _until(check: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: condition not reached")
        await asyncio.sleep(0.005)


async def _resume_trial(upstream: ScriptedUpstream) -> tuple[float, float]:
    """Seconds from the upstream's recovery to the waiting run's claim, and to its
    completion (service mode, brainstem)."""
    upstream.script(DIRECT_MODEL, [{"status": 503}])
    with tempfile.TemporaryDirectory(prefix="omni-bench-") as tmp:
        root = Path(tmp)
        paths = ResolvedPaths(
            config=None,
            tasks=root / "tasks",
            results=root / "results",
            state=root / ".omni" / "state.db",
        )
        paths.tasks.mkdir()
        config = _config(
            f"http://127.0.0.1:{free_port()}",
            upstream.url,
            workspace=str(root),
            fault_handler={"check_interval": CHECK_INTERVAL, "consecutive_failures": 1},
            service={"settle_ms": 30},
        )
        service = Service(config, paths, environ={"PATH": os.environ.get("PATH", "")})
        job = asyncio.create_task(service.run())
        await asyncio.wait_for(service.ready.wait(), 30)
        (paths.tasks / "waits.yaml").write_text(f"prompt: hi\nmodel: {GATEWAY_MODEL}\n")

        def waiting() -> bool:
            if not paths.state.exists():
                return False
            with sqlite3.connect(f"file:{paths.state}?mode=ro", uri=True) as conn:
                found = conn.execute("SELECT state FROM runs WHERE task_id = 'waits'").fetchall()
            return found == [("waiting",)]

        await _until(waiting)
        await asyncio.sleep(random.uniform(0, CHECK_INTERVAL))  # any phase of the probes
        upstream.script(DIRECT_MODEL, [{"content": "ok"}])
        recovered = time.perf_counter()
        claimed: list[float] = []

        def progressed() -> bool:
            left, done = _left_waiting(paths.state, "waits")
            if left and not claimed:
                claimed.append(time.perf_counter())
            return done

        await _until(progressed)
        completed = time.perf_counter()
        service.stop("bench over")
        await asyncio.wait_for(job, 30)
        return claimed[0] - recovered, completed - recovered


def _summary(values: list[float], limit: float, *, every: bool = False) -> dict[str, Any]:
    """Median, max and each trial; ``ok``: the median (``every``: each trial) within
    ``limit`` (the bar)."""
    return {
        "median_s": round(statistics.median(values), 3),
        "max_s": round(max(values), 3),
        "trials_s": [round(v, 3) for v in values],
        "bar_s": limit,
        "ok": (max(values) if every else statistics.median(values)) <= limit,
    }


async def main(trials: int) -> dict[str, Any]:
    """Run every measurement; the JSON report."""
    report: dict[str, Any] = {
        "bench": "fallback",
        "machine": f"{os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "trials": trials,
    }
    with ScriptedUpstream() as upstream, KillableProxy(upstream.url) as proxy:
        upstream.script(GATEWAY_MODEL, [{"content": "ok"}])
        upstream.script(DIRECT_MODEL, [{"content": "ok"}])
        config = _config(proxy.url, upstream.url)
        refused = []
        for _ in range(trials):
            refused.append(await _fallback_trial(config, proxy.kill))
            await asyncio.to_thread(proxy.restart)
        hung = []
        for _ in range(trials):
            try:
                hung.append(await _fallback_trial(config, proxy.hang))
            finally:
                proxy.unhang()
        report["refused"] = _summary(refused, BARS_S["refused"])
        report["hung"] = _summary(hung, BARS_S["hung"])
        resumed = [await _resume_trial(upstream) for _ in range(trials)]
        report["resume"] = _summary([r[0] for r in resumed], CHECK_INTERVAL + 1.0, every=True) | {
            "check_interval_s": CHECK_INTERVAL,
            "to_completed_median_s": round(statistics.median(r[1] for r in resumed), 3),
        }
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    print(json.dumps(asyncio.run(main(parser.parse_args().trials)), indent=2))
