"""``omni report``: the results pull request's body. The result files the results branch
holds and its base lacks, the runs that have no result file yet (from the state file,
when there is one), and links to each result's ``.md`` view (on GitHub, from the
Actions environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.app.looking import looking
from runner.core.states import RunState
from runner.gitops.prbody import render
from runner.gitops.workspace import GitWorkspace

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runner.defs.environment import ResolvedPaths
    from runner.gitops.carry import BranchReport
    from runner.state.resultcheck import ResultCheck


@dataclass(frozen=True, slots=True)
class PullRequestReport:
    """What the pull request carries and what still waits."""

    base: str
    branch: str
    found: BranchReport
    """The results the branch brings, what there does not count, what is outside."""
    pending: list[dict[str, Any]]
    """Idle or waiting runs with no result file on the branch: task_id, run_id, state, note."""
    results_prefix: str
    """The results folder in the repository (POSIX form)."""
    link_base: str | None
    """``https://github.com/OWNER/REPO/blob/BRANCH/`` in Actions, else ``None``."""

    def markdown(self) -> str:
        """The pull request body."""
        base = self.link_base
        return render(
            self.found,
            base=self.base,
            branch=self.branch,
            pending=self.pending,
            results_prefix=self.results_prefix,
            link=None if base is None else lambda path: base + path,
        )

    def as_json(self) -> dict[str, Any]:
        """``--json``: the runs, each with its result file's path in the repository."""
        return {
            "base": self.base,
            "branch": self.branch,
            "results": [
                {
                    "task_id": d.get("task_id"),
                    "run_id": d.get("run_id"),
                    "state": d.get("state"),
                    "path": f"{self.results_prefix}/{d.get('task_id')}/{d.get('run_id')}.json",
                }
                for d in self.found.results
            ],
            "pending": self.pending,
            "not_counted": [{"path": p, "why": w} for p, w in self.found.refused],
            "outside": [{"path": p, "what": w} for p, w in self.found.outside],
        }


def pull_request_report(
    paths: ResolvedPaths,
    check: ResultCheck,
    *,
    base: str,
    branch: str,
    environ: Mapping[str, str],
) -> PullRequestReport:
    """The report for a pull request from ``branch`` into ``base`` (result files pass
    ``check`` to count)."""
    workspace = GitWorkspace.open(Path.cwd(), results=paths.results, check=check)
    found = workspace.branch_results(base, branch)
    filed = {str(d.get("run_id")) for d in found.results}
    pending: list[dict[str, Any]] = []
    with looking(paths) as store:
        if store is not None:
            pending = [
                {"task_id": r.task_id, "run_id": r.run_id, "state": r.state.value, "note": r.note}
                for r in store.unfinished_runs()
                if r.state in {RunState.IDLE, RunState.WAITING} and r.run_id not in filed
            ]
    server, repository = environ.get("GITHUB_SERVER_URL"), environ.get("GITHUB_REPOSITORY")
    link_base = f"{server}/{repository}/blob/{branch}/" if server and repository else None
    return PullRequestReport(base, branch, found, pending, workspace.results, link_base)
