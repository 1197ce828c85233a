"""Git for the tests: real repositories, a fixed identity, no user or system config."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

#: The author and committer of every commit the tests make.
IDENTITY = {
    "GIT_AUTHOR_NAME": "Omni Test",
    "GIT_AUTHOR_EMAIL": "omni@example.invalid",
    "GIT_COMMITTER_NAME": "Omni Test",
    "GIT_COMMITTER_EMAIL": "omni@example.invalid",
}


def git_env() -> dict[str, str]:
    """The environment git runs with in the tests (no global config, a fixed identity)."""
    return {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": os.devnull}


def git(cwd: Path, *args: str) -> str:
    """Run ``git ARGS`` in ``cwd``; returns its stdout stripped; a failure fails the test
    with git's own message."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()
