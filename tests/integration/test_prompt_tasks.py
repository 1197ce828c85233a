"""Prompt tasks end to end: a real LiteLLM proxy (or the in-process router) in front of
the scripted upstream, tool calls on real MCP servers, result files and rows.

The proxy starts once for this module (~10 s); every test scripts its own model names,
so tests never see each other's replies.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from runner.app.once import OnceOptions, OnceReport, run_once
from runner.app.status import status_snapshot
from runner.core.ids import new_run_id
from runner.core.redaction import Redactor
from runner.core.states import RunState
from runner.defs.config import Config
from runner.state.results import RunResult, write_result
from tests.support.paths import SERVERS, paths_under
from tests.support.planted import ENV_SECRET, SECRET
from tests.support.upstream import (
    COMPLETION_TOKENS,
    INPUT_COST,
    MASTER_KEY,
    OUTPUT_COST,
    PROMPT_TOKENS,
    LiteLLMProxy,
    ScriptedUpstream,
    free_port,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration


#: One scripted turn's cost at the proxy's prices.
TURN_COST = PROMPT_TOKENS * INPUT_COST + COMPLETION_TOKENS * OUTPUT_COST
#: Retries without the default backoff's seconds of waiting.
QUICK_RETRY = {"retry_backoff": 0.05, "retry_backoff_max": 0.1}


@pytest.fixture(scope="session")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture(scope="session")
def proxy(upstream: ScriptedUpstream) -> Iterator[LiteLLMProxy]:
    with LiteLLMProxy(upstream.url) as started:
        yield started


def proxy_config(proxy: LiteLLMProxy, **more: Any) -> dict[str, Any]:
    return {"lite_llm_url": proxy.url, "lite_llm_key": MASTER_KEY, **more}


def deployment(name: str, api_base: str, *, upstream_model: str | None = None) -> dict[str, Any]:
    """A model_list entry for the in-process router, priced like the proxy's."""
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"openai/{upstream_model or name}",
            "api_base": api_base,
            "api_key": SECRET,
        },
        "model_info": {"input_cost_per_token": INPUT_COST, "output_cost_per_token": OUTPUT_COST},
    }


class Project:
    """A tasks folder, results folder, state file and workspace in a temp folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workspace = root / "ws"
        self.workspace.mkdir()
        self.paths = paths_under(root)
        self.paths.tasks.mkdir()

    def task(self, text: str, task_id: str = "t") -> None:
        (self.paths.tasks / f"{task_id}.yaml").write_text(text, encoding="utf-8")

    async def run(
        self, config: dict[str, Any], environ: dict[str, str] | None = None
    ) -> OnceReport:
        cfg = Config.model_validate({"workspace": str(self.workspace), **config})
        env = {"PATH": "/usr/bin:/bin", **(environ or {})}
        return await run_once(cfg, self.paths, OnceOptions(), environ=env)

    def result(self, task_id: str = "t") -> dict[str, Any]:
        [path] = sorted((self.paths.results / task_id).glob("*.json"))
        return json.loads(path.read_text(encoding="utf-8"))

    def row(self, task_id: str = "t") -> tuple[Any, ...]:
        with sqlite3.connect(self.paths.state) as db:
            return db.execute(
                "select state, attempt, model, tier, cost_usd from runs where task_id = ?",
                (task_id,),
            ).fetchone()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def tool_call(name: str, args: dict[str, Any] | str) -> dict[str, Any]:
    return {"tool_calls": [(name, args)]}


def tool_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


# --- the happy path, both backends ------------------------------------------------------


async def test_prompt_task_through_the_proxy_calls_tools_and_writes_the_result(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script(
        "e2e-free",
        [
            tool_call("write_file", {"path": "note.txt", "content": "from the model"}),
            tool_call("read_file", {"path": "note.txt"}),
            {"content": "The note says: from the model"},
        ],
    )
    project.task("prompt: write a note, then read it back\nmax_turns: 5\n")
    # The module's first call reaches a cold proxy: on a busy 2-core machine its headers
    # can take longer than the 1 s default, and a retried call would skip a reply.
    config = proxy_config(
        proxy,
        router={"model_tiers": {"free": ["e2e-free"]}},
        fault_handler={"lite_llm_timeout": 10},
    )
    report = await project.run(config)
    assert report.exit_code == 0, report.finished[0].run.error
    result = project.result()
    assert result["state"] == "completed"
    assert result["output"] == "The note says: from the model"
    assert (result["model"], result["tier"], result["executor"]) == ("e2e-free", "free", "builtin")
    assert result["usage"]["input_tokens"] == 3 * PROMPT_TOKENS
    assert result["usage"]["output_tokens"] == 3 * COMPLETION_TOKENS
    assert result["usage"]["cost_usd"] == pytest.approx(3 * TURN_COST)
    agent = result["agent"]
    assert agent["turns"] == 3
    assert [c["name"] for c in agent["tool_calls"]] == ["write_file", "read_file"]
    assert all(c["error"] is None for c in agent["tool_calls"])
    # The model worked in its own workspace: the change is a proposal, and without
    # `pull_request:` it is not published; the real workspace is untouched.
    assert not (project.workspace / "note.txt").exists()
    assert result["changes"]["not_published"] == ["note.txt"]
    assert result["changes"]["patch"] is None
    assert result["sandbox"]["mode"] == "auto"
    # The model saw the builtin tools as functions and got the file's content back.
    first, _, third = upstream.requests("e2e-free")
    offered = {t["function"]["name"] for t in first["tools"]}
    assert offered == {"echo", "read_file", "write_file", "list_dir"}  # `run`: opt-in
    assert "from the model" in tool_messages(third)[-1]
    state, attempt, model, tier, cost = project.row()
    assert (state, attempt, model, tier) == ("completed", 1, "e2e-free", "free")
    assert cost == pytest.approx(3 * TURN_COST)
    [markdown] = (project.paths.results / "t").glob("*.md")
    assert "tokens: 300 in, 60 out" in markdown.read_text()


async def test_prompt_task_through_the_in_process_router(
    project: Project, upstream: ScriptedUpstream
) -> None:
    upstream.script("local-a", [tool_call("echo", {"text": "ping"}), {"content": "pong"}])
    project.task("prompt: echo ping\nmodel: local\ntools: [echo]\n")
    config = {"model_list": [deployment("local", upstream.url, upstream_model="local-a")]}
    report = await project.run(config)
    assert report.exit_code == 0, report.finished[0].run.error
    result = project.result()
    assert (result["output"], result["model"], result["tier"]) == ("pong", "local", "unlisted")
    assert result["usage"]["cost_usd"] == pytest.approx(2 * TURN_COST)
    assert result["agent"]["tool_calls"][0]["arguments"] == {"text": "ping"}
    assert tool_messages(upstream.requests("local-a")[1]) == ["ping"]
    first = upstream.requests("local-a")[0]
    assert [t["function"]["name"] for t in first["tools"]] == ["echo"]  # `tools:` filter


async def test_a_prompt_task_offering_no_tools_starts_no_executor(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script("no-tools", [{"content": "answered without tools"}])
    project.task("prompt: just answer\nmodel: no-tools\ntools: []\nexecutor: never\n")
    never = {"command": str(project.root / "no-such-program")}  # would fail to start
    report = await project.run(proxy_config(proxy, mcp_servers={"never": never}))
    assert report.exit_code == 0, report.finished[0].run.error
    assert project.result()["output"] == "answered without tools"
    assert "tools" not in upstream.requests("no-tools")[0]


async def test_run_is_offered_only_when_listed_and_refused_otherwise(
    project: Project, upstream: ScriptedUpstream
) -> None:
    upstream.script("opt-in", [tool_call("run", {"command": "id"}), {"content": "no run"}])
    project.task("prompt: run id\nmodel: local\n")
    config = {"model_list": [deployment("local", upstream.url, upstream_model="opt-in")]}
    assert (await project.run(config)).exit_code == 0
    [call] = project.result()["agent"]["tool_calls"]
    assert call["name"] == "run"
    assert "offered only when the task lists it in `tools:`" in call["error"]
    upstream.script("opt-in", [{"content": "fine"}])
    project.task("prompt: run id\nmodel: local\ntools: [run, echo]\n")
    assert (await project.run(config)).exit_code == 0
    offered = [t["function"]["name"] for t in upstream.requests("opt-in")[0]["tools"]]
    assert offered == ["echo", "run"]


async def test_tool_results_are_redacted_before_the_model_sees_them(
    project: Project, upstream: ScriptedUpstream
) -> None:
    encoded = base64.b64encode(f"KEY={ENV_SECRET}".encode()).decode()
    upstream.script(
        "sees",
        [
            tool_call("echo", {"text": f"plain {ENV_SECRET}"}),
            tool_call("echo", {"text": encoded}),
            tool_call("echo", {"text": ENV_SECRET.encode().hex()}),
            {"content": "done"},
        ],
    )
    project.task("prompt: echo things\nmodel: local\n")
    config = {"model_list": [deployment("local", upstream.url, upstream_model="sees")]}
    report = await project.run(config, {"OMNI_TEST_TOKEN": ENV_SECRET})
    assert report.exit_code == 0
    seen = [tool_messages(r)[-1] for r in upstream.requests("sees")[1:]]
    assert seen[0] == "plain [redacted]"
    assert "[redacted]" in seen[1]
    assert seen[2] == "[redacted]"
    for text in seen:
        assert ENV_SECRET not in text and ENV_SECRET.encode().hex() not in text


# --- tiers ---------------------------------------------------------------------------------


async def test_failing_free_model_falls_back_to_paid_under_free_then_paid(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script("tier-free", [{"status": 500}])
    upstream.script("tier-paid", [{"content": "paid answer"}])
    project.task("prompt: answer\nmodel: free_then_paid\n")
    tiers = {"free": ["tier-free"], "paid": ["tier-paid"]}
    report = await project.run(proxy_config(proxy, router={"model_tiers": tiers}))
    assert report.exit_code == 0
    result = project.result()
    assert (result["model"], result["tier"]) == ("tier-paid", "paid")
    assert result["output"] == "paid answer"
    steps = [(c["model"], c["tier"], c["outcome"]) for c in result["agent"]["model_calls"]]
    assert steps == [("tier-free", "free", "server_error"), ("tier-paid", "paid", "ok")]
    assert project.row()[2:4] == ("tier-paid", "paid")


async def test_failing_free_model_fails_the_run_under_free(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script("tier2-free", [{"status": 400}])
    upstream.script("tier2-paid", [{"content": "never asked"}])
    project.task("prompt: answer\nmodel: free\n")
    tiers = {"free": ["tier2-free"], "paid": ["tier2-paid"]}
    report = await project.run(proxy_config(proxy, router={"model_tiers": tiers}))
    assert report.exit_code == 1
    result = project.result()
    assert result["state"] == "failed"
    assert "tier2-free" in result["error"]
    assert "rejected" in result["error"]
    assert upstream.requests("tier2-paid") == []


async def test_dead_free_deployment_is_skipped_in_process(
    project: Project, upstream: ScriptedUpstream
) -> None:
    upstream.script("alive-paid", [{"content": "from paid"}])
    dead = f"http://127.0.0.1:{free_port()}/v1"
    project.task("prompt: answer\n")
    config = {
        "model_list": [deployment("dead-free", dead), deployment("alive-paid", upstream.url)],
        "router": {"model_tiers": {"free": ["dead-free"], "paid": ["alive-paid"]}},
    }
    report = await project.run(config)
    assert report.exit_code == 0
    result = project.result()
    assert (result["model"], result["tier"]) == ("alive-paid", "paid")
    outcomes = [c["outcome"] for c in result["agent"]["model_calls"]]
    assert outcomes == ["refused", "ok"]


# --- bad model replies -----------------------------------------------------------------------


async def test_tool_outside_tools_is_refused_and_the_model_is_told(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script(
        "bad-scope",
        [tool_call("write_file", {"path": "x.txt", "content": "no"}), {"content": "gave up"}],
    )
    project.task("prompt: try to write\nmodel: bad-scope\ntools: [echo, read_file]\n")
    assert (await project.run(proxy_config(proxy))).exit_code == 0
    result = project.result()
    assert result["output"] == "gave up"
    [call] = result["agent"]["tool_calls"]
    assert call["name"] == "write_file"
    assert "not allowed for this task" in call["error"]
    told = tool_messages(upstream.requests("bad-scope")[1])
    assert told[0].startswith("error: tool 'write_file' is not allowed")
    assert "echo, read_file" in told[0]
    assert not (project.workspace / "x.txt").exists()


async def test_malformed_arguments_and_unknown_tools_are_told_to_the_model(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script(
        "bad-args",
        [
            tool_call("echo", '{"text": "unterminated'),
            tool_call("no_such_tool", {}),
            tool_call("echo", {"wrong": 1}),
            {"content": "done anyway"},
        ],
    )
    project.task("prompt: misbehave\nmodel: bad-args\n")
    assert (await project.run(proxy_config(proxy))).exit_code == 0
    result = project.result()
    assert result["state"] == "completed"
    errors = [c["error"] for c in result["agent"]["tool_calls"]]
    assert "not valid JSON" in errors[0]
    assert "does not exist" in errors[1]
    assert "missing required argument" in errors[2]
    assert result["agent"]["tool_calls"][0]["arguments"] == '{"text": "unterminated'
    requests = upstream.requests("bad-args")
    assert "not valid JSON" in tool_messages(requests[1])[0]
    assert "does not exist" in tool_messages(requests[2])[-1]


async def test_endless_tool_calls_stop_at_max_turns_and_fail(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script("loop", [tool_call("echo", {"text": "again"})])
    project.task("prompt: loop forever\nmodel: loop\nmax_turns: 3\nretries: 2\n")
    report = await project.run(proxy_config(proxy))
    assert report.exit_code == 1
    result = project.result()
    assert result["state"] == "failed"
    assert "max_turns=3" in result["error"]
    assert "echo" in result["error"]
    assert result["agent"]["turns"] == 3
    assert len(upstream.requests("loop")) == 3
    assert project.row()[:2] == ("failed", 1)  # a loop is not retried


async def test_empty_reply_fails_with_a_clear_reason(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script("empty", [{"content": ""}])
    project.task("prompt: say nothing\nmodel: empty\n")
    assert (await project.run(proxy_config(proxy))).exit_code == 1
    result = project.result()
    assert "empty reply" in result["error"]
    assert result["agent"]["model_calls"][0]["outcome"] == "bad_reply"


async def test_a_rejected_call_fails_the_run_after_its_retries_each_error_kept(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script(
        "broken",
        [{"status": 400, "message": "first cause"}, {"status": 400, "message": "second"}],
    )
    project.task("prompt: anything\nmodel: broken\nretries: 1\n")
    assert (await project.run(proxy_config(proxy, dispatch=QUICK_RETRY))).exit_code == 1
    result = project.result()
    assert result["state"] == "failed"
    assert result["attempt"] == 2  # a model error may pass: it was retried
    assert "rejected" in result["error"]
    assert "second" in result["error"]
    # Every attempt's error is kept: the first cause is not lost behind the last one.
    errors = [(a["attempt"], a["error"]) for a in result["attempts"]]
    assert [n for n, _ in errors] == [1, 2]
    assert "first cause" in errors[0][1]
    assert "second" in errors[1][1]
    [markdown] = (project.paths.results / "t").glob("*.md")
    assert "first cause" in markdown.read_text()
    assert len(upstream.requests("broken")) == 2


async def test_a_hung_model_is_cut_by_the_task_timeout(
    project: Project, upstream: ScriptedUpstream
) -> None:
    upstream.script("hung", [{"delay": 3, "content": "too late"}])
    project.task("prompt: wait\nmodel: hung\ntimeout: 0.5\n")
    report = await project.run({"model_list": [deployment("hung", upstream.url)]})
    assert report.exit_code == 1
    assert "timed out after 0.5 s" in project.result()["error"]


# --- budget ------------------------------------------------------------------------------------


async def test_per_run_cap_stops_the_run(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script("spender", [tool_call("echo", {"text": "x"})] * 4 + [{"content": "done"}])
    project.task("prompt: spend\nmodel: spender\n")
    budget = {"per_run_usd": 1.5 * TURN_COST}
    report = await project.run(proxy_config(proxy, router={"budget": budget}))
    assert report.exit_code == 1
    result = project.result()
    assert "run budget passed" in result["error"]
    assert result["agent"]["turns"] == 2
    assert result["usage"]["cost_usd"] == pytest.approx(2 * TURN_COST)
    assert project.row()[4] == pytest.approx(2 * TURN_COST)


async def test_a_retried_runs_row_counts_every_attempts_spend(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    upstream.script(
        "retry-cost", [tool_call("echo", {"text": "x"}), {"status": 400}, {"content": "done"}]
    )
    project.task("prompt: spend twice\nmodel: retry-cost\nretries: 1\n")
    assert (await project.run(proxy_config(proxy, dispatch=QUICK_RETRY))).exit_code == 0
    result = project.result()
    assert (result["attempt"], result["output"]) == (2, "done")
    assert result["usage"]["cost_usd"] == pytest.approx(TURN_COST)  # this attempt's
    assert project.row()[4] == pytest.approx(2 * TURN_COST)  # both attempts'


async def test_daily_cap_counts_todays_result_files_without_a_store(
    project: Project, upstream: ScriptedUpstream, proxy: LiteLLMProxy
) -> None:
    now = datetime.now(UTC)
    earlier = RunResult(
        task_id="other",
        run_id=new_run_id(now),
        task_hash="h",
        state=RunState.COMPLETED,
        attempt=1,
        started_at=now.isoformat().replace("+00:00", "Z"),
        finished_at=now.isoformat().replace("+00:00", "Z"),
        duration_s=1.0,
        usage={"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.75},
    )
    write_result(project.paths.results, earlier, Redactor([]))
    upstream.script("daily", [{"content": "never asked"}])
    project.task("prompt: spend more\nmodel: daily\n")
    config = proxy_config(proxy, router={"budget": {"per_day_usd": 0.5, "per_run_usd": 0.1}})
    assert (await project.run(config)).exit_code == 1
    result = project.result()
    assert "daily budget reached" in result["error"]
    assert upstream.requests("daily") == []
    snap = status_snapshot(Config.model_validate(config), project.paths)
    assert snap["spend_today_usd"] == pytest.approx(0.75)
    assert snap["budget"] == {"per_run_usd": 0.1, "per_day_usd": 0.5}


# --- executors with an agent tool, and runs that need no model ---------------------------------


async def test_agent_tool_gets_the_prompt_without_a_model(project: Project) -> None:
    project.task("prompt: do it all yourself\nexecutor: agent\n")
    server = {
        "command": sys.executable,
        "args": [str(SERVERS), "stdio"],
        "agent_tool": "echo",
        "sandbox_paths": [str(SERVERS.parent)],  # a sandboxed start reads only what it names
    }
    report = await project.run({"mcp_servers": {"agent": server}})
    assert report.exit_code == 0
    result = project.result()
    assert (result["output"], result["tool"], result["model"]) == (
        "do it all yourself",
        "echo",
        None,
    )
    assert result["agent"]["agent_tool"] == "echo"


def test_tool_only_run_once_never_imports_litellm(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.yaml").write_text("tool: echo\nargs: {text: hi}\n")
    (tmp_path / "tasks" / "p.yaml").write_text("prompt: waits, no model configured\n")
    # The real entry point with real stdio (the stdio executor needs file descriptors).
    code = (
        "import sys\n"
        "from runner.cli.main import main\n"
        "sys.argv = ['omni', 'run', '--once']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'litellm'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert list((tmp_path / "results" / "a").glob("*.json"))


# --- validate --deep asks the proxy for its models (issue 15) ---------------------------


def test_validate_deep_asks_the_proxy_which_models_it_serves(
    tmp_path: Path, proxy: LiteLLMProxy
) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "think.yaml").write_text("prompt: hi\nmodel: any-model\n")
    (tmp_path / "config.yaml").write_text(
        f"lite_llm_url: {proxy.url}\nlite_llm_key: {MASTER_KEY}\n", encoding="utf-8"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "runner", "validate", "--deep", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    data = json.loads(done.stdout)
    # The test proxy serves every name through its `*` deployment: any-model resolves.
    assert (done.returncode, data["problems"]) == (0, [])
    assert data["models"].startswith("ok: ")
    (tmp_path / "config.yaml").write_text(
        "lite_llm_url: http://127.0.0.1:9\n", encoding="utf-8"
    )  # nothing listens there
    down = subprocess.run(
        [sys.executable, "-m", "runner", "validate", "--deep", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (
        json.loads(down.stdout)["models"] == "model: cannot list the proxy's models: ConnectError"
    )
