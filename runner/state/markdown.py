"""The reviewer's view of a result: ``<run-id>.md``, rendered from the result's data."""

from __future__ import annotations

import json
from typing import Any


def render_markdown(data: dict[str, Any]) -> str:
    """The reviewer's view of a result: a heading, the facts, the output or the error."""
    icon = {"completed": "✅", "failed": "❌", "waiting": "⏸️"}.get(data["state"], "•")
    lines = [
        f"# {icon} {data['task_id']} — {data['state']}",
        "",
        f"- run: `{data['run_id']}` (attempt {data['attempt']})",
        f"- executor: `{data.get('executor')}`"
        + (f", tool `{data['tool']}`" if data.get("tool") else ""),
    ]
    if data.get("model"):
        lines.append(f"- model: `{data['model']}` ({data.get('tier')}), mode {data.get('mode')}")
    if data.get("slot"):
        lines.append(f"- slot: {data['slot']}")
    lines.append(f"- started {data['started_at']}, took {data['duration_s']:.2f} s")
    usage = data.get("usage") or {}
    if usage.get("input_tokens") or usage.get("output_tokens"):
        cost = usage.get("cost_usd")
        lines.append(
            f"- tokens: {usage['input_tokens']} in, {usage['output_tokens']} out; cost "
            + (f"${cost:.6f}" if cost is not None else "unknown")
        )
    lines += _agent_lines(data.get("agent"))
    lines += _sandbox_lines(data.get("sandbox"))
    lines += _change_lines(data.get("changes"))
    if data.get("error"):
        lines += ["", "## Error", "", "```text", str(data["error"]), "```"]
    attempts = data.get("attempts")
    if isinstance(attempts, list) and attempts:
        lines += ["", "## Attempts", ""]
        lines += [
            f"- attempt {a.get('attempt')}: {a.get('error') or 'no error'}"
            for a in attempts
            if isinstance(a, dict)
        ]
    output = data.get("output")
    if output not in (None, ""):
        body = output if isinstance(output, str) else json.dumps(output, indent=2)
        lines += ["", "## Output", "", "```text", body, "```"]
    return "\n".join(lines) + "\n"


def _agent_lines(agent: Any) -> list[str]:
    """A prompt run's turns, fallback steps and tool calls, for the reviewer."""
    if not isinstance(agent, dict):
        return []
    calls = agent.get("tool_calls") or []
    lines = [f"- agent: {agent.get('turns', 0)} model turn(s), {len(calls)} tool call(s)"]
    for step in agent.get("model_calls") or []:
        if step.get("error"):
            lines.append(
                f"  - model `{step['model']}` ({step['tier']}): {step['outcome']} — {step['error']}"
            )
    for call in calls:
        note = f" — {call['error']}" if call.get("error") else ""
        lines.append(f"  - turn {call['turn']}: `{call['name']}` {call['duration_s']:.3f} s{note}")
    return lines


def _sandbox_lines(sandbox: Any) -> list[str]:
    """How a model-driven run was confined; a warning when it was not."""
    if not isinstance(sandbox, dict):
        return []
    lines = [f"- sandbox: {sandbox.get('kind')} (sandbox: {sandbox.get('mode')})"]
    if sandbox.get("warning"):
        lines.append(f"  - ⚠️ {sandbox['warning']}")
    if sandbox.get("note"):
        lines.append(f"  - {sandbox['note']}")
    return lines


def _change_lines(changes: Any) -> list[str]:
    """A model-driven run's proposed change: the patch's files, refused and unpublished
    paths."""
    if not isinstance(changes, dict):
        return []
    files = changes.get("files") or []
    refused = changes.get("refused") or []
    dropped = changes.get("not_published") or []
    if not (files or refused or dropped):
        return ["- changes: none"]
    lines = ["", "## Proposed change", ""]
    if changes.get("patch"):
        lines.append(f"`{changes['patch']}` changes {len(files)} file(s):")
        lines += [f"- `{path}`" for path in files]
    if refused:
        lines += ["", "Refused (never in a patch):"]
        lines += [f"- `{item.get('path')}`: {item.get('reason')}" for item in refused]
    if dropped:
        why = changes.get("note") or "the task has no `pull_request:`"
        lines += ["", f"Not published ({why}):"]
        lines += [f"- `{path}`" for path in dropped]
    return lines
