"""Ids: run ids (26-character ULID-like strings that sort by creation time) and the
form of task ids.

A run id is 48 bits of milliseconds, then 80 random bits, in Crockford's base 32: unique
without a database (two CI shards never collide), and a file name's first ten
characters say when its run was created, so a folder scan can skip older files by name.
A task id is one or more ``/``-separated parts, each a folder name under the results
folder: :func:`check_task_id`.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RUN_ID_LENGTH = 26
_RUN_ID = re.compile(rf"[{_CROCKFORD}]{{{RUN_ID_LENGTH}}}")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
#: Characters an id part may have: it becomes a folder name (file systems allow 255
#: bytes; the result files' temp names need room too).
MAX_ID_PART = 100
#: Characters a whole id may have (it becomes a path under the results folder).
MAX_ID = 200


def new_run_id(now: datetime) -> str:
    """A new run id created at ``now``."""
    value = (int(now.timestamp() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(RUN_ID_LENGTH):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def time_prefix(now: datetime) -> str:
    """The first ten characters of every run id created at ``now`` (for name comparisons).

    A time before 1970 (a result file may say anything that parses) gives the prefix
    below every run id: its negative milliseconds would otherwise wrap to one above them."""
    if now.timestamp() < 0:
        return "0" * 10
    return new_run_id(now)[:10]


def is_run_id(text: str) -> bool:
    """True if ``text`` has the form of a run id."""
    return _RUN_ID.fullmatch(text) is not None


def check_task_id(value: str) -> str:
    """Return ``value`` if it is a valid task id, else raise ``ValueError`` saying why."""
    if not value:
        raise ValueError("id is empty")
    if len(value) > MAX_ID:
        raise ValueError(f"id is {len(value)} characters long; at most {MAX_ID} are allowed")
    if value.startswith("/"):
        raise ValueError(f"id {value!r} starts with '/'; ids are relative, like 'repair/x'")
    for segment in value.split("/"):
        if not segment:
            raise ValueError(f"id {value!r} has an empty part (a trailing or doubled '/')")
        if segment in {".", ".."}:
            raise ValueError(f"id {value!r} has a {segment!r} part; ids may not use . or ..")
        if not _SEGMENT.match(segment):
            raise ValueError(
                f"id {value!r}: each '/'-separated part may hold only A-Z a-z 0-9 . _ -"
            )
        if len(segment) > MAX_ID_PART:
            raise ValueError(
                f"an id part is {len(segment)} characters long; at most {MAX_ID_PART} are"
                " allowed (each part becomes a folder name)"
            )
    return value
