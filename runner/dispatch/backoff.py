"""How long a failed run waits before its next attempt: exponential backoff with jitter,
capped, and never shorter than the far end's ``Retry-After``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.defs.config import Dispatch


@dataclass(frozen=True, slots=True)
class Backoff:
    """``dispatch.retry_backoff`` doubled each attempt ("equal jitter": half of it fixed,
    half random), at least ``Retry-After``, at most ``dispatch.retry_backoff_max``."""

    base: float
    cap: float
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def of(cls, dispatch: Dispatch, rng: random.Random | None = None) -> Backoff:
        """The backoff ``dispatch`` configures."""
        return cls(dispatch.retry_backoff, dispatch.retry_backoff_max, rng or random.Random())

    def helps(self, retry_after: float | None) -> bool:
        """False when the far end asks to wait longer than the cap: a retry before then
        would only fail again (a rate-limited model's daily quota, say)."""
        return retry_after is None or retry_after <= self.cap

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based) before the next one."""
        ceiling = min(self.cap, self.base * 2 ** max(attempt - 1, 0))
        wait = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.cap)
