"""The OS sandbox with real bubblewrap: a ``run`` inside sees only its own processes,
only ``lo``, a clean environment, cannot write outside its workspace nor read what lies
outside it, and reaches the network only when allowed. The probe names the cause and the
fix when bubblewrap cannot work.

These tests skip only when bubblewrap cannot run here *and* CI is not "true"."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner.defs.config import SandboxMode
from runner.reach.executors import ExecutorPool
from runner.reach.sandbox import BWRAP_ENV, Confinement, omni_read_paths, probe, probing
from tests.support.planted import SECRET

pytestmark = pytest.mark.integration

PROBE = probe()
needs_bwrap = pytest.mark.skipif(
    not PROBE.available and os.environ.get("CI") != "true",
    reason=f"bubblewrap cannot run here (CI would fail): {PROBE.explain()}",
)


async def run_inside(
    workspace: Path, command: list[str], *, network: bool = False, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``command`` through the built-in executor's ``run``, started in a sandbox."""
    assert PROBE.bwrap is not None
    sandbox = Confinement(PROBE.bwrap, workspace, omni_read_paths(), network=network)
    environ = {**os.environ, "OMNI_TEST_API_KEY": SECRET, **(env or {})}
    async with ExecutorPool(
        {}, workspace=workspace, environ=environ, per_run=True, sandbox=sandbox
    ) as pool:
        outcome = await pool.call_tool("builtin", "run", {"command": command, "timeout": 30})
    assert outcome.structured is not None
    return dict(outcome.structured)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@needs_bwrap
async def test_a_sandboxed_run_sees_only_its_own_processes(workspace: Path) -> None:
    found = await run_inside(workspace, ["sh", "-c", "ls /proc | grep -E '^[0-9]+$'"])
    pids = {int(p) for p in found["output"].split()}
    assert os.getpid() not in pids
    assert max(pids) < 50  # bwrap, the builtin server, sh, ls: a fresh PID namespace
    missing = await run_inside(workspace, ["cat", f"/proc/{os.getpid()}/environ"])
    assert missing["exit_code"] != 0
    assert SECRET not in missing["output"]


@needs_bwrap
async def test_a_sandboxed_run_has_only_loopback_and_a_clean_environment(
    workspace: Path,
) -> None:
    net = await run_inside(workspace, ["cat", "/proc/net/dev"])
    interfaces = [line.split(":")[0].strip() for line in net["output"].splitlines()[2:]]
    assert interfaces == ["lo"]
    env = await run_inside(workspace, ["env"])
    names = {line.split("=", 1)[0] for line in env["output"].splitlines()}
    assert names <= {"PATH", "HOME", "PYTHONPATH", "PWD", "SHLVL", "_", "LC_CTYPE"}
    assert SECRET not in env["output"]
    assert "HOME=/tmp" in env["output"].splitlines()


@needs_bwrap
async def test_a_sandboxed_run_cannot_write_or_read_outside_its_workspace(
    workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".git-credentials").write_text(f"https://x:{SECRET}@github.com\n")
    script = (
        f"echo in > inside.txt; echo x > {outside}/escape.txt; echo x > /escape.txt;"
        f" echo x > /usr/escape.txt; cat {outside}/.git-credentials; ls {Path.home()};"
        " echo tmp > /tmp/private.txt && cat /tmp/private.txt"
    )
    found = await run_inside(workspace, ["sh", "-c", script])
    assert files(workspace) == ["inside.txt"]
    assert files(outside) == [".git-credentials"]
    assert existing("/escape.txt", "/usr/escape.txt", "/tmp/private.txt") == []
    assert SECRET not in found["output"]
    assert "Read-only file system" in found["output"] or "No such file" in found["output"]
    assert found["output"].rstrip().endswith("tmp")  # a private, writable /tmp


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def existing(*paths: str) -> list[str]:
    return [p for p in paths if Path(p).exists()]


@needs_bwrap
async def test_the_network_is_off_unless_allowed(workspace: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = (
            "import socket,sys\n"
            f"try: socket.create_connection(('127.0.0.1', {port}), timeout=5); print('open')\n"
            "except OSError as e: print('refused', e)\n"
        )
        off = await run_inside(workspace, [sys.executable, "-c", code])
        on = await run_inside(workspace, [sys.executable, "-c", code], network=True)
    assert off["output"].startswith("refused")
    assert on["output"].strip() == "open"


# --- the probe ---------------------------------------------------------------------------


@needs_bwrap
def test_the_probe_finds_a_working_bwrap() -> None:
    found = probe(refresh=True)
    assert found.available, found.explain()
    assert found.explain().startswith("bubblewrap works")


def test_the_probe_names_cause_and_fix_when_user_namespaces_are_blocked(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    found = probe({BWRAP_ENV: str(fake)}, refresh=True)
    assert not found.available
    assert "setting up uid map: Permission denied" in found.cause
    assert "namespaces" in found.cause
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in found.fix


def _counting_bwrap(folder: Path) -> tuple[dict[str, str], Path]:
    """A bwrap that notes each start in a file and fails as AppArmor makes it fail."""
    starts = folder / "starts"
    fake = folder / "bwrap"
    fake.write_text(
        f"#!/bin/sh\necho started >> {starts}\n"
        "echo 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    return {BWRAP_ENV: str(fake)}, starts


def test_an_early_trial_is_the_one_the_probe_judges(tmp_path: Path) -> None:
    environ, starts = _counting_bwrap(tmp_path)
    with probing(SandboxMode.AUTO, environ):
        for _ in range(1000):  # it starts before anyone asks (no time is asserted)
            if starts.exists():
                break
            time.sleep(0.01)
        assert starts.read_text() == "started\n"
        found = probe(environ)
    assert "setting up uid map: Permission denied" in found.cause
    assert probe(environ) is found
    assert starts.read_text() == "started\n"  # one trial for both answers


def test_an_early_trial_nobody_asked_for_is_judged_on_the_way_out(tmp_path: Path) -> None:
    environ, starts = _counting_bwrap(tmp_path)
    with probing(SandboxMode.OFF, environ):
        pass
    assert not starts.exists()  # `sandbox: off` tries nothing
    with probing(SandboxMode.REQUIRED, environ):
        pass
    assert not probe(environ).available
    assert starts.read_text() == "started\n"


def test_the_probe_says_when_bwrap_is_missing(tmp_path: Path) -> None:
    found = probe({"PATH": str(tmp_path)}, refresh=True)
    assert (found.available, found.cause) == (False, "bwrap is not installed")
    assert "apt-get install -y bubblewrap" in found.fix
    named = probe({BWRAP_ENV: str(tmp_path / "nope")}, refresh=True)
    assert named.cause == f"{BWRAP_ENV}={tmp_path / 'nope'} is not an executable"


def test_the_argv_binds_only_what_it_lists(tmp_path: Path) -> None:
    argv = Confinement("/usr/bin/bwrap", tmp_path, (Path("/opt/x"),), env={"A": "1"}).argv(
        "/usr/bin/env", ["-0"]
    )
    text = json.dumps(argv)
    assert argv[:2] == ["/usr/bin/bwrap", "--unshare-all"]
    assert "--share-net" not in argv
    assert '"--clearenv"' in text and '"--setenv", "A", "1"' in text
    assert '"--bind", "' + str(tmp_path) in text
    assert argv[-3:] == ["--", "/usr/bin/env", "-0"]
    assert "/opt/x" not in argv  # a missing path is not bound
    assert str(Path.home()) not in argv
    assert "/etc/shadow" not in text
