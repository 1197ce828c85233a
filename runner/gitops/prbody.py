"""The results pull request's body: what ran, what failed and what waits, and what on
the branch does not count.

Rendered from what a branch holds and its base does not
(:meth:`runner.gitops.workspace.GitWorkspace.branch_results`), so it describes the whole pull
request, not only the latest workflow run. Result files that failed the checks, and
anything the branch touched outside the results folder, are listed for the reviewer:
the branch is input (:mod:`runner.gitops.carry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.core.states import RunState

if TYPE_CHECKING:
    from runner.gitops.carry import BranchReport

#: Rows shown per section; the rest are counted.
MAX_ROWS = 100
_SECTIONS = (
    (RunState.FAILED, "❌ Failed", "error"),
    (RunState.WAITING, "⏸️ Waiting", "error"),
    (RunState.COMPLETED, "✅ Completed", "output"),
)


def _cell(value: Any, limit: int = 100) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split()).replace("|", "\\|").replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(report: BranchReport, *, base: str, branch: str) -> str:
    """Markdown for a pull request from ``branch`` into ``base`` carrying ``report``."""
    results = report.results
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
    lines += _listing(
        "⚠️ Not counted",
        "Files under the results folder that omni skipped: they are not results it can"
        " trust, so they count for nothing (not run, not spent, not served).",
        ("file", "why"),
        report.refused,
    )
    lines += _listing(
        "⚠️ Outside the results folder",
        "omni commits only results (and the files its tasks changed in this checkout);"
        " whatever else was pushed to this branch is not carried forward. Check these"
        " before merging.",
        ("path", "what"),
        report.outside,
    )
    return "\n".join(lines) + "\n"


def _listing(
    title: str, intro: str, header: tuple[str, str], rows: list[tuple[str, str]]
) -> list[str]:
    """A titled two-column table of ``rows`` (none: no section)."""
    if not rows:
        return []
    lines = ["", f"### {title} ({len(rows)})", "", intro, "", f"| {header[0]} | {header[1]} |"]
    lines.append("|---|---|")
    lines += [f"| `{_cell(path, 200)}` | {_cell(why)} |" for path, why in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        lines.append(f"| … and {len(rows) - MAX_ROWS} more | |")
    return lines
