"""Bench: start-up of the cheap commands (issue 16 bar: each at most 0.3 s wall with
bytecode cached, at most 1 s without).

Times ``omni --help``, ``omni --version``, ``omni validate`` on one task file and
``omni status`` on a state file that holds a run, each as a whole subprocess of the
installed ``omni`` (interpreter start, imports, the command), median of ``--repeat``
runs, with the child's peak RSS, in three bytecode states:

* ``cached``: every module's bytecode cached (a private ``PYTHONPYCACHEPREFIX``, warmed);
* ``uncached``: Python's own library cached (as any Python install ships it), nothing
  else: the site-packages and omni's source compile on every import (a CI machine
  after a plain ``uv sync``, whose first command writes no bytecode here:
  ``PYTHONDONTWRITEBYTECODE``);
* ``packages_compiled``: the site-packages cached, omni's source not (what
  ``uv sync --compile-bytecode`` gives: omni is installed editable, its source is not
  compiled).

``--install`` also times ``uv sync --frozen --no-dev`` into a fresh environment with
and without ``--compile-bytecode`` (uv's cache warm, as on a CI machine that restores
it; without a cache the download dominates both). Prints one JSON object.

    uv run python bench/startup.py [--repeat 7] [--install]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import measured

BAR_CACHED_S = 0.3
BAR_UNCACHED_S = 1.0
ROOT = Path(__file__).resolve().parent.parent
TASK = "id: hello\ntool: echo\nargs: {text: hello}\n"


def omni_command() -> list[str]:
    """The installed ``omni`` (the console script beside this interpreter)."""
    script = Path(sys.executable).with_name("omni")
    return [str(script)] if script.exists() else [sys.executable, "-m", "runner"]


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int, int]:
    """Wall seconds, CPU seconds (user + system), peak RSS (KiB) and exit code of one
    run of ``argv``."""
    figures = measured.launch(argv, env=env, cwd=cwd).finish()
    return figures.wall_s, figures.cpu_s, round(figures.rss_mib * 1024), figures.exit_code


def commands(work: Path) -> dict[str, list[str]]:
    """The measured commands (run in ``work``)."""
    return {
        "--help": ["--help"],
        "--version": ["--version"],
        "validate one file": ["validate", str(work / "tasks" / "hello.yaml")],
        "status": ["status"],
    }


def prepare(work: Path, env: dict[str, str]) -> None:
    """A tasks folder with one task and a state file with its run (``run --once``)."""
    (work / "tasks").mkdir()
    (work / "tasks" / "hello.yaml").write_text(TASK, encoding="utf-8")
    done = subprocess.run(
        [*omni_command(), "run", "--once"], env=env, cwd=work, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"omni run --once failed: {done.stderr.decode(errors='replace')}")


def prefixes(tmp: Path, env: dict[str, str], work: Path) -> dict[str, Path]:
    """One bytecode folder per state (see the module docstring)."""
    warm = tmp / "pyc-cached"
    warm_env = env | {"PYTHONPYCACHEPREFIX": str(warm)}
    warm_env.pop("PYTHONDONTWRITEBYTECODE", None)
    for argv in commands(work).values():
        subprocess.run(
            [*omni_command(), *argv], env=warm_env, cwd=work, capture_output=True, check=False
        )
    # Everything status and validate may load lazily is warm too.
    subprocess.run(
        [*omni_command(), "run", "--once"], env=warm_env, cwd=work, capture_output=True, check=False
    )
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    source = ROOT / "runner"

    def without(name: str, *trees: Path) -> Path:
        folder = tmp / name
        shutil.copytree(warm, folder)
        for tree in trees:
            shutil.rmtree(folder / tree.relative_to("/"), ignore_errors=True)
        return folder

    return {
        "cached": warm,
        "uncached": without("pyc-uncached", site, source),
        "packages_compiled": without("pyc-packages", source),
    }


def measure(repeat: int) -> dict[str, object]:  # pylint: disable=too-many-locals
    """Every command in every bytecode state."""
    with tempfile.TemporaryDirectory(prefix="omni-startup-") as name:
        tmp = Path(name)
        work = tmp / "repo"
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
        env["COLUMNS"] = "100"
        prepare(work, env)
        states = prefixes(tmp, env, work)
        figures: dict[str, dict[str, object]] = {}
        for state, prefix in states.items():
            run_env = env | {"PYTHONPYCACHEPREFIX": str(prefix), "PYTHONDONTWRITEBYTECODE": "1"}
            for label, argv in commands(work).items():
                walls, cpus, rss, codes = [], [], [], set()
                for _ in range(repeat):
                    wall, cpu, peak, code = timed([*omni_command(), *argv], run_env, work)
                    walls.append(wall)
                    cpus.append(cpu)
                    rss.append(peak)
                    codes.add(code)
                entry = figures.setdefault(label, {})
                entry[f"{state}_s"] = round(statistics.median(walls), 3)
                entry[f"{state}_cpu_s"] = round(statistics.median(cpus), 3)
                entry[f"{state}_rss_mib"] = round(max(rss) / 1024, 1)
                if codes != {0}:
                    entry[f"{state}_exit"] = sorted(codes)
        return figures


def install_times() -> dict[str, float]:
    """``uv sync`` into a fresh environment, with and without ``--compile-bytecode``."""
    out: dict[str, float] = {}
    for label, extra in (("plain_s", []), ("compile_bytecode_s", ["--compile-bytecode"])):
        with tempfile.TemporaryDirectory(prefix="omni-venv-") as venv:
            env = os.environ | {"UV_PROJECT_ENVIRONMENT": venv}
            start = time.perf_counter()
            subprocess.run(
                ["uv", "sync", "--frozen", "--no-dev", "--quiet", *extra],
                cwd=ROOT,
                env=env,
                check=True,
            )
            out[label] = round(time.perf_counter() - start, 2)
    return out


def main() -> None:
    """Parse the arguments, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--install", action="store_true", help="also time uv sync")
    args = parser.parse_args()
    figures = measure(args.repeat)
    worst_cached = max(float(f["cached_s"]) for f in figures.values())  # type: ignore[arg-type]
    worst_cold = max(float(f["uncached_s"]) for f in figures.values())  # type: ignore[arg-type]
    report: dict[str, object] = {
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, {platform.system()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "repeat": args.repeat,
        "commands": figures,
        "bar_cached_s": BAR_CACHED_S,
        "bar_uncached_s": BAR_UNCACHED_S,
        "within_bars": worst_cached <= BAR_CACHED_S and worst_cold <= BAR_UNCACHED_S,
    }
    if args.install:
        report["install"] = install_times()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
