"""Result files: ``results/<task-id>/<run-id>.json`` and ``.md`` (DESIGN §4).

Written atomically (temp file + rename) and *before* the run's row, so a result file
on disk is the proof that a run completed: ``resume()`` trusts it after a crash.
Everything written passes through a :class:`Redactor` first.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from runner.core.states import Mode, RunState

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REDACTED = "[redacted]"


def new_run_id(now: datetime) -> str:
    """A 26-character ULID-like id: 48 bits of milliseconds, then 80 random bits.

    Ids sort by creation time (to the millisecond) and are unique without a database,
    so two CI shards never collide.
    """
    value = (int(now.timestamp() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class Usage(BaseModel):
    """Tokens and cost of a run's model calls (empty for tool tasks)."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = 0
    """Prompt tokens over all model calls."""
    output_tokens: int = 0
    """Completion tokens over all model calls."""
    cost_usd: float | None = None
    """Cost where LiteLLM knows the price; ``None`` when unknown."""


class RunResult(BaseModel):
    """The content of ``<run-id>.json``; the field names are a contract (DESIGN §4)."""

    model_config = ConfigDict(extra="allow")

    task_id: str
    run_id: str
    task_hash: str
    slot: str | None = None
    """The schedule time the run served (ISO 8601); ``None`` for one-off tasks."""
    state: RunState
    attempt: int
    executor: str | None = None
    tool: str | None = None
    model: str | None = None
    tier: str | None = None
    mode: Mode = Mode.NORMAL
    started_at: str
    finished_at: str
    duration_s: float
    output: Any = None
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)


class Redactor:
    """Replaces every known secret value with ``[redacted]`` in text and JSON data."""

    def __init__(self, secret_values: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._values = sorted({v for v in secret_values if len(v) >= 4}, key=len, reverse=True)
        # JSON escapes character by character, so a string holding a secret serializes
        # to text holding the secret's escaped form.
        self._in_json = [to_json(v)[1:-1] for v in self._values]

    def in_json(self, text: bytes) -> bool:
        """True if serialized JSON ``text`` may hold a secret (then redact the data)."""
        return any(escaped in text for escaped in self._in_json)

    def text(self, value: str) -> str:
        """``value`` with every secret replaced."""
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def data(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` with every secret in every string replaced."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes, with a note saying how much was cut."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    kept = raw[:limit].decode("utf-8", errors="ignore")
    return f"{kept}\n[output truncated: {len(raw):,} bytes, kept the first {limit:,}]"


def result_dir(results_root: Path, task_id: str) -> Path:
    """The folder holding a task's results; ``/`` in the id nests folders."""
    return results_root.joinpath(*task_id.split("/"))


def result_path(results_root: Path, task_id: str, run_id: str) -> Path:
    """Where a run's JSON result lives."""
    return result_dir(results_root, task_id) / f"{run_id}.json"


def atomic_write(path: str | os.PathLike[str], text: str | bytes) -> None:
    """Write via a temp file and rename: a reader never sees half a file. The folder
    must exist (creating folders costs more than the write on some file systems).

    No fsync: this survives a killed process, not a power cut (DESIGN §4).
    """
    # Plain os calls and str paths: this is on the dispatch path twice a run, where
    # pathlib objects and text-mode files cost more than the writes.
    target = os.fspath(path)
    folder, name = os.path.split(target)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        # A full disk must not leave a temp file for `--commit` to pick up.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_result(results_root: Path, result: RunResult, redactor: Redactor) -> Path:
    """Write ``<run-id>.md`` then ``<run-id>.json`` (the JSON is the proof of completion)."""
    data = result.model_dump(mode="json")
    text = to_json(data, indent=2)
    if redactor.in_json(text):
        data = redactor.data(data)
        text = to_json(data, indent=2)
    folder = os.fspath(result_dir(results_root, result.task_id))
    stem = os.path.join(folder, result.run_id)
    markdown = render_markdown(data)
    try:
        atomic_write(f"{stem}.md", markdown)
    except FileNotFoundError:  # the task's first result (or its folder was pruned)
        os.makedirs(folder, exist_ok=True)
        atomic_write(f"{stem}.md", markdown)
    atomic_write(f"{stem}.json", text + b"\n")
    return Path(f"{stem}.json")


def spend_since(results_root: Path, moment: datetime) -> float:
    """Total ``usage.cost_usd`` of the result files of runs finished at or after ``moment``.

    Today's spend when there is no state database yet (a CI run starting from the
    results branch). Run ids begin with their creation time, so older files are skipped
    by name without being read.
    """
    floor, since = new_run_id(moment)[:10], iso(moment)
    total = 0.0
    for path in results_root.rglob("*.json") if results_root.is_dir() else ():
        if len(path.stem) != 26 or path.stem[:10] < floor:
            continue
        found = read_result(path)
        if found is not None and found.finished_at >= since and found.usage.cost_usd:
            total += found.usage.cost_usd
    return total


def read_result(path: Path) -> RunResult | None:
    """A result file's content, or ``None`` if it is missing or unreadable."""
    try:
        return RunResult.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


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
    if data.get("error"):
        lines += ["", "## Error", "", "```text", str(data["error"]), "```"]
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
            lines.append(f"  - model `{step['model']}` ({step['tier']}): {step['outcome']}"
                         f" — {step['error']}")  # fmt: skip
    for call in calls:
        note = f" — {call['error']}" if call.get("error") else ""
        lines.append(f"  - turn {call['turn']}: `{call['name']}` {call['duration_s']:.3f} s{note}")
    return lines


def utc_now() -> datetime:
    """The current time in UTC (the default clock)."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as written in rows and result files."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
