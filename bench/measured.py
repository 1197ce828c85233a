"""One whole command's figures for the benches: wall and CPU seconds and its own peak RSS.

A child's peak RSS (``ru_maxrss``) counts the memory it started from: ``fork`` copies
the parent, and the ``vfork`` that ``subprocess`` uses on Linux hands the parent's own
peak to the child at ``exec``. A bench process that has imported omni and parsed large
outputs was then the floor of every figure (seen: 76 MiB reported for a command whose
own peak was 45). So each command is started from a small launcher (``python -I -S``:
~8 MiB) that forks, execs the command, waits for it and writes the figures to a file.
The command's standard output and error are the launcher's, as the caller gives them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_LAUNCHER = """\
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(report, "w", encoding="ascii") as out:
    code = os.waitstatus_to_exitcode(status)
    out.write(f"{wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss} {code}")
"""

Output = int | IO[bytes] | None


@dataclass(frozen=True)
class Measured:
    """What one run of a command cost, from start to exit (its children waited for
    included), and how it ended."""

    wall_s: float
    cpu_s: float
    rss_mib: float
    exit_code: int


@dataclass(frozen=True)
class Launch:
    """A command running under the launcher (``process``: its output is the command's)."""

    process: subprocess.Popen[bytes]
    report: Path

    def finish(self) -> Measured:
        """Wait for the command and read its figures."""
        self.process.wait()
        try:
            fields = self.report.read_text(encoding="ascii").split()
        finally:
            self.report.unlink(missing_ok=True)
        if len(fields) != 4:
            status = self.process.returncode
            raise SystemExit(f"the bench's launcher exited {status} without figures")
        wall, cpu, rss_kib, code = fields
        return Measured(float(wall), float(cpu), int(rss_kib) / 1024, int(code))


def launch(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    stdout: Output = subprocess.DEVNULL,
    stderr: Output = subprocess.DEVNULL,
) -> Launch:
    """Start ``argv`` under the launcher; ``finish()`` the result for its figures
    (``launch(argv, env=env, cwd=cwd).finish()`` runs it to its end)."""
    handle, name = tempfile.mkstemp(prefix="omni-bench-", suffix=".txt")
    os.close(handle)
    process = subprocess.Popen(  # pylint: disable=consider-using-with  # Launch.finish waits
        [sys.executable, "-I", "-S", "-c", _LAUNCHER, name, *argv],
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
    )
    return Launch(process, Path(name))
