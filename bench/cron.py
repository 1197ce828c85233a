"""Bench: the cron engine's next and latest slot (DESIGN §6; issue 17's bars: at most
50 µs median over a mixed set, no expression over 5 ms).

Times ``FireTimes.next_after`` and ``FireTimes.latest_at`` of :mod:`runner.planning.cron`
on a compiled schedule: a mixed set (common expressions in five zones, at seeded random
instants of 2026, a third of them within a day of a clock change), and the pathological
expressions the issue lists, each at instants spread over four years. Each call is timed
as the median of a few repeats, so one preempted call on a busy machine does not stand
for the engine. Prints one JSON object.

    uv run python bench/cron.py [--cases 3000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from runner.planning.cron import FireTimes, fire_times

if TYPE_CHECKING:
    from collections.abc import Callable

BAR_MEDIAN_US = 50.0
BAR_MAX_US = 5000.0
MIXED = (
    "0 3 * * *",
    "*/15 * * * *",
    "0 9 * * 1-5",
    "0 0 1 * *",
    "30 2 * * *",
    "*/5 * * * *",
    "0 * * * *",
    "15 14 1 * *",
    "0 22 * * 1-5",
    "23 0-20/2 * * *",
    "5 4 * * sun",
    "0 0,12 1 */2 *",
    "* * * * *",
    "0 0 1 1 *",
    "@daily",
    "@hourly",
    "30 1-5 * * *",
    "0 9-17 * * mon-fri",
    "every 10m",
    "every 1d",
)
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Havana")
PATHOLOGICAL = (
    ("0 9 31 2 1-5", "UTC"),
    ("* * * JAN *", "UTC"),
    ("0 0 29 2 *", "UTC"),
    ("59 23 31 12 *", "Europe/Berlin"),
    ("0 0 1 jan-dec/2 *", "UTC"),
    ("0-59 2 * * *", "Europe/Berlin"),
    ("* * * * *", "Antarctica/Troll"),
)


def clock_changes(zone: str, year: int) -> list[datetime]:
    """The instants the zone's offset changes in ``year`` (to the half hour)."""
    tz = ZoneInfo(zone)
    moment = datetime(year, 1, 1, tzinfo=UTC)
    before = moment.astimezone(tz).utcoffset()
    found = []
    while moment.year == year:
        moment += timedelta(minutes=30)
        offset = moment.astimezone(tz).utcoffset()
        if offset != before:
            found.append(moment)
            before = offset
    return found


def timed(call: Callable[[datetime], object], moment: datetime, repeats: int) -> float:
    """Microseconds one call takes: the median of ``repeats`` runs."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        call(moment)
        runs.append(time.perf_counter_ns() - start)
    return statistics.median(runs) / 1000


def summary(values: list[float]) -> dict[str, float]:
    """Median, 95th percentile and maximum, in µs."""
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "p95": round(ordered[int(len(ordered) * 0.95)], 1),
        "max": round(ordered[-1], 1),
    }


def mixed(cases: int, repeats: int, rng: random.Random) -> dict[str, object]:
    """next/latest over common expressions, zones and instants."""
    changes = {zone: clock_changes(zone, 2026) for zone in ZONES}
    start = datetime(2026, 1, 1, tzinfo=UTC)
    nexts, latests = [], []
    for _ in range(cases):
        zone = rng.choice(ZONES)
        times = fire_times(rng.choice(MIXED), zone)
        if changes[zone] and rng.random() < 1 / 3:
            moment = rng.choice(changes[zone]) + timedelta(seconds=rng.randint(-86400, 86400))
        else:
            moment = start + timedelta(seconds=rng.randrange(365 * 86400))
        nexts.append(timed(times.next_after, moment, repeats))
        latests.append(timed(times.latest_at, moment, repeats))
    return {"cases": cases, "next_us": summary(nexts), "latest_us": summary(latests)}


def pathological(repeats: int, rng: random.Random) -> dict[str, object]:
    """next/latest of each hard expression, at 200 instants over four years."""
    found: dict[str, object] = {}
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for schedule, zone in PATHOLOGICAL:
        times: FireTimes = fire_times(schedule, zone)
        moments = [start + timedelta(seconds=rng.randrange(4 * 365 * 86400)) for _ in range(200)]
        found[f"{schedule} ({zone})"] = {
            "next_us": summary([timed(times.next_after, m, repeats) for m in moments]),
            "latest_us": summary([timed(times.latest_at, m, repeats) for m in moments]),
        }
    return found


def commit() -> str | None:
    """The checked-out commit, short, or ``None`` outside a git checkout."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def main() -> None:
    """Time, print JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(17)
    report = {
        "date": date.today().isoformat(),
        "commit": commit(),
        "mixed": mixed(args.cases, args.repeats, rng),
        "pathological": pathological(args.repeats, rng),
        "bars_us": {"median": BAR_MEDIAN_US, "max": BAR_MAX_US},
        "python": platform.python_version(),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
