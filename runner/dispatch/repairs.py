"""Repair tasks for Claude Code: written when the gateway fails, closed when it recovers.

A repair task is an ordinary prompt task file, ``tasks/repair/gateway-<time>.yaml``
(executor ``claude_code``, kind ``coding``), saying what failed and what to check. The
files are the memory, so a CI run with no state database behaves like the service:

* **one per fault**: while a repair file without a ``# resolved:`` line exists, a new
  fault reuses it instead of writing another;
* **resolved**: on recovery each open file gets a ``# resolved: <time>: <why>`` comment
  (a comment: the task's content hash, and so its one-off run, stays the same), is
  committed again, and its run is closed ``completed`` with a result saying the fault
  was resolved (or, if it already ran, its row's note says so);
* **no claude_code**: :func:`repair_waits` keeps the run ``idle`` with a note, and the
  committed file reaches a person through the results pull request.

When the tasks folder is in a git repository each write is committed (that one file,
``--no-verify``, omni's identity when git has none); git errors are logged, never fatal.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from runner.core.clock import iso, utc_now
from runner.core.errors import FileRefusedError, GitOpsError, InvalidTaskFile
from runner.core.files import atomic_write, read_regular
from runner.core.redaction import without_userinfo
from runner.core.states import Mode, RunState
from runner.defs.routing import choose_executor
from runner.defs.tasks import Task, load_task_file
from runner.state.results import RunResult, write_result

if TYPE_CHECKING:
    from datetime import datetime

    from runner.core.redaction import Redactor
    from runner.defs.config import Config
    from runner.state.backend import StateStore
    from runner.state.records import RunRecord

log = logging.getLogger(__name__)

#: Commits one file (path) with a message; does nothing when the file is not in git.
Committer = Callable[[Path, str], None]
#: Told of each repair file as its fault is resolved: (path, why).
OnResolved = Callable[[Path, str], object]
RESOLVED = "# resolved:"
#: omni's commit identity, for a repository (or machine) that has none configured.
_IDENTITY = {
    f"GIT_{who}_{part}": value
    for who in ("AUTHOR", "COMMITTER")
    for part, value in (("NAME", "omni"), ("EMAIL", "omni@localhost"))
}


@dataclass(slots=True)
class Fault:
    """The gateway fault in progress: kinds and counts of errors, last probe results."""

    started_at: str
    counts: Counter[str] = field(default_factory=Counter)
    last_errors: list[str] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)


def kinds(fault: Fault) -> str:
    """``2 refused, 1 timeout``: the fault's errors by kind."""
    return ", ".join(f"{n} {kind}" for kind, n in sorted(fault.counts.items()))


class RepairWriter:
    """Writes one repair task per fault into ``tasks/repair/``, commits it, and marks it
    resolved on recovery."""

    def __init__(
        self,
        *,
        config: Config,
        tasks_root: Path,
        redactor: Redactor,
        commit: Committer | None = None,
        clock: Callable[[], datetime] = utc_now,
        on_resolved: OnResolved | None = None,
    ) -> None:
        self._config = config
        self._tasks_root = tasks_root
        self._redactor = redactor
        self._commit = commit
        self._clock = clock
        self._on_resolved = on_resolved

    def open_repairs(self) -> list[Path]:
        """Gateway repair files not marked resolved, oldest first."""
        folder = self._tasks_root / "repair"
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.glob("gateway-*.yaml")):
            try:
                text = self._read(path)
            except (OSError, UnicodeDecodeError, FileRefusedError):
                continue
            if not any(line.startswith(RESOLVED) for line in text.splitlines()):
                found.append(path)
        return found

    def _read(self, path: Path) -> str:
        """A repair file's text (a regular file within the task file cap)."""
        return read_regular(path, self._config.limits.task_file_bytes).decode("utf-8")

    def write(self, fault: Fault) -> Path:
        """Write (and commit) the repair task for ``fault``, or reuse the open one."""
        if open_ := self.open_repairs():
            log.warning("repair task %s is still open; not writing another", open_[-1])
            return open_[-1]
        stamp = self._clock().strftime("%Y%m%dT%H%M%SZ")
        path = self._tasks_root / "repair" / f"gateway-{stamp}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self._redactor.text(repair_task_yaml(self._config, fault)))
        log.warning("repair task written: %s", path)
        self._committed(path, f"omni: repair task for LiteLLM gateway fault ({kinds(fault)})")
        return path

    def resolve(self, why: str) -> list[Path]:
        """Mark every open repair file resolved (a comment), commit, and close its run."""
        why = self._redactor.text(" ".join(why.split()))
        done = []
        for path in self.open_repairs():
            line = f"{RESOLVED} {iso(self._clock())}: {why}\n"
            text = self._read(path)
            atomic_write(path, text + ("" if text.endswith("\n") else "\n") + line)
            log.warning("repair task %s: fault resolved (%s)", path, why)
            self._committed(path, f"omni: LiteLLM gateway fault resolved ({path.name})")
            if self._on_resolved is not None:
                self._on_resolved(path, why)
            done.append(path)
        return done

    def _committed(self, path: Path, message: str) -> None:
        if self._commit is None:
            return
        try:
            self._commit(path, self._redactor.text(message))
        except GitOpsError as exc:
            # The task file is written either way; a failed commit is told, not fatal.
            log.warning("repair task %s written but not committed: %s", path, exc)


def repair_task_yaml(config: Config, fault: Fault) -> str:
    """A prompt task for Claude Code: what failed, the evidence, and what to check."""
    handler = config.fault_handler
    url = without_userinfo(
        config.lite_llm_url or "(in-process LiteLLM router; no proxy configured)"
    )
    lines = [
        f"The LiteLLM gateway at {url} stopped answering; omni switched to degraded",
        f"mode at {fault.started_at} and now calls {config.direct_api.model} directly",
        "with the backup key.",
        "",
        f"Errors by kind: {kinds(fault) or 'none recorded'}.",
        "Last errors:",
        *[f"  - {e}" for e in fault.last_errors],
        "Last probes:",
        *([f"  - {p}" for p in fault.probes] or ["  - none yet"]),
        "",
        "Config keys involved: lite_llm_url, lite_llm_key (env LITELLM_API_KEY),",
        "model_list, litellm_settings, fault_handler.lite_llm_timeout"
        f" ({handler.lite_llm_timeout:g} s), fault_handler.consecutive_failures"
        f" ({handler.consecutive_failures}).",
        "",
        "Check: is the proxy process running and listening; does GET /health/liveliness",
        "answer; do its logs show crashes, out-of-memory kills or upstream errors; is its",
        "master key still valid; did a recent config change break model_list. Fix what",
        "you can in this repository (config, deployment files) and explain the rest.",
    ]
    task = {
        "description": f"Repair the LiteLLM gateway ({kinds(fault)})",
        "kind": "coding",
        "executor": "claude_code",
        "prompt": "\n".join(lines) + "\n",
        "timeout": 900,
    }
    header = (
        "# Written by omni's fault monitor. Runs on claude_code when it is configured;\n"
        "# omni adds a `# resolved:` line when the gateway answers again.\n"
    )
    return header + yaml.safe_dump(task, sort_keys=False, allow_unicode=True, width=100)


def repair_waits(task: Task, config: Config, configured: Collection[str]) -> str | None:
    """Why a repair task stays idle (its executor is not configured), or ``None``."""
    if not task.id.startswith("repair/"):
        return None
    route = choose_executor(task.spec, config.router, configured)
    if route.configured:
        return None
    return (
        f"repair task for {route.executor}, which is not configured: it waits (idle) for a"
        " person; the task file is in the results pull request"
    )


class RepairRuns:
    """Records a resolved fault on its repair task's run (store row and result file)."""

    def __init__(
        self,
        *,
        store: StateStore,
        tasks_root: Path,
        results_root: Path,
        redactor: Redactor,
        max_bytes: int,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._tasks = tasks_root
        self._results = results_root
        self._redactor = redactor
        self._max_bytes = max_bytes
        self._clock = clock

    def close(self, path: Path, why: str) -> RunRecord | None:
        """Close the repair task's open run ``completed`` with a result saying the fault
        was resolved; a run that already finished gets a note. ``None`` when the task
        cannot be read, or its run is in progress elsewhere."""
        try:
            task = load_task_file(path, self._tasks, self._max_bytes)
        except InvalidTaskFile as exc:
            log.warning("repair task %s cannot be read to close it: %s", path, exc)
            return None
        note = f"fault resolved at {iso(self._clock())}: {why}"
        store = self._store
        store.upsert_task(task)
        run = store.open_run(task.id, task.task_hash)
        if run is None:
            done = store.runs(task_id=task.id, state=RunState.COMPLETED, limit=1)
            if done:
                store.set_note(done[0].run_id, note)
                return store.get_run(done[0].run_id)
            run = store.create_run(task.id, task.task_hash, max_attempts=task.spec.retries + 1)
        if run.state is RunState.FAILED:
            run = store.transition(run.run_id, RunState.IDLE, detail="fault resolved")
        claimed = store.claim(run.run_id)
        if claimed is None:
            return None
        started = self._clock()
        run = store.transition(claimed.run_id, RunState.EXECUTING, detail="fault resolved")
        result = RunResult(
            task_id=task.id,
            run_id=run.run_id,
            task_hash=run.task_hash,
            slot=None,
            state=RunState.COMPLETED,
            attempt=run.attempt,
            mode=Mode.NORMAL,
            started_at=iso(started),
            finished_at=iso(self._clock()),
            duration_s=0.0,
            output=f"Fault resolved before this repair task ran: {why}. Nothing to repair.",
            fault={"kind": "gateway", "resolved_at": iso(self._clock()), "why": why},
        )
        written = write_result(self._results, result, self._redactor)
        return store.transition(
            run.run_id,
            RunState.COMPLETED,
            detail="fault resolved; closed by the fault monitor",
            note=note,
            result_path=str(written),
        )


def git_committer(tasks_root: Path, environ: Mapping[str, str] | None = None) -> Committer:
    """A :data:`Committer` for files under ``tasks_root``: commits just that file when
    the folder is in a git work tree; does nothing otherwise. Git errors become
    :class:`GitOpsError`."""
    env = dict(os.environ if environ is None else environ)

    def commit(path: Path, message: str) -> None:
        # gitpython loads only when a repair task is written.
        # pylint: disable-next=import-outside-toplevel
        from git import Repo  # noqa: PLC0415

        # pylint: disable-next=import-outside-toplevel
        from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError  # noqa: PLC0415

        try:
            repo = Repo(tasks_root, search_parent_directories=True)
        except (InvalidGitRepositoryError, NoSuchPathError):
            log.info("%s is not in a git repository; repair task not committed", tasks_root)
            return
        with repo:
            if repo.bare or repo.working_tree_dir is None:
                return
            root = Path(repo.working_tree_dir).resolve()
            try:
                relative = str(path.resolve().relative_to(root))
            except ValueError:
                raise GitOpsError(f"{path} is outside the repository at {root}") from None
            identity = {k: v for k, v in _IDENTITY.items() if not env.get(k)}
            reader = repo.config_reader()
            if reader.get_value("user", "name", "") and reader.get_value("user", "email", ""):
                identity = {}
            try:
                repo.git.add("-f", "--", relative)
                repo.git.commit(
                    "-q", "--no-verify", "-m", message, "--only", "--", relative, env=identity
                )
            except GitCommandError as exc:
                detail = " ".join(str(exc.stderr or exc).split())[:300]
                raise GitOpsError(f"git commit of {relative} failed: {detail}") from None

    return commit
