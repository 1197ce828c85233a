"""runner.defs.cron: cron expressions read as Debian cron reads them, and `every N`.

Cases carry facts from cronsim's and croniter's own test suites (their parse tests),
with Debian's verdict where those libraries accept more than Debian does.
"""

from __future__ import annotations

import pytest

from runner.defs.cron import (
    MAX_EVERY_SECONDS,
    CronError,
    CronSpec,
    Every,
    every_seconds,
    parse_cron,
    parse_schedule,
)

ALL_MINUTES = tuple(range(60))
ALL_HOURS = tuple(range(24))
ALL_DAYS = tuple(range(1, 32))
ALL_MONTHS = tuple(range(1, 13))
ALL_WEEKDAYS = tuple(range(7))


@pytest.mark.parametrize(
    ("expression", "field", "values"),
    [
        # cronsim TestParse
        ("* * * * *", "minutes", ALL_MINUTES),
        ("1 * * * *", "minutes", (1,)),
        ("* * * * 1", "weekdays", (1,)),
        ("* * * * 0", "weekdays", (0,)),
        ("1,2,3 * * * *", "minutes", (1, 2, 3)),
        ("1-3 * * * *", "minutes", (1, 2, 3)),
        ("1-3,7-9 * * * *", "minutes", (1, 2, 3, 7, 8, 9)),
        ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
        ("0-10/2 * * * *", "minutes", (0, 2, 4, 6, 8, 10)),
        ("* * * * MON", "weekdays", (1,)),
        ("* * * * mon", "weekdays", (1,)),
        ("* * * JAN *", "months", (1,)),
        ("* * * * 0-2", "weekdays", (0, 1, 2)),
        ("* * * * sun-tue", "weekdays", (0, 1, 2)),
        ("* * * * */2", "weekdays", (0, 2, 4, 6)),
        ("* * * * 7", "weekdays", (0,)),  # 7 is Sunday too
        # croniter: steps count from the start of their range
        ("0 */3 * * *", "hours", (0, 3, 6, 9, 12, 15, 18, 21)),
        ("0 0 */3 * *", "days", (1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31)),
        ("1-9/2 0 1 * *", "minutes", (1, 3, 5, 7, 9)),
        ("0 0 1 3,6,9,12 *", "months", (3, 6, 9, 12)),
        ("0 0 * * Wed-7", "weekdays", (0, 3, 4, 5, 6)),  # croniter #117, Debian's way
        # Debian: a step larger than its range leaves the first value
        ("*/60 * * * *", "minutes", (0,)),
        ("0-59/100 * * * *", "minutes", (0,)),
        ("0 0 1 jan-dec/2 *", "months", (1, 3, 5, 7, 9, 11)),
        ("45-45/3 * * * *", "minutes", (45,)),  # cronsim reads 45,48,...; Debian 45 only
        ("0 0 * * fri-7", "weekdays", (0, 5, 6)),
        ("0 0 * * 0-7", "weekdays", ALL_WEEKDAYS),
        ("05 07 * * *", "hours", (7,)),
    ],
)
def test_fields_mean_what_debian_cron_means(expression: str, field: str, values: tuple) -> None:
    assert getattr(parse_cron(expression), field) == values


@pytest.mark.parametrize(
    ("expression", "days_or"),
    [
        ("* * * * 1", False),  # cronsim: unrestricted day, restricted weekday: AND
        ("* * 1 * *", False),
        ("0 0 1 * wed", True),  # croniter: the 1st or any Wednesday
        ("0 16 */2 * sat", False),  # croniter's "vixie cron bug": */2 starts with *: AND
        ("1 1 1-7 * */7", False),  # cronsim: first Sunday of the month
        ("1 1 */100,1-7 * MON", False),  # cronsim: first Monday of the month
        ("0 9 31 2 1-5", True),
    ],
)
def test_day_fields_combine_as_in_debian(expression: str, days_or: bool) -> None:
    assert parse_cron(expression).days_or is days_or


@pytest.mark.parametrize(
    ("expression", "wildcard"),
    [
        ("*/15 * * * *", True),
        ("0 */2 * * *", True),
        ("* 23 * * sat", True),
        ("0 * * * *", True),
        ("0-59 0-23 * * *", False),  # Debian looks at the first character, not the values
        ("30 2 * * *", False),
        ("0 1-4 * * *", False),
    ],
)
def test_wildcard_jobs_are_told_by_their_first_character(expression: str, wildcard: bool) -> None:
    assert parse_cron(expression).wildcard is wildcard


@pytest.mark.parametrize(
    ("name", "expression"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_at_names_stand_for_their_fields(name: str, expression: str) -> None:
    named, written = parse_cron(name), parse_cron(expression)
    assert named.text == name
    assert (named.minutes, named.hours, named.days, named.months, named.weekdays) == (
        written.minutes,
        written.hours,
        written.days,
        written.months,
        written.weekdays,
    )
    assert (named.days_or, named.wildcard) == (written.days_or, written.wildcard)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        # Debian refuses a step after a single value (cronsim and croniter accept it)
        ("7/2 * * * *", ["minute '7/2'", "single value", "Debian cron refuses", "'7-59/2'"]),
        ("5/15 * * * *", ["minute '5/15'", "single value"]),
        ("0 4/6 * * *", ["hour '4/6'", "single value", "'4-23/6'"]),
        ("0 0 1 jan/2 *", ["month 'jan/2'", "single value", "'jan-12/2'"]),
        # ... and values outside the field, in ranges too (Debian: 5-64/30)
        ("61 * * * *", ["minute '61'", "out of range", "0-59"]),
        ("5-64/30 * * * *", ["minute '5-64/30'", "64 is out of range"]),
        ("* 24 * * *", ["hour '24'", "0-23"]),
        ("* * 0 * *", ["day of month '0'", "1-31"]),
        ("* * 32 * *", ["day of month '32'", "1-31"]),
        ("* * * 13 *", ["month '13'", "1-12 or jan..dec"]),
        ("* * * * 8", ["day of week '8'", "0-7 or sun..sat", "Sunday"]),
        ("* * * janu-jun *", ["month 'janu-jun'", "'janu'"]),  # croniter: no long names
        ("* * * * funday", ["day of week 'funday'", "0-7"]),
        ("-1 * * * *", ["minute '-1'"]),
        ("¹ * * * *", ["minute '¹'"]),
        ("1-1_0 * * * *", ["minute '1-1_0'"]),  # cronsim: underscores
        ("99999999999 * * * *", ["minute", "out of range"]),
        # steps
        ("*/0 * * * *", ["minute '*/0'", "at least 1"]),
        ("2/ * * * *", ["minute '2/'", "bad step"]),
        ("/2 * * * *", ["minute '/2'"]),
        ("1//2 * * * *", ["minute '1//2'", "bad step"]),
        ("*/mon * * * *", ["minute '*/mon'", "bad step"]),
        # ranges that go backwards: Debian accepts them and never runs them
        ("* * 5-1 * *", ["day of month '5-1'", "goes backwards"]),
        ("0 0 * * fri-sun", ["day of week 'fri-sun'", "goes backwards", "'fri-7'"]),
        ("0 0 * * 6-0", ["goes backwards", "'6-7'"]),
        ("0 0 * * Wed-Sun", ["goes backwards", "'Wed-7'"]),  # croniter #117 wraps it
        # days no month of the schedule has
        ("0 0 30 2 *", ["day of month '30'", "feb", "at most 29", "never run"]),
        ("* * 31 4 *", ["day of month '31'", "apr", "never run"]),
        ("0 0 31 4,6,9,11 *", ["apr, jun, sep, nov", "at most 30"]),
        ("0 0 30,31 2 */2", ["day of month '30,31'", "never run"]),
        # cronsim and croniter extensions Debian cron does not have
        ("* * L * *", ["day of month 'L'"]),
        ("* * LW * *", ["day of month 'LW'"]),
        ("* * * * 5L", ["day of week '5L'"]),
        ("* * * * 1#2", ["day of week '1#2'"]),
        ("* * * * * *", ["neither a 5-field cron", "no seconds or years field"]),
        ("* * * *", ["neither a 5-field cron", "every N"]),
        ("*5 * * * *", ["minute '*5'", "only '/STEP'"]),
        ("1,,2 * * * *", ["minute '1,,2'", "empty item"]),
        ("1, * * * *", ["minute '1,'", "empty item"]),
        ("@reboot", ["@reboot", "runs once per content"]),
        ("@DAILY", ["unknown '@DAILY'", "@daily"]),
        ("@every_minute", ["unknown '@every_minute'"]),
    ],
)
def test_debian_refuses_and_so_do_we(expression: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        parse_cron(expression)
    for word in words:
        assert word.lower() in str(caught.value).lower(), (word, str(caught.value))


def test_a_cron_error_names_its_field() -> None:
    with pytest.raises(CronError) as caught:
        parse_cron("0 0 30 2 *")
    assert caught.value.field == "day of month"


@pytest.mark.parametrize(
    ("schedule", "seconds"),
    [
        ("every 10m", 600),
        ("every 30s", 30),
        ("every 2h", 7200),
        ("EVERY 5 minutes", 300),
        ("every 366d", MAX_EVERY_SECONDS),
        ("every 0010 sec", 10),
    ],
)
def test_every(schedule: str, seconds: int) -> None:
    assert every_seconds(schedule) == seconds
    assert parse_schedule(schedule) == Every(seconds)


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ("every 0m", "at least 1 second"),
        ("every 367d", "at most 366 days"),
        ("every 3000000d", "at most 366 days"),
        ("every 8800h", "at most 366 days"),
        ("every " + "9" * 5000 + "s", "at most 366 days"),
        ("every ten minutes", "every N"),
    ],
)
def test_every_is_bounded(schedule: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_schedule(schedule)


def test_every_seconds_is_none_for_cron() -> None:
    assert every_seconds("0 3 * * *") is None
    assert isinstance(parse_schedule(" @daily "), CronSpec)
