"""The results pull request's body: what ran, what failed and what waits, and what on
the branch does not count.

Rendered from what a branch holds and its base does not
(:meth:`runner.gitops.workspace.GitWorkspace.branch_results`), so it describes the whole pull
request, not only the latest workflow run; plus the runs that have no result file yet
(prompt tasks waiting for a model, repair tasks waiting for a person). Each row links its
result's ``.md`` view. Result files that failed the checks, and anything the branch
touched outside the results folder, are listed for the reviewer: the branch is input
(:mod:`runner.gitops.carry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.core.states import RunState

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from runner.gitops.carry import BranchReport

#: Rows shown per section; the rest are counted.
MAX_ROWS = 100
_SECTIONS = (
    (RunState.FAILED, "❌ Failed", "error"),
    (RunState.WAITING, "⏸️ Waiting", "error"),
    (RunState.COMPLETED, "✅ Completed", "output"),
)


def _cell(value: Any, limit: int = 200) -> str:
    """One table cell: on one line, ``|`` escaped, backquotes made plain, cut at a word
    (with …) past ``limit``."""
    text = "" if value is None else str(value)
    text = " ".join(text.split()).replace("|", "\\|").replace("`", "'")
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip("\\") + "…"


def _run_cell(data: dict[str, Any], results_prefix: str, link: Callable[[str], str] | None) -> str:
    """The run id linked to its ``.md`` view when ``link`` makes URLs; else that file's
    path (a relative link in a pull request body would not resolve)."""
    run_id, task_id = _cell(data.get("run_id")), _cell(data.get("task_id"))
    path = f"{results_prefix}/{task_id}/{run_id}.md"
    if link is None:
        return f"`{path}`"
    return f"[`{run_id}`]({link(path)})"


def render(
    report: BranchReport,
    *,
    base: str,
    branch: str,
    pending: Sequence[dict[str, Any]] = (),
    results_prefix: str = "results",
    link: Callable[[str], str] | None = None,
) -> str:
    """Markdown for a pull request from ``branch`` into ``base`` carrying ``report``;
    ``pending`` are runs with no result file yet (``task_id``, ``run_id``, ``state``,
    ``note``); ``link`` turns a path in the repository (``results_prefix/…``) into a URL."""
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
    if not results and not pending:
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
                f" | {_cell(data.get('finished_at'))} | {_run_cell(data, results_prefix, link)}"
                f" | {_cell(data.get(detail))} |"
            )
        if len(rows) > MAX_ROWS:
            lines.append(f"| … and {len(rows) - MAX_ROWS} more | | | | |")
    lines += _pending(pending)
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


def _pending(pending: Sequence[dict[str, Any]]) -> list[str]:
    """The runs with no result file yet (none: no section)."""
    if not pending:
        return []
    lines = ["", f"### ⏳ Not run yet ({len(pending)})", "", "| task | run | state | why |"]
    lines.append("|---|---|---|---|")
    lines += [
        f"| `{_cell(p.get('task_id'))}` | `{_cell(p.get('run_id'))}`"
        f" | {_cell(p.get('state'))} | {_cell(p.get('note'))} |"
        for p in pending[:MAX_ROWS]
    ]
    if len(pending) > MAX_ROWS:
        lines.append(f"| … and {len(pending) - MAX_ROWS} more | | | |")
    return lines


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
