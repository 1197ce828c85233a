"""The clock: the current time in UTC, the one timestamp format, time-zone names.

Time is passed in, never read behind a caller's back: functions that care take ``now``
(or a ``clock`` callable whose default is :func:`utc_now`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def utc_now() -> datetime:
    """The current time in UTC (the default clock)."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as written in rows and result files."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; a naive one is taken as UTC. Raises ``ValueError``, also for a
    time UTC cannot hold (``0001-01-01T00:00:00+01:00`` is in the year 0 there)."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time lies outside the years 1 to 9999 in UTC") from None


def check_timezone(value: str) -> str:
    """``value`` if it names an IANA time zone, else :class:`ValueError`."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name like 'Europe/Berlin'"
        ) from None
    return value
