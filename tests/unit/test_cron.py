"""runner.planning.cron: the one cron engine (due-ness in CI, status, service mode).

Three kinds of evidence:

* tables of cases whose answers are facts from elsewhere: cronsim's and croniter's own
  test suites (where they agree with Debian cron; a note says where they do not), and
  the DST changes the issue lists, zone by zone;
* seeded properties over 10,000+ random (expression, zone, instant) cases: the latest and
  the next slot agree with each other;
* a brute-force minute walk applying Debian cron's rules literally, and cronsim's own
  iterator in UTC, compared with the engine's slots.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from runner.defs.cron import CronError, CronSpec, parse_cron
from runner.planning.cron import fire_times

RIGA = "Europe/Riga"
BERLIN = "Europe/Berlin"
ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "America/Havana",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Antarctica/Troll",
    "America/Nuuk",
    "Asia/Tehran",
    "UTC",
    "Africa/Cairo",
    "America/Sao_Paulo",
)
SECOND = timedelta(seconds=1)


def moment(text: str) -> datetime:
    """An ISO time; without an offset, UTC."""
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def local(value: datetime | None, zone: str) -> str | None:
    """``value`` as ISO local time with its offset, as the cases write it."""
    return None if value is None else value.astimezone(ZoneInfo(zone)).isoformat()


def following(schedule: str, zone: str, start: str, count: int) -> list[str | None]:
    times = fire_times(schedule, zone)
    found: list[str | None] = []
    current: datetime | None = moment(start)
    for _ in range(count):
        assert current is not None
        current = times.next_after(current)
        found.append(local(current, zone))
    return found


# (schedule, zone, start, the fires after start in local time)
NEXT_CASES = [
    # cronsim TestDstTransitions (Europe/Riga: 2021-03-28 03:00 -> 04:00; 2021-10-31
    # 04:00 -> 03:00). Wildcard jobs follow the clock, fixed-time jobs run skipped times
    # at the jump and repeated ones once.
    (
        "0 * * * *",
        RIGA,
        "2021-03-28T01:30+02:00",
        ["2021-03-28T02:00+02:00", "2021-03-28T04:00+03:00"],
    ),
    (
        "0 * * * *",
        RIGA,
        "2021-10-31T01:30+03:00",
        [
            "2021-10-31T02:00+03:00",
            "2021-10-31T03:00+03:00",
            "2021-10-31T03:00+02:00",
            "2021-10-31T04:00+02:00",
        ],
    ),
    (
        "*/30 * * * *",
        RIGA,
        "2021-03-28T02:10+02:00",
        ["2021-03-28T02:30+02:00", "2021-03-28T04:00+03:00", "2021-03-28T04:30+03:00"],
    ),
    (
        "*/30 * * * *",
        RIGA,
        "2021-10-31T02:10+03:00",
        [
            "2021-10-31T02:30+03:00",
            "2021-10-31T03:00+03:00",
            "2021-10-31T03:30+03:00",
            "2021-10-31T03:00+02:00",
            "2021-10-31T03:30+02:00",
            "2021-10-31T04:00+02:00",
        ],
    ),
    (
        "*/15 * * * *",
        RIGA,
        "2021-03-28T02:40+02:00",
        ["2021-03-28T02:45+02:00", "2021-03-28T04:00+03:00"],
    ),
    (
        "*/15 * * * *",
        RIGA,
        "2021-10-31T02:40+03:00",
        [
            "2021-10-31T02:45+03:00",
            "2021-10-31T03:00+03:00",
            "2021-10-31T03:15+03:00",
            "2021-10-31T03:30+03:00",
            "2021-10-31T03:45+03:00",
            "2021-10-31T03:00+02:00",
            "2021-10-31T03:15+02:00",
            "2021-10-31T03:30+02:00",
            "2021-10-31T03:45+02:00",
            "2021-10-31T04:00+02:00",
        ],
    ),
    (
        "0 */2 * * *",
        RIGA,
        "2021-03-28T01:30+02:00",
        ["2021-03-28T02:00+02:00", "2021-03-28T04:00+03:00", "2021-03-28T06:00+03:00"],
    ),
    (
        "0 */2 * * *",
        RIGA,
        "2021-10-31T01:30+03:00",
        ["2021-10-31T02:00+03:00", "2021-10-31T04:00+02:00", "2021-10-31T06:00+02:00"],
    ),
    (
        "30 */2 * * *",
        RIGA,
        "2021-03-28T01:30+02:00",
        ["2021-03-28T02:30+02:00", "2021-03-28T04:30+03:00"],
    ),
    (
        "30 */2 * * *",
        RIGA,
        "2021-10-31T01:30+03:00",
        ["2021-10-31T02:30+03:00", "2021-10-31T04:30+02:00"],
    ),
    (
        "0 */3 * * *",
        RIGA,
        "2021-10-31T01:30+03:00",
        ["2021-10-31T03:00+03:00", "2021-10-31T03:00+02:00", "2021-10-31T06:00+02:00"],
    ),
    (
        "0 1,2,3,4,5 * * *",
        RIGA,
        "2021-03-28T01:30+02:00",
        ["2021-03-28T02:00+02:00", "2021-03-28T04:00+03:00", "2021-03-28T05:00+03:00"],
    ),
    (
        "0 1,2,3,4,5 * * *",
        RIGA,
        "2021-10-31T01:30+03:00",
        ["2021-10-31T02:00+03:00", "2021-10-31T03:00+03:00", "2021-10-31T04:00+02:00"],
    ),
    (
        "30 1,2,3,4,5 * * *",
        RIGA,
        "2021-03-28T01:30+02:00",
        ["2021-03-28T02:30+02:00", "2021-03-28T04:00+03:00", "2021-03-28T04:30+03:00"],
    ),
    (
        "30 1,2,3,4,5 * * *",
        RIGA,
        "2021-10-31T01:30+03:00",
        ["2021-10-31T02:30+03:00", "2021-10-31T03:30+03:00", "2021-10-31T04:30+02:00"],
    ),
    (
        "0 2 * * *",
        RIGA,
        "2021-03-28T01:30+02:00",
        ["2021-03-28T02:00+02:00", "2021-03-29T02:00+03:00"],
    ),
    (
        "0 2 * * *",
        RIGA,
        "2021-10-31T01:30+03:00",
        ["2021-10-31T02:00+03:00", "2021-11-01T02:00+02:00"],
    ),
    (
        "0 3 * * *",
        RIGA,
        "2021-03-27T01:30+02:00",
        ["2021-03-27T03:00+02:00", "2021-03-28T04:00+03:00", "2021-03-29T03:00+03:00"],
    ),
    (
        "0 3 * * *",
        RIGA,
        "2021-10-31T01:30+03:00",
        ["2021-10-31T03:00+03:00", "2021-11-01T03:00+02:00"],
    ),
    (
        "0 4 * * *",
        RIGA,
        "2021-03-27T01:30+02:00",
        ["2021-03-27T04:00+02:00", "2021-03-28T04:00+03:00", "2021-03-29T04:00+03:00"],
    ),
    (
        "0 4 * * *",
        RIGA,
        "2021-10-30T01:30+03:00",
        ["2021-10-30T04:00+03:00", "2021-10-31T04:00+02:00", "2021-11-01T04:00+02:00"],
    ),
    (
        "0 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23 * * *",
        RIGA,
        "2021-03-28T01:30+02:00",
        ["2021-03-28T02:00+02:00", "2021-03-28T04:00+03:00", "2021-03-28T05:00+03:00"],
    ),
    (
        "0 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23 * * *",
        RIGA,
        "2021-10-31T01:30+03:00",
        ["2021-10-31T02:00+03:00", "2021-10-31T03:00+03:00", "2021-10-31T04:00+02:00"],
    ),
    (
        "0 1,3,5,7,9,11,13,15,17,19,21,23 * * *",
        RIGA,
        "2021-03-28T00:30+02:00",
        ["2021-03-28T01:00+02:00", "2021-03-28T04:00+03:00", "2021-03-28T05:00+03:00"],
    ),
    (
        "0 1,3,5,7,9,11,13,15,17,19,21,23 * * *",
        RIGA,
        "2021-10-31T00:30+03:00",
        ["2021-10-31T01:00+03:00", "2021-10-31T03:00+03:00", "2021-10-31T05:00+02:00"],
    ),
    (
        "0 1-5 * * *",
        RIGA,
        "2021-03-28T01:30+02:00",
        ["2021-03-28T02:00+02:00", "2021-03-28T04:00+03:00", "2021-03-28T05:00+03:00"],
    ),
    (
        "0 1-5 * * *",
        RIGA,
        "2021-10-31T01:30+03:00",
        ["2021-10-31T02:00+03:00", "2021-10-31T03:00+03:00", "2021-10-31T04:00+02:00"],
    ),
    (
        "15 3 * * *",
        RIGA,
        "2021-03-27T00:00+02:00",
        ["2021-03-27T03:15+02:00", "2021-03-28T04:00+03:00", "2021-03-29T03:15+03:00"],
    ),
    (
        "15 3 * * *",
        RIGA,
        "2021-10-30T00:00+03:00",
        ["2021-10-30T03:15+03:00", "2021-10-31T03:15+03:00", "2021-11-01T03:15+02:00"],
    ),
    (
        "* * * * *",
        RIGA,
        "2021-03-28T02:58+02:00",
        ["2021-03-28T02:59+02:00", "2021-03-28T04:00+03:00"],
    ),
    (
        "* * * * *",
        RIGA,
        "2021-10-31T03:58+03:00",
        ["2021-10-31T03:59+03:00", "2021-10-31T03:00+02:00", "2021-10-31T03:01+02:00"],
    ),
    (
        "* 1-6 * * *",
        RIGA,
        "2021-03-28T02:58+02:00",
        ["2021-03-28T02:59+02:00", "2021-03-28T04:00+03:00"],
    ),
    (
        "* 1-6 * * *",
        RIGA,
        "2021-10-31T03:58+03:00",
        ["2021-10-31T03:59+03:00", "2021-10-31T03:00+02:00", "2021-10-31T03:01+02:00"],
    ),
    # cronsim TestIterator (UTC)
    (
        "1 1 1-7 * */7",
        "UTC",
        "2020-01-01",
        [
            "2020-01-05T01:01+00:00",
            "2020-02-02T01:01+00:00",
            "2020-03-01T01:01+00:00",
            "2020-04-05T01:01+00:00",
        ],
    ),
    (
        "1 1 */100,1-7 * MON",
        "UTC",
        "2020-01-01",
        [
            "2020-01-06T01:01+00:00",
            "2020-02-03T01:01+00:00",
            "2020-03-02T01:01+00:00",
            "2020-04-06T01:01+00:00",
        ],
    ),
    (
        "1 1 * * */3",
        "UTC",
        "2020-01-01",
        [
            "2020-01-01T01:01+00:00",
            "2020-01-04T01:01+00:00",
            "2020-01-05T01:01+00:00",
            "2020-01-08T01:01+00:00",
        ],
    ),
    # croniter test_croniter.py (UTC)
    (
        "*/5 * * * *",
        "UTC",
        "2010-01-23T12:18",
        ["2010-01-23T12:20+00:00", "2010-01-23T12:25+00:00"],
    ),
    ("*/5 * * * *", "UTC", "2010-01-23T12:55", ["2010-01-23T13:00+00:00"]),
    (
        "0 */3 * * *",
        "UTC",
        "2010-01-24T12:02",
        [
            "2010-01-24T15:00+00:00",
            "2010-01-24T18:00+00:00",
            "2010-01-24T21:00+00:00",
            "2010-01-25T00:00+00:00",
        ],
    ),
    (
        "0 0 */3 * *",
        "UTC",
        "2010-02-24T12:09",
        ["2010-02-25T00:00+00:00", "2010-02-28T00:00+00:00", "2010-03-01T00:00+00:00"],
    ),
    ("0 0 * * *", "UTC", "1996-02-27", ["1996-02-28T00:00+00:00", "1996-02-29T00:00+00:00"]),
    ("0 0 * * *", "UTC", "2000-02-27", ["2000-02-28T00:00+00:00", "2000-02-29T00:00+00:00"]),
    ("0 0 * * sat", "UTC", "2010-02-25", ["2010-02-27T00:00+00:00", "2010-03-06T00:00+00:00"]),
    (
        "0 0 1 * wed",
        "UTC",
        "2010-01-25",
        ["2010-01-27T00:00+00:00", "2010-02-01T00:00+00:00", "2010-02-03T00:00+00:00"],
    ),
    # croniter's "vixie cron bug" mode is Debian's rule: */2 starts with *, so AND
    (
        "0 16 */2 * sat",
        "UTC",
        "2023-05-02",
        [
            "2023-05-13T16:00+00:00",
            "2023-05-27T16:00+00:00",
            "2023-06-03T16:00+00:00",
            "2023-06-17T16:00+00:00",
        ],
    ),
    ("0 0 1 * *", "UTC", "2010-01-25", ["2010-02-01T00:00+00:00", "2010-03-01T00:00+00:00"]),
    (
        "0 * * 3 *",
        "UTC",
        "2012-01-01",
        ["2012-03-01T00:00+00:00", "2012-03-01T01:00+00:00", "2012-03-01T02:00+00:00"],
    ),
    (
        "00 03 16,30 * *",
        "UTC",
        "2013-03-01T12:17:34.257877",
        ["2013-03-16T03:00+00:00", "2013-03-30T03:00+00:00", "2013-04-16T03:00+00:00"],
    ),
    ("0 0 1 3,6,9,12 *", "UTC", "2016-03-01", ["2016-06-01T00:00+00:00"]),
    ("0 0 1 3,6,9,12 *", "UTC", "2016-02-15", ["2016-03-01T00:00+00:00"]),
    ("0 0 1 3,6,9,12 *", "UTC", "2016-12-03T10:00", ["2017-03-01T00:00+00:00"]),
    ("0 10 * * *", "UTC", "2018-01-02T10:00:00.000500", ["2018-01-03T10:00+00:00"]),
    ("0 10 * * *", "UTC", "2018-01-02T09:59:59.999999", ["2018-01-02T10:00+00:00"]),
    ("4 * * * *", "UTC", "2018-05-21T00:04:20", ["2018-05-21T01:04+00:00"]),
    (
        "0 0 * * 2-4",
        "UTC",
        "2019-01-14",
        [
            "2019-01-15T00:00+00:00",
            "2019-01-16T00:00+00:00",
            "2019-01-17T00:00+00:00",
            "2019-01-22T00:00+00:00",
        ],
    ),
    (
        "0 0 * * wed-7",
        "UTC",
        "2019-01-14",
        [
            "2019-01-16T00:00+00:00",
            "2019-01-17T00:00+00:00",
            "2019-01-18T00:00+00:00",
            "2019-01-19T00:00+00:00",
            "2019-01-20T00:00+00:00",
            "2019-01-23T00:00+00:00",
        ],
    ),
    # croniter's DST tests, where they agree with Debian cron
    ("0 0 * * *", "Europe/Warsaw", "2017-03-26T00:00+01:00", ["2017-03-27T00:00+02:00"]),
    ("0 * * * *", "Europe/Warsaw", "2017-03-26T01:00+01:00", ["2017-03-26T03:00+02:00"]),
    (
        "0 * * * *",
        "Europe/Warsaw",
        "2017-10-29T01:59+02:00",
        ["2017-10-29T02:00+02:00", "2017-10-29T02:00+01:00"],
    ),
    ("0 * * * *", "Europe/Warsaw", "2017-10-29T02:00+01:00", ["2017-10-29T03:00+01:00"]),
    ("0 0 * * *", "America/Sao_Paulo", "2018-02-17T21:00-02:00", ["2018-02-18T00:00-03:00"]),
    (
        "0 0 * * *",
        "America/Sao_Paulo",
        "2018-02-17T23:05-03:00",
        ["2018-02-18T00:00-03:00", "2018-02-19T00:00-03:00"],
    ),
    (
        "0 0 * * *",
        "Asia/Hebron",
        "2022-03-25T12:00+02:00",
        ["2022-03-26T00:00+02:00", "2022-03-27T01:00+03:00", "2022-03-28T00:00+03:00"],
    ),
    (
        "*/30 * * * *",
        "Europe/Athens",
        "2013-10-27T02:00+03:00",
        [
            "2013-10-27T02:30+03:00",
            "2013-10-27T03:00+03:00",
            "2013-10-27T03:30+03:00",
            "2013-10-27T03:00+02:00",
            "2013-10-27T03:30+02:00",
            "2013-10-27T04:00+02:00",
            "2013-10-27T04:30+02:00",
        ],
    ),
    (
        "*/30 * * * *",
        "Europe/Athens",
        "2013-03-31T01:00+02:00",
        [
            "2013-03-31T01:30+02:00",
            "2013-03-31T02:00+02:00",
            "2013-03-31T02:30+02:00",
            "2013-03-31T04:00+03:00",
            "2013-03-31T04:30+03:00",
        ],
    ),
    ("0 0 24 * *", "Australia/Adelaide", "2020-04-15T00:00+09:30", ["2020-04-24T00:00+09:30"]),
    # croniter skips the day here; Debian cron runs 02:01 at the jump
    (
        "1 2 * * *",
        "Europe/Paris",
        "2020-03-29T01:59:55+01:00",
        ["2020-03-29T03:00+02:00", "2020-03-30T02:01+02:00"],
    ),
    # The cases
    (
        "0 0 * * *",
        BERLIN,
        "2026-03-29T00:00:30+01:00",
        ["2026-03-30T00:00+02:00", "2026-03-31T00:00+02:00"],
    ),
    (
        "0 0 * * 1-5",
        "America/New_York",
        "2026-03-06T00:00:30-05:00",
        ["2026-03-09T00:00-04:00", "2026-03-10T00:00-04:00"],
    ),
    (
        "0 0 * * *",
        "America/Havana",
        "2026-03-07T12:00-05:00",
        ["2026-03-08T01:00-04:00", "2026-03-09T00:00-04:00"],
    ),
    (
        "0 0 * * *",
        "Africa/Cairo",
        "2026-04-23T12:00+02:00",
        ["2026-04-24T01:00+03:00", "2026-04-25T00:00+03:00"],
    ),
    (
        "0 1-4 * * *",
        "Australia/Lord_Howe",
        "2026-10-04T00:30+10:30",
        [
            "2026-10-04T01:00+10:30",
            "2026-10-04T02:30+11:00",
            "2026-10-04T03:00+11:00",
            "2026-10-04T04:00+11:00",
        ],
    ),
    (
        "30 1-5 * * *",
        BERLIN,
        "2026-03-29T00:00+01:00",
        [
            "2026-03-29T01:30+01:00",
            "2026-03-29T03:00+02:00",
            "2026-03-29T03:30+02:00",
            "2026-03-29T04:30+02:00",
            "2026-03-29T05:30+02:00",
        ],
    ),
    (
        "30 2 * * *",
        BERLIN,
        "2026-03-28T12:00+01:00",
        ["2026-03-29T03:00+02:00", "2026-03-30T02:30+02:00"],
    ),
    (
        "0 */2 * * *",
        BERLIN,
        "2026-03-29T00:30+01:00",
        ["2026-03-29T04:00+02:00", "2026-03-29T06:00+02:00"],
    ),
    (
        "* 23 * * sat",
        "America/Nuuk",
        "2026-03-28T22:58-02:00",
        ["2026-04-04T23:00-01:00", "2026-04-04T23:01-01:00"],
    ),
    (
        "* 23 * * sat",
        "America/Nuuk",
        "2026-10-24T23:58-01:00",
        ["2026-10-24T23:59-01:00", "2026-10-24T23:00-02:00", "2026-10-24T23:01-02:00"],
    ),
    (
        "*/15 * * * *",
        BERLIN,
        "2026-10-25T01:40+02:00",
        [
            "2026-10-25T01:45+02:00",
            "2026-10-25T02:00+02:00",
            "2026-10-25T02:15+02:00",
            "2026-10-25T02:30+02:00",
            "2026-10-25T02:45+02:00",
            "2026-10-25T02:00+01:00",
            "2026-10-25T02:15+01:00",
            "2026-10-25T02:30+01:00",
            "2026-10-25T02:45+01:00",
            "2026-10-25T03:00+01:00",
        ],
    ),
    (
        "30 2 * * *",
        BERLIN,
        "2026-10-25T02:10+01:00",
        ["2026-10-26T02:30+01:00"],
    ),  # ran at 02:30 CEST
    (
        "* * * * *",
        "Antarctica/Troll",
        "2026-10-25T02:59+02:00",
        ["2026-10-25T01:00+00:00", "2026-10-25T01:01+00:00"],
    ),
    (
        "0 1-4 * * *",
        "Antarctica/Troll",
        "2026-03-29T00:30+00:00",
        ["2026-03-29T03:00+02:00", "2026-03-29T04:00+02:00"],
    ),
    (
        "0 3 * * *",
        "Pacific/Chatham",
        "2026-09-27T00:00+12:45",
        ["2026-09-27T03:45+13:45", "2026-09-28T03:00+13:45"],
    ),
    (
        "*/30 * * * *",
        "Pacific/Chatham",
        "2026-09-27T01:50+12:45",
        ["2026-09-27T02:00+12:45", "2026-09-27T02:30+12:45", "2026-09-27T04:00+13:45"],
    ),
    (
        "0 3 * * *",
        "Pacific/Chatham",
        "2026-04-05T00:00+13:45",
        ["2026-04-05T03:00+13:45", "2026-04-06T03:00+12:45"],
    ),
    (
        "*/30 * * * *",
        "Pacific/Chatham",
        "2026-04-05T02:10+13:45",
        [
            "2026-04-05T02:30+13:45",
            "2026-04-05T03:00+13:45",
            "2026-04-05T03:30+13:45",
            "2026-04-05T03:00+12:45",
            "2026-04-05T03:30+12:45",
            "2026-04-05T04:00+12:45",
        ],
    ),
    (
        "30 2 * * *",
        "Asia/Tehran",
        "2026-03-20T12:00+03:30",
        ["2026-03-21T02:30+03:30", "2026-03-22T02:30+03:30"],
    ),
    (
        "0 0 1 jan-dec/2 *",
        "UTC",
        "2026-01-15",
        ["2026-03-01T00:00+00:00", "2026-05-01T00:00+00:00", "2026-07-01T00:00+00:00"],
    ),
    (
        "@hourly",
        BERLIN,
        "2026-10-25T01:30+02:00",
        ["2026-10-25T02:00+02:00", "2026-10-25T02:00+01:00"],
    ),
    (
        "@daily",
        BERLIN,
        "2026-10-24T12:00+02:00",
        ["2026-10-25T00:00+02:00", "2026-10-26T00:00+01:00"],
    ),
    ("@weekly", "UTC", "2026-11-21", ["2026-11-22T00:00+00:00", "2026-11-29T00:00+00:00"]),
    # Rare and never-quite-firing expressions still answer, exactly
    ("0 9 31 2 1-5", "UTC", "2026-03-01", ["2027-02-01T09:00+00:00"]),
    ("0 0 29 2 *", "UTC", "2096-03-01", ["2104-02-29T00:00+00:00"]),
    ("59 23 31 12 *", BERLIN, "2026-06-01T00:00+02:00", ["2026-12-31T23:59+01:00"]),
    (
        "every 10m",
        BERLIN,
        "2026-11-21T10:17:30",
        ["2026-11-21T11:20:00+01:00", "2026-11-21T11:30:00+01:00"],
    ),
]


@pytest.mark.parametrize(("schedule", "zone", "start", "expected"), NEXT_CASES)
def test_next_fire_times(schedule: str, zone: str, start: str, expected: list[str]) -> None:
    wanted = [local(moment(text), zone) for text in expected]
    assert following(schedule, zone, start, len(expected)) == wanted


# (schedule, zone, moment, the latest slot at or before it, in local time)
LATEST_CASES = [
    ("0 0 1 * *", BERLIN, "2024-04-17T00:00+02:00", "2024-04-01T00:00+02:00"),  # the issue
    ("5 0 */2 * *", "UTC", "2012-02-24", "2012-02-23T00:05+00:00"),  # croniter
    ("00 03 16,30 * *", "UTC", "2013-04-16T02:59:59", "2013-03-30T03:00+00:00"),
    ("00 03 16,30 * *", "UTC", "2013-03-16T02:00", "2013-02-16T03:00+00:00"),
    ("0 0 1 3,6,9,12 *", "UTC", "2016-02-29T23:59:59", "2015-12-01T00:00+00:00"),
    ("0 0 1,15,31 * *", "UTC", "2016-01-31T23:59:59", "2016-01-31T00:00+00:00"),
    ("0 0 1 1,3,6,9,12 *", "UTC", "2016-02-29T23:59", "2016-01-01T00:00+00:00"),
    ("* * 29 2 *", "UTC", "2024-02-27T23:59:59", "2020-02-29T23:59+00:00"),
    ("30 7,12,17 * * *", "UTC", "2018-03-05T12:30:50", "2018-03-05T12:30+00:00"),
    ("0 10 * * *", "UTC", "2018-01-02T10:00:00.000500", "2018-01-02T10:00+00:00"),
    ("0 10 * * *", "UTC", "2018-01-02T09:59:59.999999", "2018-01-01T10:00+00:00"),
    ("0 4-23/6 * * *", "UTC", "2012-02-24T03:59", "2012-02-23T22:00+00:00"),
    ("0 0 24 * *", "Australia/Adelaide", "2020-04-15T00:00+09:30", "2020-03-24T00:00+10:30"),
    ("* * * * *", "Antarctica/Troll", "2026-10-25T01:00:30+00:00", "2026-10-25T01:00+00:00"),
    ("*/15 * * * *", BERLIN, "2026-10-25T02:10+01:00", "2026-10-25T02:00+01:00"),
    ("*/15 * * * *", BERLIN, "2026-10-25T02:00:00+01:00", "2026-10-25T02:00+01:00"),
    ("*/15 * * * *", BERLIN, "2026-10-25T02:59:59+01:00", "2026-10-25T02:45+01:00"),
    ("30 2 * * *", BERLIN, "2026-10-25T02:40+01:00", "2026-10-25T02:30+02:00"),
    ("30 2 * * *", BERLIN, "2026-03-29T12:00+02:00", "2026-03-29T03:00+02:00"),
    ("0 9 31 2 1-5", "UTC", "2026-11-15", "2026-02-27T09:00+00:00"),
    ("* * * JAN *", "UTC", "2026-12-15", "2026-01-31T23:59+00:00"),
    ("0 0 29 2 *", "UTC", "2026-06-01", "2024-02-29T00:00+00:00"),
    ("every 10m", BERLIN, "2026-11-21T10:17:30", "2026-11-21T11:10:00+01:00"),
]


@pytest.mark.parametrize(("schedule", "zone", "at", "expected"), LATEST_CASES)
def test_latest_slot(schedule: str, zone: str, at: str, expected: str) -> None:
    times = fire_times(schedule, zone)
    assert local(times.latest_at(moment(at)), zone) == local(moment(expected), zone)
    around = times.around(moment(at))
    assert around.latest == times.latest_at(moment(at))
    assert around.next == times.next_after(moment(at))


def test_slots_are_whole_utc_seconds_and_at_or_after_includes_now() -> None:
    times = fire_times("*/15 * * * *", "UTC")
    slot = moment("2026-11-21T10:15:00")
    assert times.at_or_after(slot) == slot
    assert times.at_or_after(slot + timedelta(microseconds=1)) == slot + timedelta(minutes=15)
    assert times.next_after(slot - timedelta(microseconds=1)) == slot
    assert times.latest_at(slot - timedelta(microseconds=1)) == slot - timedelta(minutes=15)
    assert slot.tzinfo is not None
    assert times.next_after(datetime(2026, 11, 21, 10, 15)) == slot + timedelta(minutes=15)


# --- random schedules, zones and instants -------------------------------------------------

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def random_field(
    rng: random.Random, low: int, high: int, names: tuple[str, ...] = (), hot: tuple = ()
) -> str:
    """A Debian-valid field: *, */n, a, a-b, a-b/n, or a list of them; names sometimes;
    values near a zone's clock changes (``hot``) more often."""

    def number() -> int:
        return rng.choice(hot) if hot and rng.random() < 0.6 else rng.randint(low, high)

    def show(value: int) -> str:
        if names and rng.random() < 0.3 and value - low < len(names):
            return names[value - low]
        return str(value)

    def item() -> str:
        roll = rng.random()
        if roll < 0.25:
            return "*"
        if roll < 0.4:
            return f"*/{rng.randint(1, high - low + 2)}"
        first, last = sorted((number(), number()))
        if roll < 0.7:
            return show(first)
        if roll < 0.85:
            return f"{show(first)}-{show(last)}"
        return f"{show(first)}-{show(last)}/{rng.randint(2, 5)}"

    return ",".join(item() for _ in range(rng.choice((1, 1, 1, 2, 3))))


def random_expression(rng: random.Random) -> str:
    """A random cron expression Debian cron accepts and runs."""
    while True:
        expression = " ".join(
            (
                random_field(rng, 0, 59, hot=(0, 15, 30, 45, 59)),
                random_field(rng, 0, 23, hot=(0, 1, 2, 3, 4, 22, 23)),
                random_field(rng, 1, 31, hot=(1, 15, 28, 29, 30, 31))
                if rng.random() < 0.4
                else "*",
                random_field(rng, 1, 12, MONTHS) if rng.random() < 0.3 else "*",
                random_field(rng, 0, 7, DAYS) if rng.random() < 0.4 else "*",
            )
        )
        try:
            parse_cron(expression)
        except CronError:
            continue
        return expression


def clock_changes(zone: str) -> list[int]:
    """The instants (epoch seconds) the zone's offset changes in 2025-2027."""
    tz = ZoneInfo(zone)
    found = []
    instant = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(2028, 1, 1, tzinfo=UTC).timestamp())
    before = datetime.fromtimestamp(instant, tz).utcoffset()
    while instant < end:
        instant += 1800
        offset = datetime.fromtimestamp(instant, tz).utcoffset()
        if offset != before:
            found.append(instant)
            before = offset
    return found


CHANGES = {zone: clock_changes(zone) for zone in ZONES}


def random_instant(rng: random.Random, zone: str) -> int:
    """Mostly within a day of one of the zone's clock changes, else anywhere in 2026."""
    if CHANGES[zone] and rng.random() < 0.75:
        return rng.choice(CHANGES[zone]) + rng.randint(-86400, 86400)
    return int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) + rng.randrange(366 * 86400)


def random_case(rng: random.Random) -> tuple[str, str, datetime]:
    zone = rng.choice(ZONES)
    if rng.random() < 0.1:
        schedule = f"every {rng.randint(1, 90)}{rng.choice('smhd')}"
    else:
        schedule = random_expression(rng)
    micro = rng.choice((0, 0, rng.randrange(1_000_000)))
    at = datetime.fromtimestamp(random_instant(rng, zone), UTC) + timedelta(microseconds=micro)
    return schedule, zone, at


def test_latest_and_next_agree_over_10000_random_cases() -> None:
    rng = random.Random(20261025)
    for _ in range(10_000):
        schedule, zone, at = random_case(rng)
        times = fire_times(schedule, zone)
        around = times.around(at)
        upcoming = times.next_after(at)
        case = (schedule, zone, at.isoformat())
        assert around.next == upcoming, case
        assert around.latest is None or around.latest <= at < (upcoming or around.latest + SECOND)
        if upcoming is None:
            continue
        # latest(next(t)) == next(t); one second before a slot, the latest is the one before.
        assert times.latest_at(upcoming) == upcoming, case
        assert times.latest_at(upcoming - SECOND) == around.latest, case
        after = times.next_after(upcoming)
        if after is not None:
            assert times.latest_at(after - SECOND) == upcoming, case


def matches(spec: CronSpec, wall: datetime) -> bool:
    """Debian cron's test of one wall-clock minute."""
    if wall.minute not in spec.minutes or wall.hour not in spec.hours:
        return False
    if wall.month not in spec.months:
        return False
    by_date = wall.day in spec.days
    by_weekday = (wall.weekday() + 1) % 7 in spec.weekdays
    return by_date or by_weekday if spec.days_or else by_date and by_weekday


def brute_force_slots(spec: CronSpec, zone: str, start: int, end: int) -> list[int]:
    """The slots in [start, end), minute by minute, by Debian cron's rules read literally:
    a wildcard job runs each real minute whose wall time matches; a fixed-time job runs
    each matching wall minute once: where the clock skipped it, at the first real minute
    after; where it repeated it, the first time."""
    tz = ZoneInfo(zone)
    found: set[int] = set()
    if spec.wildcard:
        for instant in range(start + (-start) % 60, end, 60):
            if matches(spec, datetime.fromtimestamp(instant, tz).replace(tzinfo=None)):
                found.add(instant)
        return sorted(found)
    wall = datetime.fromtimestamp(start, tz).replace(tzinfo=None, second=0) - timedelta(days=1)
    last = datetime.fromtimestamp(end, tz).replace(tzinfo=None) + timedelta(days=1)
    while wall < last:
        if matches(spec, wall):
            real = wall
            while (
                real.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != real
            ):
                real += timedelta(minutes=1)  # skipped by the clock: on to the jump
            instant = int(real.replace(tzinfo=tz, fold=0).timestamp())
            if start <= instant < end:
                found.add(instant)
        wall += timedelta(minutes=1)
    return sorted(found)


def engine_slots(schedule: str, zone: str, start: int, end: int) -> list[int]:
    times = fire_times(schedule, zone)
    found = []
    current = times.at_or_after(datetime.fromtimestamp(start, UTC))
    while current is not None and current.timestamp() < end:
        found.append(int(current.timestamp()))
        current = times.next_after(current)
    return found


def test_no_slot_is_skipped_or_doubled_against_a_minute_walk() -> None:
    rng = random.Random(1029)
    for _ in range(250):
        schedule, zone, at = random_case(rng)
        if schedule.startswith("every"):
            continue
        start = int(at.timestamp()) - 86400
        expected = brute_force_slots(parse_cron(schedule), zone, start, start + 2 * 86400)
        assert engine_slots(schedule, zone, start, start + 2 * 86400) == expected, (schedule, zone)


def one_value_range_with_step(expression: str) -> bool:
    """True if a field holds ``a-a/n`` (or ``1-jan/n``), which cronsim reads as ``a/n``."""
    names = {name: str(i + 1) for i, name in enumerate(MONTHS)} | {
        name: str(i) for i, name in enumerate(DAYS)
    }
    for item in expression.lower().replace(",", " ").split():
        bounds, _, step = item.partition("/")
        first, _, last = bounds.partition("-")
        if step and last and names.get(first, first) == names.get(last, last):
            return True
    return False


def test_utc_fire_times_are_cronsims() -> None:
    """cronsim's own iterator (Debian-compatible) gives the same fire times in UTC, where
    no clock changes."""
    rng = random.Random(508)
    for _ in range(400):
        expression = random_expression(rng)
        if one_value_range_with_step(expression):
            continue  # cronsim reads 45-45/3 as 45/3 (45, 48, ...); Debian as 45
        start = datetime(2020, 1, 1) + timedelta(seconds=rng.randrange(10 * 366 * 86400))
        theirs = CronSim(expression, start)
        times = fire_times(expression, "UTC")
        current: datetime | None = start.replace(tzinfo=UTC)
        for _ in range(5):
            assert current is not None
            current = times.next_after(current)
            assert current == next(theirs).replace(tzinfo=UTC), (expression, start)


def test_the_fields_agree_with_cronsim() -> None:
    """cronsim reads every Debian-valid expression's fields as runner.defs.cron does."""
    rng = random.Random(17)
    for _ in range(1000):
        expression = random_expression(rng)
        if one_value_range_with_step(expression):
            continue
        ours, theirs = parse_cron(expression), CronSim(expression, datetime(2020, 1, 1))
        assert set(ours.minutes) == theirs.minutes, expression
        assert set(ours.hours) == theirs.hours, expression
        assert set(ours.days) == theirs.days, expression
        assert set(ours.months) == theirs.months, expression
        assert set(ours.weekdays) == {day % 7 for day in theirs.weekdays}, expression
        assert ours.days_or is not theirs.day_and, expression
