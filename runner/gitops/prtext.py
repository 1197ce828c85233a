"""A task pull request's title and body: what the task asked, what the model did, the
run's result, the files in the change and the paths refused.

Everything quoted from a run (the model's answer, tool errors) is data, shown in fenced
blocks long enough that it cannot close them, and passes the redactor first.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.core.redaction import Redactor
    from runner.defs.tasks import TaskSpec

#: Characters of the model's answer quoted in the body.
OUTPUT_CHARS = 4000


def title(task_id: str, spec: TaskSpec | None) -> str:
    """``pull_request.title``, else ``omni: <task id>``."""
    pull = spec.pull_request if spec is not None else None
    return (pull.title if pull is not None and pull.title else f"omni: {task_id}")[:200]


def fenced(text: str, language: str = "text") -> list[str]:
    """``text`` in a fenced code block whose fence is longer than any run of backticks in
    it, so the text cannot close it: inside, nothing renders, links and mentions too."""
    fence = "```"
    while fence in text:
        fence += "`"
    return [f"{fence}{language}", text, fence]


def body(
    task_id: str,
    spec: TaskSpec | None,
    result: dict[str, Any],
    *,
    branch: str,
    results_path: str,
    redactor: Redactor,
) -> str:
    """The Markdown body of ``task_id``'s pull request from its newest published run."""
    lines = [
        f"## omni: `{task_id}`",
        "",
        f"This pull request is `{branch}`: the base branch plus the change the task's newest"
        " run proposed. omni rebuilds it on every run of the task; review it like any other.",
        "",
        "### What the task asked",
        "",
    ]
    if spec is not None and spec.prompt is not None:
        lines += fenced(spec.prompt.strip())
    elif spec is not None:
        lines += fenced(json.dumps({"tool": spec.tool, "args": spec.args}, indent=2), "json")
    else:
        lines.append("(the task file is gone)")
    lines += ["", "### What the model did", ""]
    lines += _did(result)
    lines += ["", "### The run's result", ""]
    lines.append(
        f"Run `{result.get('run_id')}` ({result.get('state')}, attempt {result.get('attempt')},"
        f" finished {result.get('finished_at')}); full record: `{results_path}`."
    )
    output = result.get("output")
    if output not in (None, ""):
        text = output if isinstance(output, str) else json.dumps(output, indent=2)
        lines += ["", *fenced(text[:OUTPUT_CHARS])]
    lines += _changes(result.get("changes") or {})
    sandbox = result.get("sandbox") or {}
    if sandbox.get("warning"):
        lines += ["", f"> ⚠️ {sandbox['warning']}"]
    return redactor.text("\n".join(lines) + "\n")


def _did(result: dict[str, Any]) -> list[str]:
    agent = result.get("agent") or {}
    calls = agent.get("tool_calls") or []
    if not agent:
        return [f"A tool call: `{result.get('executor')}.{result.get('tool')}` (no model)."]
    lines = [
        f"Model `{result.get('model')}` ({result.get('tier')}), {agent.get('turns', 0)} turn(s),"
        f" {len(calls)} tool call(s):"
    ]
    for call in calls[:50]:
        note = f" — refused or failed: {call['error']}" if call.get("error") else ""
        lines.append(f"- turn {call.get('turn')}: `{call.get('name')}`{note[:300]}")
    if len(calls) > 50:
        lines.append(f"- … and {len(calls) - 50} more")
    return lines


def _changes(changes: dict[str, Any]) -> list[str]:
    lines = ["", "### Files in this change", ""]
    lines += [f"- `{path}`" for path in changes.get("files") or []] or ["(none)"]
    refused = changes.get("refused") or []
    if refused:
        lines += ["", "### Refused (never in this change)", ""]
        lines += [f"- `{item.get('path')}`: {item.get('reason')}" for item in refused]
    return lines
