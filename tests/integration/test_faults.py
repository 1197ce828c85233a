"""Dual fault handling end to end: a real LiteLLM proxy killed and restarted, a hung
gateway, a slow one, proxy and upstream both down; repair tasks committed to a real git
repository; secrets never written anywhere."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
from typing import TYPE_CHECKING

import pytest

from runner.defs.config import Config
from tests.support.faults import (
    KillableProxy,
    Project,
    SilentGateway,
    SlowBodyGateway,
    fault_config,
    git,
)
from tests.support.planted import ENV_SECRET, SECRET
from tests.support.service import drop, rows, running, wait_for
from tests.support.upstream import ScriptedUpstream, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

PROMPT = "prompt: answer briefly\nmodel: {model}\n"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: ScriptedUpstream) -> Iterator[KillableProxy]:
    """A proxy shared by the tests that keep it alive."""
    with KillableProxy(upstream.url) as started:
        yield started


def config(gateway: str, upstream: ScriptedUpstream, free: list[str], **more: object) -> Config:
    return Config.model_validate(fault_config(gateway, upstream.url, free=free, **more))


def model_calls(result: dict[str, object]) -> list[tuple[str, str]]:
    agent = result["agent"]
    assert isinstance(agent, dict)
    return [(c["model"], c["outcome"]) for c in agent["model_calls"]]


@pytest.mark.soak
@pytest.mark.timeout(150)
async def test_proxy_killed_degrades_commits_repair_task_and_recovers(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    upstream.script("k-gw", [{"content": "from the gateway"}])
    upstream.script("direct-model", [{"content": "from the direct API"}])
    project = Project(tmp_path)
    with KillableProxy(upstream.url) as own:
        # 2 s: a freshly started proxy takes ~1 s over its first completion (the probe's).
        cfg = config(own.url, upstream, ["k-gw"], fault_handler={"lite_llm_timeout": 2.0})
        project.task("before", PROMPT.format(model="k-gw"))
        assert (await project.run(cfg)).exit_code == 0
        assert project.results("before")[0]["mode"] == "normal"

        own.kill()
        for n in range(3):
            project.task(f"during-{n}", PROMPT.format(model="k-gw") + f"description: n{n}\n")
        report = await project.run(cfg)
        assert report.exit_code == 0
        for n in range(3):
            [result] = project.results(f"during-{n}")
            assert (result["state"], result["mode"]) == ("completed", "degraded")
            assert (result["model"], result["output"]) == (
                "github/direct-model",
                "from the direct API",
            )
        calls = [model_calls(project.results(f"during-{n}")[0]) for n in range(3)]
        # Every call the dead gateway refused was retried on the direct API, not lost.
        assert all(c[-1] == ("github/direct-model", "ok") for c in calls)
        assert sum(c.count(("k-gw", "refused")) for c in calls) >= 2
        assert project.modes() == [("normal", "degraded")]
        [repair] = sorted((project.paths.tasks / "repair").glob("gateway-*.yaml"))
        text = repair.read_text()
        assert own.url in text
        assert "claude_code" in text
        # Every refused call is evidence (concurrent ones overlap and count once).
        assert re.search(r"\(\d+ refused\)", text)
        assert "with the backup key (github_key)" in text
        assert "repair task for model gateway fault" in git(tmp_path, "log", "-1", "--format=%s")
        assert git(tmp_path, "status", "--porcelain", "--", "tasks/repair") == ""

        # Still down, next run: the repair task waits (idle, with a note); nothing fails.
        report = await project.run(cfg)
        assert report.exit_code == 0
        [waiting] = project.query("SELECT state, note FROM runs WHERE task_id LIKE 'repair/%'")
        assert waiting["state"] == "idle"
        assert "claude_code, which is not configured" in waiting["note"]
        assert len(list((project.paths.tasks / "repair").glob("*.yaml"))) == 1  # one per fault

        own.restart()
        project.task("after", PROMPT.format(model="k-gw"))
        assert (await project.run(cfg)).exit_code == 0
    assert project.results("after")[0]["mode"] == "normal"
    assert project.modes() == [("normal", "degraded"), ("degraded", "normal")]
    assert "# resolved:" in repair.read_text()
    assert "gateway fault resolved" in git(tmp_path, "log", "-1", "--format=%s")
    [closed] = project.query("SELECT state, note FROM runs WHERE task_id LIKE 'repair/%'")
    assert closed["state"] == "completed"
    assert "fault resolved" in closed["note"]
    # Its records in the results folder (the memory of a CI run): written open, closed.
    opened, result = project.results(f"repair/{repair.stem}")
    assert (opened["state"], opened["fault"]["status"], opened["mode"]) == (
        "waiting",
        "open",
        "degraded",
    )
    assert (result["fault"]["kind"], result["fault"]["status"]) == ("gateway", "resolved")
    assert "Nothing to repair" in result["output"]


async def test_hung_gateway_degrades_after_consecutive_timeouts(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    upstream.script("direct-model", [{"content": "from the direct API"}])
    project = Project(tmp_path, with_git=False)
    with SilentGateway() as hung:
        cfg = config(hung.url, upstream, ["h-gw"], fault_handler={"lite_llm_timeout": 0.3})
        project.task("t", PROMPT.format(model="h-gw"))
        assert (await project.run(cfg)).exit_code == 0
    [result] = project.results("t")
    assert model_calls(result) == [
        ("h-gw", "timeout"),
        ("h-gw", "timeout"),
        ("github/direct-model", "ok"),
    ]
    assert "/health/liveliness did not answer" in str(result["agent"]["model_calls"][0]["error"])
    assert project.modes() == [("normal", "degraded")]
    [why] = project.query("SELECT why FROM modes")
    assert "2 timeout" in why["why"]


async def test_in_process_router_deployments_failing_count_the_same_way(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    upstream.script("direct-model", [{"content": "from the direct API"}])
    project = Project(tmp_path, with_git=False)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    deployment = {
        "model_name": "r-gw",
        "litellm_params": {"model": "openai/r-gw", "api_base": dead, "api_key": SECRET},
    }
    settings = fault_config("", upstream.url, free=["r-gw"], model_list=[deployment])
    settings.pop("lite_llm_url")
    project.task("t", PROMPT.format(model="r-gw"))
    assert (await project.run(Config.model_validate(settings))).exit_code == 0
    [result] = project.results("t")
    calls = model_calls(result)
    # Two failures in a row (refused; or cooling down, once the router benched it).
    assert [model for model, _ in calls] == ["r-gw", "r-gw", "github/direct-model"]
    assert {outcome for _, outcome in calls[:2]} <= {"refused", "cooldown"}
    assert calls[2][1] == "ok"
    assert project.modes() == [("normal", "degraded")]


async def test_slow_but_answering_gateways_stay_normal(
    tmp_path: Path, upstream: ScriptedUpstream, proxy: KillableProxy
) -> None:
    upstream.script("s-gw", [{"content": "slow answer", "delay": 1.0}])
    project = Project(tmp_path, with_git=False)
    # The real proxy sends its headers only with the finished reply; its liveliness vouches.
    project.task("proxy", PROMPT.format(model="s-gw"))
    assert (await project.run(config(proxy.url, upstream, ["s-gw"]))).exit_code == 0
    # A gateway that sends headers at once and the body later, and has no liveliness.
    with SlowBodyGateway(delay=1.0) as slow:
        project.task("body", PROMPT.format(model="s-gw") + "description: b\n")
        assert (await project.run(config(slow.url, upstream, ["s-gw"]))).exit_code == 0
        assert slow.requests == 1
    assert project.results("proxy")[0]["output"] == "slow answer"
    assert project.results("body")[0]["output"] == "slow but here"
    for task_id in ("proxy", "body"):
        assert project.results(task_id)[0]["mode"] == "normal"
    assert project.modes() == []


def claim_order(root: Path) -> list[str]:
    """Task ids in the order their runs left ``waiting`` (claimed again)."""
    import sqlite3  # noqa: PLC0415 # pylint: disable=import-outside-toplevel

    with sqlite3.connect(root / ".omni" / "state.db") as conn:
        found = conn.execute(
            "SELECT r.task_id FROM events e JOIN runs r USING (run_id)"
            " WHERE e.from_state = 'waiting' ORDER BY e.id"
        ).fetchall()
    return [row[0] for row in found]


@pytest.mark.timeout(90)
async def test_brainstem_runs_tools_parks_prompts_and_resumes_them_in_order(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    upstream.script("direct-model", [{"status": 503}])
    dead = f"http://127.0.0.1:{free_port()}"
    sections = fault_config(
        dead,
        upstream.url,
        free=["b-gw"],
        fault_handler={"consecutive_failures": 1, "check_interval": 0.3},
        service={"settle_ms": 30},
        dispatch={"concurrency": 2},
    )
    tasks = tmp_path / "tasks"
    prompts = [f"p{n}" for n in range(5)]
    async with running(tmp_path, **sections):
        for name in prompts:  # one by one: their runs' order is the order they resume in
            drop(tasks / f"{name}.yaml", PROMPT.format(model="b-gw") + f"description: {name}\n")
            await wait_for(lambda n=name: rows(tmp_path, n), what=f"run of {name}")
        for name in ("tool-a", "tool-b"):
            drop(tasks / f"{name}.yaml", f"tool: echo\nargs: {{text: {name}}}\n")

        def states() -> dict[str, str]:
            return {r["task_id"]: r["state"] for r in rows(tmp_path)}

        await wait_for(
            lambda: (
                all(states().get(p) == "waiting" for p in prompts)
                and states().get("tool-a") == states().get("tool-b") == "completed"
            ),
            within=30,
            what="prompt runs waiting, tool runs completed",
        )
        project = Project(tmp_path, with_git=False)
        assert project.modes()[-1] == ("degraded", "brainstem")
        parked = project.results("p0")[0]
        assert (parked["state"], parked["mode"]) == ("waiting", "brainstem")
        assert "brainstem mode" in parked["note"]

        upstream.script("direct-model", [{"content": "back again"}])
        await wait_for(
            lambda: all(states().get(p) == "completed" for p in prompts),
            within=30,
            what="the waiting runs completed",
        )
        await asyncio.sleep(0.5)  # nothing runs twice
    assert claim_order(tmp_path)[: len(prompts)] == prompts
    for name in prompts:
        [result] = project.results(name)
        assert (result["state"], result["output"], result["mode"]) == (
            "completed",
            "back again",
            "degraded",
        )
        [run] = rows(tmp_path, name)
        completions = project.query(
            "SELECT COUNT(*) AS n FROM events WHERE run_id = ? AND to_state = 'completed'",
            (run["run_id"],),
        )
        assert completions[0]["n"] == 1
    assert project.modes()[:3] == [
        ("normal", "degraded"),
        ("degraded", "brainstem"),
        ("brainstem", "degraded"),
    ]


async def test_planted_secrets_never_reach_results_repairs_commits_or_logs(
    tmp_path: Path, upstream: ScriptedUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    upstream.script(
        "direct-model",
        [
            {"tool_calls": [("echo", {"text": f"env {ENV_SECRET} and {SECRET}"})]},
            {"content": f"done: {SECRET} / {ENV_SECRET}"},
        ],
    )
    project = Project(tmp_path)
    # The gateway URL carries the planted secret too: the repair task names the URL.
    dead = f"http://127.0.0.1:{free_port()}/{SECRET}"
    cfg = config(dead, upstream, ["x-gw"], github_key=SECRET)
    project.task("leaky", PROMPT.format(model="x-gw"))
    report = await project.run(cfg, environ={"OMNI_PLANTED_TOKEN": ENV_SECRET})
    assert report.exit_code == 0
    [result] = project.results("leaky")
    assert result["state"] == "completed"
    assert "[redacted]" in result["output"]
    assert len(list((project.paths.tasks / "repair").glob("*.yaml"))) == 1
    history = git(tmp_path, "log", "-p", "--all")
    assert "repair task" in history
    logs = caplog.text
    assert "mode: degraded" in logs
    for secret in (SECRET, ENV_SECRET):
        assert secret not in history
        assert secret not in logs
        assert files_holding(tmp_path, secret) == ""
    assert os.environ.get("OMNI_PLANTED_TOKEN") is None


def files_holding(root: Path, text: str) -> str:
    """Every file under ``root`` (results, tasks, state database, git) holding ``text``."""
    found = subprocess.run(
        ["grep", "-rl", "--binary-files=text", text, str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout
