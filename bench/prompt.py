"""Bench: a one-turn prompt task through the runner vs the same request straight to the
LiteLLM proxy with the ``openai`` client (DESIGN §6 / issue 4 bar: the runner adds at
most 50 ms, median).

Starts the scripted upstream and a real ``litellm`` proxy on 127.0.0.1 (the test
helpers in ``tests/integration/llm_upstream.py``), warms both paths, then alternates:

- ``runner``: create a run row, then ``Dispatcher.run`` (claim, route, model choice,
  the agent's one model turn through ``LlmClient``, result files, rows) on a warm
  built-in executor and a warm client;
- ``direct``: ``AsyncOpenAI.chat.completions.create`` to the proxy with the same
  messages and tools.

Prints one JSON object. ``uv run python bench/prompt.py [--runs 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from runner.core.redaction import Redactor
from runner.core.states import RunState
from runner.defs.config import BUILTIN, Config
from runner.defs.tasks import load_task_file
from runner.dispatch.agent import SYSTEM_PROMPT, Agent
from runner.dispatch.dispatcher import Dispatcher
from runner.reach.executors import ExecutorPool
from runner.reach.llm import LlmClient
from runner.state.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
# pylint: disable-next=wrong-import-position,wrong-import-order,import-error  # tests helper
from llm_upstream import MASTER_KEY, LiteLLMProxy, ScriptedUpstream

BAR_MS = 50.0
MODEL = "bench-model"
PROMPT = "Say ok."


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
    }


async def measure(runs: int, proxy: LiteLLMProxy, root: Path) -> dict[str, Any]:
    """Alternate runner and direct requests ``runs`` times each, after a warm-up."""
    config = Config.model_validate(
        {"lite_llm_url": proxy.url, "lite_llm_key": MASTER_KEY, "workspace": str(root)}
    )
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "one-turn.yaml").write_text(f"prompt: {PROMPT}\nmodel: {MODEL}\ntools: [echo]\n")
    task = load_task_file(tasks / "one-turn.yaml", tasks, 1_048_576)
    redactor = Redactor([MASTER_KEY])
    direct = AsyncOpenAI(base_url=proxy.url, api_key=MASTER_KEY, max_retries=0)
    runner_s: list[float] = []
    direct_s: list[float] = []
    with Store(root / "state.db") as store:
        async with (
            ExecutorPool({}, workspace=root) as pool,
            LlmClient(config) as llm,
        ):
            tools = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                }
                for t in await pool.list_tools(BUILTIN)
                if t.name == "echo"
            ]
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT.format(task_id=task.id)},
                {"role": "user", "content": PROMPT},
            ]
            dispatcher = Dispatcher(
                store=store,
                pool=pool,
                config=config,
                results_root=root / "results",
                redactor=redactor,
                agent=Agent(llm=llm, pool=pool, config=config, redactor=redactor),
            )

            async def through_runner() -> float:
                started = time.perf_counter()
                run = store.create_run(task.id, task.task_hash, max_attempts=1)
                finished = await dispatcher.run(task, run)
                took = time.perf_counter() - started
                if finished.run.state is not RunState.COMPLETED:
                    raise RuntimeError(f"runner run failed: {finished.run.error}")
                return took

            async def straight() -> float:
                started = time.perf_counter()
                reply = await direct.chat.completions.create(
                    model=MODEL,
                    messages=messages,
                    tools=tools,  # type: ignore[arg-type]
                )
                took = time.perf_counter() - started
                if reply.choices[0].message.content != "ok":
                    raise RuntimeError(f"unexpected reply: {reply}")
                return took

            for _ in range(5):  # warm-up: litellm import, connections, the proxy's caches
                await through_runner()
                await straight()
            for _ in range(runs):
                runner_s.append(await through_runner())
                direct_s.append(await straight())
    await direct.close()
    added = (statistics.median(runner_s) - statistics.median(direct_s)) * 1000
    return {
        "runs": runs,
        "runner": _ms(runner_s),
        "direct": _ms(direct_s),
        "added_median_ms": round(added, 2),
        "bar_ms": BAR_MS,
        "ok": added <= BAR_MS,
    }


def main() -> None:
    """Parse arguments, start the upstream and the proxy, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with (
        tempfile.TemporaryDirectory(prefix="omni-bench-prompt-") as tmp,
        ScriptedUpstream() as upstream,
    ):
        upstream.script(MODEL, [{"content": "ok"}])
        started = time.perf_counter()
        with LiteLLMProxy(upstream.url) as proxy:
            proxy_ready_s = time.perf_counter() - started
            figures = asyncio.run(measure(args.runs, proxy, Path(tmp)))
    figures |= {
        "proxy_ready_s": round(proxy_ready_s, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
