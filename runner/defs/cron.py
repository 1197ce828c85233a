"""Schedules as a task file writes them: a cron expression read as Debian cron reads it,
or ``every N s|m|h|d``. Parsing and validation only (pure); when a schedule fires is
:mod:`runner.planning.cron`'s job.

Debian cron's grammar, field by field (``minute hour day-of-month month day-of-week``):
``*``, a number, a name (``jan``..``dec``, ``sun``..``sat``, any case), a range ``a-b``,
a step over ``*`` or a range (``*/15``, ``9-17/2``), and comma lists of these. Sunday is
0 or 7. ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``
and ``@hourly`` stand for their five fields. As in Debian, a step may be larger than its
range (``*/60`` is minute 0) and a step after a single value (``7/2``) is refused.

Refused too, where Debian would accept the line and then never run it (or run it at
times nobody wrote): a range that goes backwards (``5-1``), and a day of month no month
of the schedule has (``0 0 30 2 *``). Every message names the field and the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The longest ``every N`` interval: a leap year. Longer ones would overflow the calendar
#: arithmetic of far slots and are better written as cron (``@yearly``).
MAX_EVERY_SECONDS = 366 * 86400

_EVERY = re.compile(
    r"^every\s+(\d+)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)$",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# The most days each month can have (February: in a leap year).
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Long enough for any value or step Debian's parser would turn into a number in range.
_MAX_DIGITS = 9


@dataclass(frozen=True, slots=True)
class Every:
    """``every N``: fires on the multiples of ``seconds`` since the Unix epoch."""

    seconds: int


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A cron expression as Debian cron reads it: the values each field allows."""

    text: str
    """The expression as written (an ``@name`` stays as it is)."""
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    """Days of the month, 1-31."""
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    """Days of the week, 0-6 from Sunday (a 7 in the expression is 0 here)."""
    days_or: bool
    """Neither day field starts with ``*``: a day matches when either field does
    (``0 0 1 * mon`` is the 1st *and* every Monday); otherwise both must."""
    wildcard: bool
    """The minute or the hour field starts with ``*`` (or ``@hourly``): a wildcard job,
    which follows the clock across DST changes; the others are fixed-time jobs."""


Schedule = Every | CronSpec


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0

    def allowed(self) -> str:
        """What a value of this field may be, for messages."""
        text = f"{self.low}-{self.high}"
        if self.names:
            text += f" or {self.names[0]}..{self.names[-1]}"
        return text + (" (0 and 7 are Sunday)" if self.name == "day of week" else "")


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day of week", 0, 7, _DAYS, 0),
)


class CronError(ValueError):
    """A cron expression Debian cron would refuse, or one that would never run."""

    def __init__(self, field: str, value: str, problem: str) -> None:
        super().__init__(f"{field} {value!r}: {problem}")
        self.field = field


def every_seconds(schedule: str) -> int | None:
    """Seconds of an ``every N s|m|h|d`` schedule, or ``None`` if it is not one.

    Raises ``ValueError`` for an interval of 0 or longer than ``MAX_EVERY_SECONDS``."""
    match = _EVERY.match(schedule.strip())
    if match is None:
        return None
    digits = match.group(1).lstrip("0") or "0"
    unit = _UNIT_SECONDS[match.group(2)[0].lower()]
    if len(digits) > 12 or int(digits) * unit > MAX_EVERY_SECONDS:
        raise ValueError(
            f"{schedule.strip()!r}: the interval may be at most 366 days "
            "(for a yearly run use a cron schedule such as '@yearly')"
        )
    if digits == "0":
        raise ValueError(f"{schedule.strip()!r}: the interval must be at least 1 second")
    return int(digits) * unit


def parse_schedule(schedule: str) -> Schedule:
    """The ``schedule:`` of a task file, parsed; raises ``ValueError`` saying what is wrong."""
    text = schedule.strip()
    if text.lower().startswith("every"):
        seconds = every_seconds(text)
        if seconds is None:
            raise ValueError(f"{text!r} is not 'every N s|m|h|d' (e.g. 'every 10m')")
        return Every(seconds)
    return parse_cron(text)


def parse_cron(expression: str) -> CronSpec:
    """A cron expression (five fields or an ``@name``) as Debian cron reads it.

    Raises :class:`CronError` (a ``ValueError``) naming the field, or ``ValueError`` for
    an expression of the wrong shape."""
    text = expression.strip()
    fields = _MACROS.get(text, text).split()
    if text.startswith("@") and text not in _MACROS:
        raise ValueError(_macro_problem(text))
    if len(fields) != 5:
        extra = " (Debian cron has no seconds or years field)" if len(fields) in {6, 7} else ""
        raise ValueError(
            f"{text!r} is neither a 5-field cron ('0 3 * * *'), an @name like '@daily', "
            f"nor 'every N s|m|h|d'{extra}"
        )
    minutes, hours, days, months, weekdays = (
        _parse_field(value, field) for value, field in zip(fields, _FIELDS, strict=True)
    )
    days_or = not fields[2].startswith("*") and not fields[4].startswith("*")
    if not days_or:
        _check_days_exist(fields[2], days, months)
    return CronSpec(
        text=text,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=tuple(sorted(days)),
        months=tuple(sorted(months)),
        weekdays=tuple(sorted({day % 7 for day in weekdays})),
        days_or=days_or,
        wildcard=fields[0].startswith("*") or fields[1].startswith("*"),
    )


def _macro_problem(text: str) -> str:
    names = ", ".join(_MACROS)
    if text.lower() == "@reboot":
        return "'@reboot' has no fire times here; a task without `schedule` runs once per content"
    return f"unknown {text!r}; the @names are {names}"


def _parse_field(value: str, field: _Field) -> set[int]:
    found: set[int] = set()
    for item in value.split(","):
        if not item:
            raise CronError(field.name, value, "an empty item in the list (a doubled or end ',')")
        found.update(_parse_item(item, value, field))
    return found


def _parse_item(item: str, value: str, field: _Field) -> range:
    body, slash, step_text = item.partition("/")
    step = _parse_step(step_text, value, field) if slash else 1
    if body == "*":
        return range(field.low, field.high + 1, step)
    if body.startswith("*"):
        raise CronError(field.name, value, "only '/STEP' may follow '*' (as in '*/5')")
    first_text, dash, last_text = body.partition("-")
    first = _parse_value(first_text, value, field)
    if not dash:
        if slash:
            raise CronError(
                field.name,
                value,
                f"{item!r} steps from a single value, which Debian cron refuses; write "
                f"'{first_text}-{field.high}/{step_text}' (from {first_text} to the end) "
                f"or '*/{step_text}'",
            )
        return range(first, first + 1)
    last = _parse_value(last_text, value, field)
    if last < first:
        hint = ""
        if field.name == "day of week" and last == 0:
            hint = f"; Sunday is 0 or 7, so write '{first_text}-7'"
        raise CronError(field.name, value, f"range {body!r} goes backwards{hint}")
    return range(first, last + 1, step)


def _parse_step(text: str, value: str, field: _Field) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > _MAX_DIGITS:
        raise CronError(
            field.name, value, f"bad step {text!r}: a step is a whole number of at least 1"
        )
    step = int(text)
    if step < 1:
        raise CronError(field.name, value, "the step must be at least 1")
    return step


def _parse_value(text: str, value: str, field: _Field) -> int:
    lowered = text.lower()
    if lowered in field.names:
        return field.names.index(lowered) + field.name_base
    if not text.isdigit() or not text.isascii():
        raise CronError(field.name, value, f"{text or value!r} is not {field.allowed()}")
    number = int(text) if len(text) <= _MAX_DIGITS else field.high + 1
    if not field.low <= number <= field.high:
        raise CronError(field.name, value, f"{text} is out of range; it must be {field.allowed()}")
    return number


def _check_days_exist(value: str, days: set[int], months: set[int]) -> None:
    """With both day fields required to match, some month of the schedule must have one
    of its days of the month, or the schedule never runs."""
    if any(day <= _MONTH_DAYS[month - 1] for day in days for month in months):
        return
    names = ", ".join(_MONTHS[month - 1] for month in sorted(months))
    most = max(_MONTH_DAYS[month - 1] for month in months)
    raise CronError(
        "day of month",
        value,
        f"no month of the schedule ({names}) has that day (at most {most} days), "
        "so it would never run",
    )
