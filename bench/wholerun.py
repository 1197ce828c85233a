"""Bench: a whole ``omni run --once`` over 2,000 new tool tasks vs a bare ``mcp`` SDK loop
(issue 16 bar: at most 1 ms a task of overhead, start-up included).

Both sides are whole processes, started the same way and timed from ``fork`` to exit:

* ``omni``: ``omni run --once`` in a fresh project (``config.yaml`` naming npm
  ``@modelcontextprotocol/server-everything`` as an MCP stdio server, ``--tasks`` task
  files each calling its ``echo`` tool once, no state file, no results yet), its
  summary read from a pipe: interpreter start, omni's imports, loading, planning, the
  server's start, the calls, result files, rows, the summary;
* ``bare``: ``bench/bare.py`` (which imports only the ``mcp`` SDK) starting the same
  server the same way and calling ``echo`` as many times over one session: interpreter
  start, the SDK's import, the server's start, the calls. Serially (``bare_serial``,
  the issue's reference) and with as many calls in flight as omni runs at once by
  default (``bare_concurrent``: ``dispatch.concurrency`` and the server's
  ``max_concurrency``).

The server is installed once into ``WORK/npm`` (``npm install --prefix``; needs the npm
registry the first time) and started as ``node .../dist/index.js stdio`` on both sides,
so ``npx``'s own start-up is in neither. The sides take turns (``--rounds``, each a new
project); the medians are compared: ``overhead_ms_per_task`` = (omni wall - bare wall)
/ tasks. CPU seconds (user + system of the process and the children it waited for: the
server) and peak RSS are reported too: on a shared machine CPU time is the steadier
figure. ``file_create_us``: what creating one file costs on the results' file system
at the start and the end (an ext4 without a journal is slow for minutes after many
deletions: see bench/README.md, dispatch). Prints one JSON object.

    uv run python bench/wholerun.py [--tasks 2000] [--rounds 5] [--work DIR] [--baseline SRC]
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
import tempfile
from pathlib import Path
from typing import Any

from dispatch import file_create_us
from measured import launch

BAR_MS_PER_TASK = 1.0
PACKAGE = "@modelcontextprotocol/server-everything"
BENCH = Path(__file__).resolve().parent
CONCURRENCY = 4
"""omni's default ``dispatch.concurrency`` and ``max_concurrency`` of a server."""


def server_command(work: Path) -> list[str]:
    """``node .../dist/index.js stdio``, installing the package into ``work/npm`` first
    if it is not there yet."""
    prefix = work / "npm"
    script = prefix / "node_modules" / PACKAGE / "dist" / "index.js"
    if not script.exists():
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(prefix),
                PACKAGE,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not on PATH")
    return [node, str(script), "stdio"]


def omni_command() -> list[str]:
    """The installed ``omni`` (the console script beside this interpreter)."""
    script = Path(sys.executable).with_name("omni")
    return [str(script)] if script.exists() else [sys.executable, "-m", "runner"]


def make_project(folder: Path, server: list[str], tasks: int) -> None:
    """A project with the server as executor ``everything`` and ``tasks`` echo tasks."""
    (folder / "tasks").mkdir(parents=True)
    config = {"mcp_servers": {"everything": {"command": server[0], "args": server[1:]}}}
    (folder / "config.yaml").write_text(json.dumps(config) + "\n", encoding="utf-8")
    for i in range(tasks):
        (folder / "tasks" / f"t{i:05d}.yaml").write_text(
            f"executor: everything\ntool: echo\nargs: {{message: hello {i}}}\n", encoding="utf-8"
        )


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds and peak RSS (MiB) of one whole run of ``argv``, its output
    read from a pipe as it comes; fails the bench when it exits non-zero."""
    with tempfile.TemporaryFile() as err:
        started = launch(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err)
        pipe = started.process.stdout
        assert pipe is not None
        while pipe.read(65536):
            pass
        pipe.close()
        figures = started.finish()
        if figures.exit_code:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"{argv[0]} exited {figures.exit_code}: {tail}")
    return {
        "wall_s": round(figures.wall_s, 3),
        "cpu_s": round(figures.cpu_s, 3),
        "rss_mib": round(figures.rss_mib, 1),
    }


def one_omni(
    work: Path, server: list[str], tasks: int, turn: str, env: dict[str, str]
) -> dict[str, float]:
    """One whole ``omni run --once`` over ``tasks`` new tasks in a new project."""
    project = work / f"project-{turn}"
    make_project(project, server, tasks)
    figures = timed([*omni_command(), "run", "--once"], project, env)
    written = sum(1 for _ in (project / "results").glob("*/*.json"))
    if written != tasks:
        raise SystemExit(f"omni wrote {written} results for {tasks} tasks")
    return figures


def one_bare(server: list[str], tasks: int, conc: int, env: dict[str, str]) -> dict[str, float]:
    """One whole bare SDK run: ``tasks`` echo calls, ``conc`` in flight."""
    argv = [sys.executable, str(BENCH / "bare.py"), "--calls", str(tasks)]
    argv += ["--concurrency", str(conc), "--args", '{"message": "hello"}', "echo", "--", *server]
    return timed(argv, BENCH, env)


def medians(turns: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over the turns."""
    return {key: round(statistics.median(t[key] for t in turns), 3) for key in turns[0]}


def measure(  # pylint: disable=too-many-arguments,too-many-locals
    work: Path,
    server: list[str],
    tasks: int,
    rounds: int,
    pycache: Path,
    baseline: Path | None = None,
) -> dict[str, Any]:
    """The sides in turns (projects made in ``work``, bytecode cached in ``pycache``);
    medians and the overhead a task; with ``baseline`` (a folder holding another
    version's ``runner`` package), that version's whole run too, in the same turns."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    # Bytecode cached on both sides (a private cache, warmed by the first turns).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    sides: dict[str, list[dict[str, float]]] = {
        "omni": [],
        "bare_serial": [],
        "bare_concurrent": [],
    }
    # ``--baseline SRC``: omni's code from another checkout, run by this environment.
    old = env | {"PYTHONPATH": str(baseline)} if baseline is not None else None
    probe_start = file_create_us(work / "probe-start")
    # One untimed turn of each warms the page cache and the bytecode.
    one_omni(work, server, 20, "warm", env)
    one_bare(server, 20, 1, env)
    if old is not None:
        sides["omni_baseline"] = []
        one_omni(work, server, 20, "warm-baseline", old)
    for turn in range(rounds):
        sides["bare_serial"].append(one_bare(server, tasks, 1, env))
        sides["omni"].append(one_omni(work, server, tasks, str(turn), env))
        sides["bare_concurrent"].append(one_bare(server, tasks, CONCURRENCY, env))
        if old is not None:
            sides["omni_baseline"].append(one_omni(work, server, tasks, f"{turn}-baseline", old))
    out: dict[str, Any] = {"tasks": tasks, "rounds": rounds}
    for side, turns in sides.items():
        out[side] = medians(turns) | {"turns": turns}
    for side in ("omni", "omni_baseline") if old is not None else ("omni",):
        mine = out[side]
        for bare in ("bare_serial", "bare_concurrent"):
            ref = out[bare]
            out[f"{side}_overhead_vs_{bare}"] = {
                "wall_ms_per_task": round((mine["wall_s"] - ref["wall_s"]) * 1000 / tasks, 3),
                "cpu_ms_per_task": round((mine["cpu_s"] - ref["cpu_s"]) * 1000 / tasks, 3),
            }
    out["file_create_us"] = {"start": probe_start, "end": file_create_us(work / "probe-end")}
    return out


def main() -> None:
    """Measure and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="turns a side; medians")
    parser.add_argument(
        "--work", type=Path, help="keeps the npm install between runs (default: a temp folder)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a folder holding another version's runner/ (e.g. `git archive main runner`):"
        " its whole run too, in the same turns",
    )
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omni-wholerun-") as tmp:
        cache = opts.work or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        server = server_command(cache)
        with tempfile.TemporaryDirectory(prefix="runs-", dir=cache) as runs:
            report = {
                "python": platform.python_version(),
                "machine": {"cores": os.cpu_count(), "load_average": os.getloadavg()},
                "bar_ms_per_task": BAR_MS_PER_TASK,
                **measure(
                    Path(runs),
                    server,
                    opts.tasks,
                    opts.rounds,
                    cache / "pycache",
                    opts.baseline.resolve() if opts.baseline else None,
                ),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
