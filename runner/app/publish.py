"""``omni publish``: the trusted step that turns checked results and patches into commits.

1. With ``--from DIR`` (the artifact of the job that ran the models), the runs whose
   files pass :mod:`runner.gitops.checks` are copied into the results folder.
2. The results folder is checked again as a whole; only approved files are committed,
   on the results branch (``omni/results``), pushed with ``--push``.
3. For each task with a new approved patch (one the results branch did not hold yet),
   the task's own branch ``omni/task/<task-id>`` is rebuilt from the checked-out base
   commit plus its newest patch and pushed with a lease.
4. While a gateway fault is recorded open (:mod:`runner.state.repairrecords`: a
   repair task's records, which reach the publish job with the results), its repair
   task becomes the branch ``omni/repair/gateway`` (:mod:`runner.gitops.repairpr`),
   rebuilt from the record by omni's own template; once the fault is recorded resolved,
   its pull request is closed with a comment saying so.
5. Each pull request's title and body is written to a file (what the task asked, what
   the model did, the run's result, refused paths; what failed, for the repair); with
   ``--pull-requests`` the GitHub CLI opens or updates one pull request per branch and
   the results pull request.

``run --once --push BRANCH`` (and ``--commit``) does steps 2 to 5 after its runs; the
results branch is fetched and its result files restored before the runs (they are the
memory of what ran). Nothing outside the results folder and approved patches is ever
committed, and git runs with hooks, fsmonitor and repository filters off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.clock import utc_now
from runner.core.errors import GitOpsError
from runner.core.pathglob import PathRules
from runner.defs.environment import redactor_for
from runner.defs.tasks import Task, load_tasks
from runner.dispatch.isolation import Boundaries
from runner.dispatch.repairs import fault_from, repair_task_yaml, what_failed
from runner.gitops import prtext, repairpr
from runner.gitops.carry import BranchReport
from runner.gitops.checks import Approved, Checked, Policy, check_folder
from runner.gitops.prbody import render
from runner.gitops.pullrequests import GitHubCli, PullRequestText
from runner.gitops.taskbranch import TaskBranch, TaskBranches
from runner.gitops.workspace import GitWorkspace
from runner.state.repairrecords import newest_records
from runner.state.resultcheck import ResultCheck
from runner.state.results import result_dir

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from runner.defs.config import Config
    from runner.defs.environment import ResolvedPaths
    from runner.gitops.workspace import Prepared, Published
    from runner.state.repairrecords import RepairRecord

#: The results branch ``omni publish`` uses unless told otherwise.
RESULTS_BRANCH = "omni/results"


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """What ``omni publish`` (or ``run --once --commit/--push``) was asked for."""

    source: Path | None = None
    """``--from``: a folder of results and patches to check and take in first."""
    branch: str | None = RESULTS_BRANCH
    """The results branch; ``None``: the checked-out branch (``--commit``)."""
    push: bool = False
    base: str | None = None
    """The branch pull requests go into; default the checked-out branch."""
    pull_requests: bool = False
    """Open or update the pull requests with ``gh`` (needs ``push``)."""


@dataclass(slots=True)
class PublishReport:
    """What a publish did, and what it refused."""

    checked: Checked = field(default_factory=Checked)
    copied: int = 0
    """Files taken in from ``--from``."""
    results: Published | None = None
    tasks: list[TaskBranch] = field(default_factory=list)
    pull_requests: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when a file was refused or a step failed, else 0."""
        return 1 if self.checked.refused or self.errors else 0

    def as_json(self) -> dict[str, Any]:
        """``--json``."""
        results = self.results
        return {
            "results_branch": None
            if results is None
            else {
                "branch": results.branch,
                "commit": results.commit,
                "pushed": results.pushed,
                "files": len(results.files),
            },
            "copied": self.copied,
            "left_behind": [] if results is None else list(results.left_behind),
            "refused": [{"path": r.path, "reason": r.reason} for r in self.checked.refused],
            "task_branches": [
                {
                    "task_id": t.task_id,
                    "branch": t.branch,
                    "commit": t.commit,
                    "pushed": t.pushed,
                    "updated": t.updated,
                    "unchanged": t.unchanged,
                }
                for t in self.tasks
            ],
            "pull_requests": self.pull_requests,
            "errors": self.errors,
        }


class Publication:
    """One publish: :meth:`prepare` (before runs, for ``run --once``), then :meth:`finish`."""

    def __init__(
        self,
        config: Config,
        paths: ResolvedPaths,
        options: PublishOptions,
        *,
        environ: Mapping[str, str],
        now: datetime | None = None,
    ) -> None:
        self._config = config
        self._paths = paths
        self._options = options
        self._environ = environ
        self._now = now
        self._check = ResultCheck(now or utc_now(), config.limits.result_file_bytes)
        self._workspace = GitWorkspace.open(
            Path.cwd(), results=paths.results, environ=environ, check=self._check
        )
        self._prepared: Prepared | None = None

    def prepare(self) -> None:
        """Check the repository, fetch the results branch (with ``push``) and restore its
        result files missing on disk. Raises :class:`GitOpsError`."""
        self._prepared = self._workspace.prepare(self._options.branch, push=self._options.push)

    def finish(self, message: str) -> PublishReport:
        """Steps 1 to 5 of the module docstring; git failures are in ``errors``."""
        if self._prepared is None:
            self.prepare()
        assert self._prepared is not None
        report = PublishReport()
        tasks = {t.id: t for t in load_tasks(self._paths.tasks).tasks}
        policy = self._policy(tasks)
        if self._options.source is not None:
            taken = check_folder(self._options.source, policy)
            report.copied = _take_in(self._options.source, self._paths.results, taken)
            report.checked.refused += taken.refused
        self._paths.results.mkdir(parents=True, exist_ok=True)
        checked = check_folder(self._paths.results, policy)
        branch = self._prepared.branch
        before = self._workspace.tip(branch)
        known = self._workspace.files_at(before) if before else set()
        # What the branch holds was published before: it stays (unless pruned from disk).
        kept = {name for name in known if (self._paths.results / name).is_file()}
        report.checked.approved = checked.approved
        report.checked.refused += [r for r in checked.refused if r.path not in kept]
        files = sorted(set(checked.files()) | kept)
        try:
            report.results = self._workspace.publish(self._prepared, message, files)
        except GitOpsError as exc:
            report.errors.append(str(exc))
            return report
        newest = _new_patches(checked.approved, known)
        base = self._options.base or self._workspace.current_branch() or "main"
        texts = self._task_branches(newest, tasks, base, report)
        records = newest_records((a.task_id, a.run_id, a.result) for a in checked.approved)
        repair = self._repair_branch(records, base, report)
        if repair is not None:
            texts.append(repair)
        texts.append(self._results_text(branch, base))
        if self._options.pull_requests and self._options.push:
            self._open_pull_requests(texts, report)
            if records and not any(r.open for r in records):  # not when a push failed
                self._close_repair(records[-1], base, report)
        return report

    def _policy(self, tasks: dict[str, Task]) -> Policy:
        root = self._workspace.root
        boundaries = Boundaries.of(self._config, self._paths, root)
        allowed = {
            task_id: PathRules(t.spec.pull_request.paths) if t.spec.pull_request else None
            for task_id, t in tasks.items()
        }
        return Policy(
            redactor=redactor_for(self._config, self._environ),
            protected=PathRules(boundaries.protected),
            allowed=allowed,
            patch_bytes=self._config.limits.patch_bytes,
            results=self._check,
        )

    def _task_branches(
        self, newest: dict[str, Approved], tasks: dict[str, Task], base: str, report: PublishReport
    ) -> list[PullRequestText]:
        branches = TaskBranches(self._workspace.root, environ=self._environ)
        redactor = redactor_for(self._config, self._environ)
        head = self._workspace.head()
        texts = []
        for task_id, run in sorted(newest.items()):
            task = tasks.get(task_id)
            spec = task.spec if task is not None else None
            title = prtext.title(task_id, spec)
            assert run.patch is not None
            try:
                commit = branches.build(
                    task_id, head, run.patch, f"{title}\n\nomni run {run.run_id}\n"
                )
                done = branches.publish(task_id, commit, push=self._options.push)
            except GitOpsError as exc:
                report.errors.append(str(exc))
                continue
            report.tasks.append(done)
            results_path = (
                result_dir(Path(self._workspace.results), task_id) / f"{run.run_id}.json"
            ).as_posix()
            text = prtext.body(
                task_id,
                spec,
                run.result,
                branch=done.branch,
                results_path=results_path,
                redactor=redactor,
            )
            pull = spec.pull_request if spec is not None else None
            texts.append(
                PullRequestText(
                    head=done.branch,
                    base=base,
                    title=title,
                    body_file=self._write_text(done.branch, text),
                    draft=pull.draft if pull is not None else False,
                    labels=tuple(pull.labels) if pull is not None else (),
                )
            )
        return texts

    def _repair_branch(
        self, records: list[RepairRecord], base: str, report: PublishReport
    ) -> PullRequestText | None:
        """The repair task of the oldest open gateway fault as the branch
        ``omni/repair/gateway`` (the base plus that one task file, rebuilt by omni from the
        record, never copied from it), and its pull request's text; ``None`` when no
        fault is open."""
        record = next((r for r in records if r.open), None)
        if record is None:
            return None
        redactor = redactor_for(self._config, self._environ)
        fault, mode = fault_from(record.fault)
        task_text = redactor.text(repair_task_yaml(self._config, fault, mode))
        try:
            tasks = self._paths.tasks.resolve().relative_to(self._workspace.root.resolve())
        except ValueError:
            tasks = Path("tasks")
        task_file = (tasks / f"{record.task_id}.yaml").as_posix()
        title = repairpr.title(mode)
        branches = TaskBranches(self._workspace.root, environ=self._environ)
        try:
            commit = branches.build_file(
                self._workspace.head(),
                task_file,
                task_text.encode(),
                f"{title}\n\nomni repair task {record.task_id}\n",
            )
            done = branches.publish_branch(
                record.task_id, repairpr.BRANCH, commit, push=self._options.push
            )
        except GitOpsError as exc:
            report.errors.append(str(exc))
            return None
        report.tasks.append(done)
        text = repairpr.body(
            mode=mode,
            what_failed=what_failed(self._config),
            started=fault.started_at,
            task_file=task_file,
            task_text=task_text,
            redactor=redactor,
        )
        return PullRequestText(done.branch, base, title, self._write_text(done.branch, text))

    def _close_repair(self, record: RepairRecord, base: str, report: PublishReport) -> None:
        """Close the repair pull request once its fault is resolved (nothing left to
        repair: merging it would only add a task with nothing to do)."""
        comment = repairpr.closing_comment(
            resolved=record.fault.get("resolved_at"),
            why=record.fault.get("why"),
            redactor=redactor_for(self._config, self._environ),
        )
        try:
            closed = GitHubCli(self._workspace.root, self._environ).close(
                repairpr.BRANCH, base, comment
            )
        except GitOpsError as exc:
            report.errors.append(str(exc))
            return
        if closed is not None:
            report.pull_requests.append({"head": repairpr.BRANCH, "operation": closed.value})

    def _results_text(self, branch: str, base: str) -> PullRequestText:
        try:
            found = self._workspace.branch_results(base, branch)
        except GitOpsError:
            found = BranchReport()
        body = render(found, base=base, branch=branch)
        return PullRequestText(branch, base, "omni: task results", self._write_text(branch, body))

    def _write_text(self, branch: str, text: str) -> Path:
        """Where a pull request's body is kept for ``gh`` (beside the state file)."""
        folder = self._paths.state.parent / "publish"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (branch.replace("/", "__") + ".md")
        path.write_text(text, encoding="utf-8")
        return path

    def _open_pull_requests(self, texts: list[PullRequestText], report: PublishReport) -> None:
        try:
            gh = GitHubCli(self._workspace.root, self._environ)
        except GitOpsError as exc:
            report.errors.append(str(exc))
            return
        for text in texts:
            try:
                operation = gh.open_or_update(text)
            except GitOpsError as exc:
                report.errors.append(str(exc))
                continue
            report.pull_requests.append({"head": text.head, "operation": operation.value})


def _take_in(source: Path, results: Path, checked: Checked) -> int:
    """Copy the approved files of ``source`` into ``results`` (never over a different
    file of the same name: run ids are unique, so that is someone else's run)."""
    copied = 0
    for run in checked.approved:
        for name in run.files:
            target = results / name
            data = (source / name).read_bytes()
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            copied += 1
    return copied


def _new_patches(approved: list[Approved], known: set[str]) -> dict[str, Approved]:
    """Each task's newest run with an approved patch the results branch lacked."""
    newest: dict[str, Approved] = {}
    for run in approved:
        patch_file = next((f for f in run.files if f.endswith(".patch")), None)
        if run.patch is None or patch_file is None or patch_file in known:
            continue
        if run.task_id not in newest or run.run_id > newest[run.task_id].run_id:
            newest[run.task_id] = run
    return newest


def publish(
    config: Config,
    paths: ResolvedPaths,
    options: PublishOptions,
    *,
    environ: Mapping[str, str],
    now: datetime | None = None,
) -> PublishReport:
    """``omni publish``: every step at once. Raises :class:`GitOpsError` for a repository
    that cannot take a commit at all."""
    publication = Publication(config, paths, options, environ=environ, now=now)
    publication.prepare()
    return publication.finish("omni: publish results\n")
