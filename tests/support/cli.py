"""The `omni` command run the way a user runs it: a subprocess with a small environment."""

from __future__ import annotations

import json
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


#: Runs the CLI's ``main()`` with the arguments given as JSON, then reports on stderr
#: which modules of the packages named (JSON) the process loaded.
_MAIN_THEN_MODULES = """\
import json, sys
from runner.cli.entry import main
PACKAGES = json.loads(sys.argv[2])
sys.argv = ["omni", *json.loads(sys.argv[1])]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in PACKAGES)
sys.stderr.write("\\n" + MARK + json.dumps(loaded) + "\\n")
sys.exit(code)
"""
MARK = "omni-test modules loaded: "


def run_omni_watching_imports(
    cwd: Path,
    *args: str,
    env: Mapping[str, str],
    timeout: float = 300,
    packages: tuple[str, ...] = ("litellm",),
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``omni ARGS`` in a fresh process, like :func:`run_omni`, and the modules of
    ``packages`` that process had loaded when it finished (``sys.modules``)."""
    code = f"MARK = {MARK!r}\n" + _MAIN_THEN_MODULES
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args), json.dumps(packages)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith(MARK)]
    if not lines:
        raise AssertionError(f"omni {' '.join(args)} did not finish:\n{done.stderr[-3000:]}")
    return done, json.loads(lines[-1].removeprefix(MARK))
