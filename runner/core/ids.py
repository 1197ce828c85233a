"""Run ids: 26-character ULID-like strings that sort by creation time.

48 bits of milliseconds, then 80 random bits, in Crockford's base 32: unique without a
database (two CI shards never collide), and a file name's first ten characters say
when its run was created, so a folder scan can skip older files by name.
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


def new_run_id(now: datetime) -> str:
    """A new run id created at ``now``."""
    value = (int(now.timestamp() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(RUN_ID_LENGTH):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def time_prefix(now: datetime) -> str:
    """The first ten characters of every run id created at ``now`` (for name comparisons)."""
    return new_run_id(now)[:10]


def is_run_id(text: str) -> bool:
    """True if ``text`` has the form of a run id."""
    return _RUN_ID.fullmatch(text) is not None
