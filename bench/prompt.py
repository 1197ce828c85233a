"""Bench: prompt tasks through the LiteLLM proxy, warm and cold (DESIGN §6; issue 4's
warm bar: the runner adds at most 50 ms, median; issue 14's cold bar: a fresh
``omni run --once`` with one prompt task through the proxy takes at most 1.5 s over the
model's own time, median of 5).

Starts the scripted upstream and a real ``litellm`` proxy on 127.0.0.1 (the tests'
helpers in ``tests/support/upstream.py``), then:

- ``warm``: alternates, in this process, a one-turn prompt task through the runner
  (create the run row, then ``Dispatcher.run``: claim, route, model choice, the agent's
  turn through ``LlmClient`` and the proxy, result files, rows; warm built-in executor,
  warm client) and the same request straight to the proxy with the ``openai`` client;
- ``cold``: ``omni run --once`` as a fresh process (the installed console script) in a
  new project with one prompt task, ``--cold-runs`` times: wall time, the upstream's own
  time (from reading the request to sending the reply), the model call as omni saw it
  (the proxy included), and whether the process loaded LiteLLM (it must not). Three
  shapes: ``tools: [echo]`` with a model that answers at once (the built-in's tools are
  offered from its catalog: no executor starts), ``tools: []`` (no tools offered), and,
  outside the bar, ``tools: [echo]`` with a model that calls ``echo`` once (the run's
  own workspace and sandboxed executor start, and close).

Prints one JSON object. ``uv run python bench/prompt.py [--runs 60] [--cold-runs 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from openai import AsyncOpenAI

from runner.core.redaction import Redactor
from runner.core.states import RunState
from runner.defs.config import BUILTIN, Config
from runner.defs.tasks import load_task_file
from runner.dispatch.agent import SYSTEM_PROMPT, Agent
from runner.dispatch.dispatcher import Dispatcher
from runner.reach.executors import ExecutorPool
from runner.reach.modelclient import LlmClient
from runner.state.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# pylint: disable-next=wrong-import-position  # the tests' helpers, from the repository root
from tests.support.upstream import MASTER_KEY, LiteLLMProxy, ScriptedUpstream

WARM_BAR_MS = 50.0
COLD_BAR_S = 1.5
MODEL = "bench-model"
#: Calls ``echo`` once, then answers: a cold run that starts its own executor.
TOOL_MODEL = "bench-tool-model"
PROMPT = "Say ok."
#: Prints which litellm modules the fresh process loaded, after omni's own main().
_CHILD = """\
import json, sys
from runner.cli.entry import main
sys.argv = ["omni", "run", "--once"]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "litellm")
sys.stderr.write("\\nlitellm-modules " + json.dumps(loaded) + "\\n")
sys.exit(code)
"""


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
                    messages=messages,  # type: ignore[arg-type]
                    tools=tools,  # type: ignore[arg-type]
                )
                took = time.perf_counter() - started
                if reply.choices[0].message.content != "ok":
                    raise RuntimeError(f"unexpected reply: {reply}")
                return took

            for _ in range(5):  # warm-up: connections, the proxy's caches
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
        "bar_ms": WARM_BAR_MS,
        "ok": added <= WARM_BAR_MS,
    }


def _echo_once(body: dict[str, Any]) -> dict[str, Any]:
    """The tool model's reply: an ``echo`` call, then (after its result) an answer."""
    if any(m.get("role") == "tool" for m in body["messages"]):
        return {"content": "ok"}
    return {"tool_calls": [("echo", {"text": "hi"})]}


def _cold_run(
    upstream: ScriptedUpstream, proxy: LiteLLMProxy, tools: str, model: str
) -> dict[str, Any]:
    """One fresh ``omni run --once`` over a new project with one prompt task."""
    with tempfile.TemporaryDirectory(prefix="omni-bench-cold-") as tmp:
        root = Path(tmp)
        (root / "tasks").mkdir()
        (root / "tasks" / "cold.yaml").write_text(
            f"prompt: {PROMPT}\nmodel: {model}\ntools: {tools}\n"
        )
        config = {"lite_llm_url": proxy.url, "lite_llm_key": MASTER_KEY}
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        env = {"PATH": os.environ["PATH"], "HOME": tmp}
        busy = upstream.busy_s
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _CHILD],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"omni run --once failed: {done.stderr[-2000:]}")
        [result_file] = (root / "results" / "cold").glob("*.json")
        result = json.loads(result_file.read_text())
        if result["state"] != "completed":
            raise RuntimeError(f"the cold run did not complete: {result}")
        marker = [line for line in done.stderr.splitlines() if line.startswith("litellm-modules")]
        own = upstream.busy_s - busy
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        call = sum(c["duration_s"] for c in result["agent"]["model_calls"])
        return {
            "wall_s": wall,
            "upstream_s": own,
            "over_model_s": wall - own,
            "model_call_s": call,
            "cpu_s": cpu,
            "litellm_loaded": json.loads(marker[-1].split(" ", 1)[1]) if marker else None,
        }


def cold(runs: int, upstream: ScriptedUpstream, proxy: LiteLLMProxy) -> dict[str, Any]:
    """``runs`` fresh processes for each task shape; medians and each run."""
    figures: dict[str, Any] = {"runs": runs, "bar_s": COLD_BAR_S}
    shapes = (
        ("with_builtin_tools", "[echo]", MODEL),
        ("no_tools", "[]", MODEL),
        ("calls_a_tool", "[echo]", TOOL_MODEL),
    )
    for name, tools, model in shapes:
        trials = [_cold_run(upstream, proxy, tools, model) for _ in range(runs)]

        def median(key: str, of: list[dict[str, Any]] = trials) -> float:
            return round(statistics.median(t[key] for t in of), 3)

        over = median("over_model_s")
        figures[name] = {
            "over_model_median_s": over,
            "wall_median_s": median("wall_s"),
            "upstream_median_s": median("upstream_s"),
            "model_call_median_s": median("model_call_s"),
            "cpu_median_s": median("cpu_s"),
            "over_model_s": [round(t["over_model_s"], 3) for t in trials],
            "litellm_loaded": sorted({m for t in trials for m in t["litellm_loaded"] or []}),
            "ok": over <= COLD_BAR_S and not any(t["litellm_loaded"] for t in trials),
        }
    figures["calls_a_tool"]["bar_applies"] = False  # the bar is a model that needs no tool
    return figures


def main() -> None:
    """Parse arguments, start the upstream and the proxy, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--cold-runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with (
        tempfile.TemporaryDirectory(prefix="omni-bench-prompt-") as tmp,
        ScriptedUpstream() as upstream,
    ):
        upstream.script(MODEL, [{"content": "ok"}])
        upstream.script(TOOL_MODEL, [_echo_once])
        started = time.perf_counter()
        with LiteLLMProxy(upstream.url) as proxy:
            proxy_ready_s = time.perf_counter() - started
            figures: dict[str, Any] = {"warm": asyncio.run(measure(args.runs, proxy, Path(tmp)))}
            figures["cold"] = cold(args.cold_runs, upstream, proxy)
    figures |= {
        "proxy_ready_s": round(proxy_ready_s, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
