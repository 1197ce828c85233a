"""The results pull request's body: what ran, what failed and what waits.

Rendered from the result files a branch holds and its base does not
(:meth:`runner.gitops.workspace.GitWorkspace.branch_results`), so it describes the whole pull
request, not only the latest workflow run.
"""

from __future__ import annotations

from typing import Any

from runner.core.states import RunState

#: Rows shown per section; the rest are counted.
MAX_ROWS = 100
_SECTIONS = (
    (RunState.FAILED, "❌ Failed", "error"),
    (RunState.WAITING, "⏸️ Waiting", "error"),
    (RunState.COMPLETED, "✅ Completed", "output"),
)


def _cell(value: Any, limit: int = 100) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(results: list[dict[str, Any]], *, base: str, branch: str) -> str:
    """Markdown for a pull request from ``branch`` into ``base`` carrying ``results``."""
    by_state: dict[str, list[dict[str, Any]]] = {}
    for data in sorted(results, key=lambda d: str(d.get("run_id", "")), reverse=True):
        by_state.setdefault(str(data.get("state")), []).append(data)
    counts = ", ".join(
        f"**{len(by_state.get(state.value, []))} {state.value}**" for state, _, _ in _SECTIONS
    )
    lines = [
        "## omni results",
        "",
        f"Runs on `{branch}` that `{base}` does not have yet: {counts}."
        " Every workflow run adds its results here; merge whenever you like.",
    ]
    if not results:
        lines += ["", "Nothing new since the last merge."]
    for state, title, detail in _SECTIONS:
        rows = by_state.get(state.value, [])
        if not rows:
            continue
        lines += [
            "",
            f"### {title} ({len(rows)})",
            "",
            f"| task | slot | finished | run | {detail} |",
            "|---|---|---|---|---|",
        ]
        for data in rows[:MAX_ROWS]:
            lines.append(
                f"| `{_cell(data.get('task_id'))}` | {_cell(data.get('slot')) or '—'}"
                f" | {_cell(data.get('finished_at'))} | `{_cell(data.get('run_id'))}`"
                f" | {_cell(data.get(detail))} |"
            )
        if len(rows) > MAX_ROWS:
            lines.append(f"| … and {len(rows) - MAX_ROWS} more | | | | |")
    return "\n".join(lines) + "\n"
