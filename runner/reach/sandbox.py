"""The OS sandbox for model-driven runs' executors: bubblewrap (``bwrap``) on Linux.

:func:`probe` finds out once per process whether a sandbox can start here, and if not,
why and what fixes it (:func:`probing` starts that trial early, so that it runs while
the caller does other work) (Ubuntu 24.04, GitHub's ``ubuntu-latest``, blocks the user
namespaces bubblewrap needs through AppArmor). :class:`Confinement` turns one stdio
executor's command into a ``bwrap`` command line: own PID, IPC, UTS, cgroup and network
namespaces (network only with ``network``), no capabilities, a clean environment
holding only what the executor's config names, the system folders read-only, the
run's workspace and a private ``/tmp`` writable, and nothing of the home folder, the
real repository or omni's own files beyond what is listed read-only.

Remote (HTTP) executors run elsewhere: no sandbox here reaches them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.defs.config import SandboxMode

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

#: The environment variable that names another ``bwrap`` (a testing aid, and for
#: machines where it is not on ``PATH``).
BWRAP_ENV = "OMNI_BWRAP"
#: System folders every sandbox sees read-only (symlinks, e.g. ``/bin -> usr/bin``,
#: are recreated as symlinks).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: Files and folders of ``/etc`` a program may need; never shadow, sudoers, ssh keys.
ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "passwd",
    "group",
    "nsswitch.conf",
    "hosts",
    "mime.types",
    "protocols",
    "services",
)
#: Added when the sandbox may use the network.
ETC_NETWORK = ("resolv.conf", "gai.conf", "ssl", "ca-certificates", "pki", "host.conf")
#: The sandbox's ``PATH`` after the folder of omni's Python.
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Seconds the probe's trial sandbox may take.
PROBE_TIMEOUT = 10.0
_USERNS_KNOBS = {
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": (
        "1",
        "AppArmor restricts unprivileged user namespaces "
        "(kernel.apparmor_restrict_unprivileged_userns=1, as on Ubuntu 24.04 and GitHub's "
        "ubuntu-latest)",
        "run `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (the omni "
        "action does this on GitHub's runners), or install an AppArmor profile that "
        "grants `userns` to /usr/bin/bwrap",
    ),
    "/proc/sys/kernel/unprivileged_userns_clone": (
        "0",
        "the kernel forbids unprivileged user namespaces (kernel.unprivileged_userns_clone=0)",
        "run `sudo sysctl -w kernel.unprivileged_userns_clone=1`",
    ),
    "/proc/sys/user/max_user_namespaces": (
        "0",
        "user namespaces are switched off (user.max_user_namespaces=0)",
        "run `sudo sysctl -w user.max_user_namespaces=15000`",
    ),
}


class SandboxKind(StrEnum):
    """What confines a model-driven run's executors (``sandbox`` in its result)."""

    BWRAP = "bwrap"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Probe:
    """Whether a bubblewrap sandbox starts on this machine, and if not, why and the fix."""

    available: bool
    bwrap: str | None
    cause: str = ""
    fix: str = ""

    def explain(self) -> str:
        """One sentence for results, ``omni status`` and ``omni doctor``."""
        if self.available:
            return f"bubblewrap works ({self.bwrap})"
        return f"no sandbox: {self.cause}; fix: {self.fix}"


@dataclass(frozen=True, slots=True)
class SandboxState:
    """How model-driven runs are confined on this machine, for results and reports."""

    mode: SandboxMode
    """``sandbox:`` of the config."""
    kind: SandboxKind
    """What confines the runs (``none``: nothing)."""
    warning: str | None = None
    """Set when runs go unsandboxed although the mode is not ``off``."""

    def as_dict(self) -> dict[str, Any]:
        """The result file's (and ``omni status``'s) ``sandbox`` field."""
        return {"mode": self.mode.value, "kind": self.kind.value, "warning": self.warning}


def sandbox_state(mode: SandboxMode, found: Probe | None) -> SandboxState:
    """What ``mode`` means given the probe (``None``: not probed, the mode is ``off``)."""
    if mode is SandboxMode.OFF or found is None:
        return SandboxState(mode, SandboxKind.NONE)
    if found.available:
        return SandboxState(mode, SandboxKind.BWRAP)
    what = "refused" if mode is SandboxMode.REQUIRED else "NOT sandboxed"
    return SandboxState(
        mode,
        SandboxKind.NONE,
        f"model-driven runs are {what} (sandbox: {mode.value}): {found.explain()}",
    )


_cached: dict[str, Probe] = {}
#: Trials :func:`probing` started that no :func:`probe` has collected yet.
_pending: dict[str, _Trial] = {}


def find_bwrap(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``bwrap`` to use: ``$OMNI_BWRAP``, else the one on ``PATH``."""
    env = os.environ if environ is None else environ
    named = env.get(BWRAP_ENV)
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("bwrap", path=env.get("PATH") or os.defpath)


def probe(environ: Mapping[str, str] | None = None, *, refresh: bool = False) -> Probe:
    """Start a trial sandbox (``true`` in one) once per process and ``bwrap`` path (or
    collect the one :func:`probing` started)."""
    if not sys.platform.startswith("linux"):
        return Probe(
            False,
            None,
            f"bubblewrap needs Linux; this is {sys.platform}",
            "run model-driven tasks on Linux, or set `sandbox: off` to accept unsandboxed runs",
        )
    bwrap = find_bwrap(environ)
    if bwrap is None:
        named = (environ if environ is not None else os.environ).get(BWRAP_ENV)
        cause = f"{BWRAP_ENV}={named} is not an executable" if named else "bwrap is not installed"
        fix = "install bubblewrap (`sudo apt-get install -y bubblewrap`, or your system's package)"
        return Probe(False, None, cause, fix)
    if not refresh and bwrap in _cached:
        return _cached[bwrap]
    started = None if refresh else _pending.pop(bwrap, None)
    found = (started or _Trial(bwrap)).result()
    _cached[bwrap] = found
    return found


@contextmanager
def probing(mode: SandboxMode, environ: Mapping[str, str] | None = None) -> Iterator[None]:
    """Start the trial sandbox now (unless ``mode`` is ``off``, or it was tried
    already): :func:`probe` inside collects it instead of starting one, so the few
    hundredths of a second it takes pass while the caller works. Its answer is the
    same, from the same trial. One nobody collected is waited for on the way out (its
    folder removed)."""
    linux = sys.platform.startswith("linux")
    bwrap = find_bwrap(environ) if linux and mode is not SandboxMode.OFF else None
    started = None
    if bwrap is not None and bwrap not in _cached and bwrap not in _pending:
        started = _pending[bwrap] = _Trial(bwrap)
    try:
        yield
    finally:
        if bwrap is not None and started is not None and _pending.get(bwrap) is started:
            _cached[bwrap] = _pending.pop(bwrap).result()


class _Trial:
    """``true`` in a sandbox, started now and judged by :meth:`result`."""

    def __init__(self, bwrap: str) -> None:
        self.bwrap = bwrap
        # pylint: disable-next=consider-using-with  # removed in result()
        self._tmp = tempfile.TemporaryDirectory(prefix="omni-probe-")
        true = shutil.which("true", path="/usr/bin:/bin") or "/bin/true"
        argv = Confinement(bwrap, Path(self._tmp.name)).argv(true, [])
        self._child: subprocess.Popen[str] | Probe
        try:
            # pylint: disable-next=consider-using-with  # waited for in result()
            self._child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            why = f"cannot start {bwrap}: {exc.strerror}"
            self._child = Probe(False, bwrap, why, "reinstall bubblewrap")

    def result(self) -> Probe:
        """Wait for the trial (at most :data:`PROBE_TIMEOUT` seconds) and judge it; once."""
        try:
            if isinstance(self._child, Probe):  # it could not start
                return self._child
            return self._judge(self._child)
        finally:
            self._tmp.cleanup()

    def _judge(self, child: subprocess.Popen[str]) -> Probe:
        try:
            _, said = child.communicate(timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return Probe(
                False,
                self.bwrap,
                f"{self.bwrap} did not finish in {PROBE_TIMEOUT:g} s",
                "check the machine",
            )
        return _judged(self.bwrap, child.returncode, said)


def _judged(bwrap: str, returncode: int, stderr: str) -> Probe:
    """The probe from the trial's exit code and what it said on stderr."""
    if returncode == 0:
        return Probe(True, bwrap)
    said = " ".join(stderr.split())[:300] or f"exit code {returncode}"
    for knob, (bad, cause, fix) in _USERNS_KNOBS.items():
        if _read(knob) == bad:
            return Probe(False, bwrap, f"{cause}: bwrap says {said!r}", fix)
    userns = ("uid map", "RTM_NEWADDR", "namespace", "Operation not permitted")
    if any(mark in said for mark in userns):
        return Probe(
            False,
            bwrap,
            f"bwrap cannot create its namespaces: {said!r}",
            "allow unprivileged user namespaces (on Ubuntu 24.04: `sudo sysctl -w "
            "kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile granting "
            "`userns` to /usr/bin/bwrap); inside a container, give it --privileged or a "
            "seccomp profile that allows unshare",
        )
    return Probe(
        False, bwrap, f"bwrap failed: {said!r}", "run `omni doctor` and check bwrap by hand"
    )


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except OSError:
        return None


def omni_read_paths() -> tuple[Path, ...]:
    """What a sandboxed built-in executor must read: omni's Python (its installation and
    virtual environment) and the ``runner`` package."""
    package = Path(__file__).resolve().parent.parent
    found = {Path(sys.base_prefix).resolve(), Path(sys.prefix), package}
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class Confinement:
    """One sandbox: what it may write (``workspace``), read and reach."""

    bwrap: str
    workspace: Path
    """Writable, bound at its own path; the default working folder."""
    read_only: tuple[Path, ...] = ()
    """Extra paths bound read-only at their own paths (missing ones are skipped)."""
    network: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    """The sandbox's whole environment besides ``PATH`` and ``HOME`` (a private ``/tmp``)."""

    def argv(self, command: str, args: Sequence[str], cwd: str | None = None) -> list[str]:
        """The ``bwrap`` command line that runs ``command args`` in this sandbox."""
        out = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
        out += ["--cap-drop", "ALL", "--hostname", "omni-sandbox"]
        if self.network:
            out.append("--share-net")
        for folder in SYSTEM_DIRS:
            out += _mount(Path(folder))
        etc = ETC_ENTRIES + (ETC_NETWORK if self.network else ())
        for name in etc:
            out += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for path in _outermost([*self.read_only, Path(command)]):
            if path.exists() and not _under_system(path):
                out += ["--ro-bind", str(path), str(path)]
        out += ["--bind", str(self.workspace), str(self.workspace)]
        out += ["--remount-ro", "/", "--chdir", cwd or str(self.workspace), "--clearenv"]
        python_bin = str(Path(sys.executable).parent)
        env = {"PATH": f"{python_bin}:{SANDBOX_PATH}", "HOME": "/tmp", **self.env}
        for key, value in env.items():
            out += ["--setenv", key, value]
        return [*out, "--", command, *args]


def _mount(path: Path) -> list[str]:
    if path.is_symlink():
        return ["--symlink", os.readlink(path), str(path)]
    if path.is_dir():
        return ["--ro-bind", str(path), str(path)]
    return []


def _under_system(path: Path) -> bool:
    return any(path.is_relative_to(folder) for folder in SYSTEM_DIRS)


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Absolute ``paths`` without those inside another one (one bind covers them)."""
    found = sorted({Path(os.path.abspath(p)) for p in paths})
    kept: list[Path] = []
    for path in found:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept
