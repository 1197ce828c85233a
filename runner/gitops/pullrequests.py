"""Open, update or close pull requests with the GitHub CLI (``gh``), one per branch.

``gh`` finds the repository from the checkout's remote (or ``GH_REPO``) and its token
in ``GH_TOKEN``; in GitHub Actions only the publish job has one. An open pull request
from the same head branch is edited (title, body, labels); otherwise one is created.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from runner.core.errors import GitOpsError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

#: Seconds one ``gh`` call may take.
GH_TIMEOUT = 120.0


class Operation(StrEnum):
    """What happened to a branch's pull request."""

    CREATED = "created"
    UPDATED = "updated"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PullRequestText:
    """What one pull request says, and from where to where."""

    head: str
    base: str
    title: str
    body_file: Path
    draft: bool = False
    labels: tuple[str, ...] = field(default_factory=tuple)


class GitHubCli:
    """``gh pr list / create / edit`` in one checkout."""

    def __init__(self, root: Path, environ: Mapping[str, str]) -> None:
        self._root = root
        self._env = dict(environ)
        found = shutil.which("gh", path=self._env.get("PATH"))
        if found is None:
            raise GitOpsError("the GitHub CLI `gh` is not on PATH; --pull-requests needs it")
        self._gh = found

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [self._gh, *args],
                cwd=self._root,
                env=self._env,
                capture_output=True,
                text=True,
                timeout=GH_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GitOpsError(f"gh {args[0]} {args[1]}: {exc}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise GitOpsError(
                f"gh {args[0]} {args[1]} failed: {said[-1] if said else done.returncode}"
            )
        return done.stdout

    def _open_numbers(self, head: str, base: str) -> list[int]:
        listed = self._run(
            "pr", "list", "--head", head, "--base", base, "--state", "open", "--json", "number"
        )
        return [item["number"] for item in json.loads(listed or "[]")]

    def close(self, head: str, base: str, comment: str) -> Operation | None:
        """Close the open pull request from ``head`` with ``comment``; ``None`` when there
        is none."""
        numbers = self._open_numbers(head, base)
        if not numbers:
            return None
        self._run("pr", "close", str(numbers[0]), "--comment", comment)
        return Operation.CLOSED

    def open_or_update(self, text: PullRequestText) -> Operation:
        """Edit the open pull request from ``text.head``, or create one."""
        numbers = self._open_numbers(text.head, text.base)
        if numbers:
            args = ["pr", "edit", str(numbers[0]), "--title", text.title]
            args += ["--body-file", str(text.body_file)]
            for label in text.labels:
                args += ["--add-label", label]
            self._run(*args)
            return Operation.UPDATED
        args = ["pr", "create", "--head", text.head, "--base", text.base]
        args += ["--title", text.title, "--body-file", str(text.body_file)]
        if text.draft:
            args.append("--draft")
        for label in text.labels:
            args += ["--label", label]
        self._run(*args)
        return Operation.CREATED
