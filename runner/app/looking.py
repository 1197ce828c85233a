"""The state database for the commands that only look (``status``, ``tasks``, ``show``,
``report``, ``run --once --dry-run``): opened read-only, never changed.

Apart from :mod:`runner.app.inspect` so that ``omni status`` does not load the task
model and the planner it never uses.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from runner.state.backend import exists, open_store

if TYPE_CHECKING:
    from collections.abc import Iterator

    from runner.defs.environment import ResolvedPaths
    from runner.state.interface import StateStore


@contextmanager
def looking(paths: ResolvedPaths) -> Iterator[StateStore | None]:
    """The state database, read-only, or ``None`` when there is none yet."""
    if not exists(paths):
        yield None
        return
    with open_store(paths, read_only=True) as store:
        yield store
