"""The `omni` command run the way a user runs it: a subprocess with a small environment."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


def run_omni(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m runner ARGS`` in ``cwd`` with ``env`` (default: a PATH and HOME=cwd);
    never raises for the exit code."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else {"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
        timeout=120,
        check=False,
    )
