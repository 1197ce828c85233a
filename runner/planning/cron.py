"""Fire times of a schedule: the one cron engine behind due-ness in CI, the next fire
times of ``omni status`` and service mode's APScheduler jobs.

A cron expression (read by :mod:`runner.defs.cron` as Debian cron reads it) names
wall-clock minutes in the task's time zone; here they become *slots*, whole-second UTC
instants, by Debian cron's rules for the days the clock changes:

* a wall time that happens once is one slot;
* a spring-forward gap: a *fixed-time* job's skipped times run once, at the jump (the
  first instant after the gap); a *wildcard* job (minute or hour field starting with
  ``*``) has nothing to run in the gap;
* a fall-back overlap: a fixed-time job runs once, in the first pass; a wildcard job
  runs in both passes, two slots.

``every N`` fires on the multiples of N seconds since the Unix epoch.

One primitive, the ascending stream of the slots after an instant, gives both the next
slot and the latest one (a walk forward from a bounded earlier point, bisecting when the
walk is long), so the two always agree. The stream walks months, days (as bit masks of
the month) and the day's sorted minutes; a zone's transition instants are found by
bisecting on its offsets, only on the days its clock changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from runner.defs.cron import CronSpec, Every, Schedule, parse_schedule

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
#: The earliest instant a walk starts from (1900-01-01).
_EARLIEST = -2208988800
_SECOND = timedelta(seconds=1)
_DAY = 86400
#: How far ahead a cron schedule looks for a slot. A schedule Debian cron would run
#: fires at least every 8 years (29 February across 2100); the parser refuses the rest.
_HORIZON_YEARS = 50
#: The last year a slot may fall in (``datetime`` ends with 9999).
_LAST_YEAR = 9998
#: How far back the latest slot is looked for.
_LOOKBACK = _HORIZON_YEARS * 366 * _DAY
#: A walk forward longer than this many slots switches to bisection.
_WALK = 8
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Six weeks of a 7-bit weekday pattern, side by side (a month spans at most 38 days of it).
_WEEKS = sum(1 << (7 * week) for week in range(6))


@dataclass(frozen=True, slots=True)
class Around:
    """The slots on either side of a moment."""

    latest: datetime | None
    """The most recent slot at or before the moment (``None``: none in 50 years)."""
    next: datetime | None
    """The first slot after the moment (``None``: none in 50 years)."""


class FireTimes(ABC):
    """The slots of one schedule in one time zone."""

    def next_after(self, moment: datetime) -> datetime | None:
        """The first slot strictly after ``moment``."""
        return _moment(self._after(_seconds(moment)))

    def at_or_after(self, moment: datetime) -> datetime | None:
        """The first slot at or after ``moment`` (what a trigger fires on next)."""
        return self.next_after(moment - timedelta(microseconds=1))

    def latest_at(self, moment: datetime) -> datetime | None:
        """The most recent slot at or before ``moment``."""
        return _moment(self._around(_seconds(moment))[0])

    def around(self, moment: datetime) -> Around:
        """The latest slot at or before ``moment`` and the next one after it, in one walk."""
        latest, upcoming = self._around(_seconds(moment))
        return Around(_moment(latest), _moment(upcoming))

    @abstractmethod
    def _after(self, at: int) -> int | None:
        """The first slot after ``at`` (seconds since the epoch)."""

    @abstractmethod
    def _around(self, at: int) -> tuple[int | None, int | None]:
        """The latest slot at or before ``at`` and the first one after it."""


class EveryTimes(FireTimes):
    """``every N``: the multiples of N seconds since the Unix epoch."""

    def __init__(self, seconds: int) -> None:
        self._seconds = seconds

    def _after(self, at: int) -> int | None:
        return at - at % self._seconds + self._seconds

    def _around(self, at: int) -> tuple[int | None, int | None]:
        latest = at - at % self._seconds
        return latest, latest + self._seconds


class CronTimes(FireTimes):
    """A cron expression in a time zone, with Debian cron's DST rules (module docstring)."""

    def __init__(self, spec: CronSpec, zone: ZoneInfo) -> None:
        self._zone = zone
        self._wildcard = spec.wildcard
        self._hours = spec.hours
        self._minutes = spec.minutes
        months = spec.months
        # For each month 1-12: the first month of the schedule from it on, and whether
        # that is in the next year.
        self._month_from = [(0, 0)] + [
            next(((m, 0) for m in months if m >= month), (months[0], 1)) for month in range(1, 13)
        ]
        self._dom = sum(1 << day for day in spec.days)
        # Bit j set when weekday j % 7 is in the schedule, for j in 0-37: shifted by the
        # weekday of a month's 1st, the month's days whose weekday matches.
        self._weeks = sum(1 << day for day in spec.weekdays) * _WEEKS
        self._days_or = spec.days_or
        # The first window to look back for the latest slot: the longest gap between two
        # times of a day, plus a minute.
        hours, minutes = spec.hours, spec.minutes
        gaps = [b - a for a, b in pairwise(minutes)]
        gaps += [(b - a) * 60 - minutes[-1] + minutes[0] for a, b in pairwise(hours)]
        gaps.append((hours[0] + 24 - hours[-1]) * 60 - minutes[-1] + minutes[0])
        self._window = (max(gaps) + 1) * 60
        # Transition instants found so far, by the offset they switch to.
        self._transitions: dict[int, list[int]] = {}

    def _after(self, at: int) -> int | None:
        return next(self._stream(at), None)

    def _around(self, at: int) -> tuple[int | None, int | None]:
        window = self._window
        while True:
            stream = self._stream(max(at - window, _EARLIEST))
            latest = next(stream, None)
            if latest is None:
                return None, None
            if latest > at:
                if window >= _LOOKBACK:
                    return None, latest
                window *= 4
                continue
            for _ in range(_WALK):
                upcoming = next(stream, None)
                if upcoming is None or upcoming > at:
                    return latest, upcoming
                latest = upcoming
            return self._bisect(latest, at)

    def _bisect(self, low: int, at: int) -> tuple[int, int | None]:
        """The latest slot at or before ``at``, given a slot ``low`` at or before it, and
        the first slot after ``at``. Each step asks for the first slot after a point."""
        high = at  # the latest slot lies in [low, high]
        while high > low:
            middle = (low + high + 1) // 2
            found = self._after(middle - 1)
            if found is not None and found <= high:
                low = found
            else:
                high = middle - 1
        return low, self._after(at)

    def _stream(self, at: int) -> Iterator[int]:
        """The slots after ``at``, ascending, each once."""
        last = at
        cursor, slots = self._start(at)
        while True:
            for slot in slots:
                if slot > last:
                    yield slot
                    last = slot
            hit = self._first_match(cursor)
            if hit is None:
                return
            cursor, slots = self._slots_of(hit)

    def _start(self, at: int) -> tuple[int, Sequence[int]]:
        """Where a walk from ``at`` starts: the first wall minute to look at, and the
        slots of the repeated interval of wall time ``at`` may lie in."""
        local = datetime.fromtimestamp(at, self._zone)
        wall = (local.toordinal() - _EPOCH_DAY) * _DAY + local.hour * 3600 + local.minute * 60
        offset = _offset(local)
        other = _offset(local.replace(fold=1 - local.fold))
        if offset == other:
            return wall + 60, ()
        early, late = (offset, other) if local.fold == 0 else (other, offset)
        start, end = self._overlap(wall, early, late)
        if self._wildcard:
            return end, self._overlap_slots(start, end, early, late)
        # A fixed-time job ran in the first pass; from the second, its next slot follows it.
        return (end if local.fold == 1 else wall + 60), ()

    def _slots_of(self, hit: int) -> tuple[int, Sequence[int]]:
        """The slots of a matching wall minute, and the wall minute to look at next."""
        early, late = self._offsets(hit)
        if early == late:
            return hit + 60, (hit - early,)
        if early < late:  # a wall time the clock skipped: a fixed-time job runs at the jump
            if self._wildcard:
                return hit + 60, ()
            return hit + 60, (self._transition(hit - late, hit - early, late),)
        if self._wildcard:  # a wall time the clock passes twice: both passes, in order
            start, end = self._overlap(hit, early, late)
            return end, self._overlap_slots(start, end, early, late)
        return hit + 60, (hit - early,)

    def _overlap(self, wall: int, early: int, late: int) -> tuple[int, int]:
        """The repeated interval of wall time around ``wall`` (seconds since the epoch,
        read as wall time): where it starts and ends."""
        jump = self._transition(wall - early, wall - late, late)
        return jump + late, jump + early

    def _overlap_slots(self, start: int, end: int, early: int, late: int) -> list[int]:
        """A wildcard job's slots in a repeated interval: each matching wall time in the
        first pass, then again in the second."""
        walls = []
        cursor = start
        while (hit := self._first_match(cursor)) is not None and hit < end:
            walls.append(hit)
            cursor = hit + 60
        return [hit - early for hit in walls] + [hit - late for hit in walls]

    def _transition(self, before: int, after: int, offset: int) -> int:
        """The instant the zone's offset became ``offset``: the first one in
        (``before``, ``after``], where ``after`` already has it and ``before`` not."""
        known = self._transitions.setdefault(offset, [])
        for instant in known:
            if before < instant <= after:
                return instant
        low, high = before, after
        while high - low > 1:
            middle = (low + high) // 2
            if _offset(datetime.fromtimestamp(middle, self._zone)) == offset:
                high = middle
            else:
                low = middle
        known.append(high)
        return high

    def _offsets(self, wall: int) -> tuple[int, int]:
        """The zone's offsets for a wall time: of its first and of its last occurrence
        (equal unless the clock skips or repeats it)."""
        local = (_NAIVE_EPOCH + timedelta(seconds=wall)).replace(tzinfo=self._zone)
        return _offset(local), _offset(local.replace(fold=1))

    def _first_match(self, wall: int) -> int | None:
        """The first wall minute at or after ``wall`` that the expression names."""
        day, rest = divmod(wall, _DAY)
        when = date.fromordinal(day + _EPOCH_DAY)
        year, month, mday = when.year, when.month, when.day
        minute = -(-rest // 60)
        last_year = min(year + _HORIZON_YEARS, _LAST_YEAR)
        while True:
            start, carry = self._month_from[month]
            if carry or start != month:
                year, month, mday, minute = year + carry, start, 1, 0
            if year > last_year:
                return None
            days = self._day_mask(year, month) >> mday << mday
            if days >> mday & 1:
                time = self._time_from(minute)
                if time is not None:
                    return _wall(year, month, mday, time)
                days ^= 1 << mday
            if days:
                first = self._hours[0] * 60 + self._minutes[0]
                return _wall(year, month, (days & -days).bit_length() - 1, first)
            month, mday, minute = month + 1, 1, 0
            if month == 13:
                year, month = year + 1, 1

    def _time_from(self, minute: int) -> int | None:
        """The first time of day (minutes after midnight) at or after ``minute``."""
        hours, minutes = self._hours, self._minutes
        hour, within = divmod(minute, 60)
        index = bisect_left(hours, hour)
        if index < len(hours) and hours[index] == hour:
            later = bisect_left(minutes, within)
            if later < len(minutes):
                return hour * 60 + minutes[later]
            index += 1
        return hours[index] * 60 + minutes[0] if index < len(hours) else None

    def _day_mask(self, year: int, month: int) -> int:
        """The days of the month that match, as bits 1-31."""
        start = (date(year, month, 1).weekday() + 1) % 7  # cron weekday of the 1st
        length = _MONTH_DAYS[month] + (month == 2 and _leap(year))
        valid = (2 << length) - 2
        by_date = self._dom & valid
        by_weekday = (self._weeks << 1 >> start) & valid
        return by_date | by_weekday if self._days_or else by_date & by_weekday


def fire_times(schedule: str | Schedule, timezone: str) -> FireTimes:
    """The fire times of a task's ``schedule`` in ``timezone`` (``every N`` ignores it).

    A schedule given as text is compiled once for all the tasks and passes that use it
    (a :class:`FireTimes` never changes). Raises ``ValueError`` for a schedule
    :mod:`runner.defs.cron` refuses."""
    if isinstance(schedule, str):
        return _compiled(schedule, timezone)
    return _compile(schedule, timezone)


@lru_cache(maxsize=4096)
def _compiled(schedule: str, timezone: str) -> FireTimes:
    return _compile(parse_schedule(schedule), timezone)


def _compile(spec: Schedule, timezone: str) -> FireTimes:
    if isinstance(spec, Every):
        return EveryTimes(spec.seconds)
    return CronTimes(spec, ZoneInfo(timezone))


def _seconds(moment: datetime) -> int:
    """Whole seconds since the epoch, rounded down (a naive time is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _SECOND


def _moment(seconds: int | None) -> datetime | None:
    return None if seconds is None else _EPOCH + timedelta(seconds=seconds)


def _offset(local: datetime) -> int:
    offset = local.utcoffset()
    return 0 if offset is None else offset // _SECOND


def _wall(year: int, month: int, mday: int, minute: int) -> int:
    return (date(year, month, mday).toordinal() - _EPOCH_DAY) * _DAY + minute * 60


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
