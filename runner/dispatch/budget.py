"""Spend caps (``router.budget``): stop a prompt run before a model call that a cap
forbids, and after one that took the run past its cap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.core.errors import BudgetExceededError

if TYPE_CHECKING:
    from runner.defs.config import Budget
    from runner.dispatch.agent import Transcript


class SpendGuard:
    """``router.budget`` for one run: stops it before a call once a cap is reached."""

    def __init__(self, budget: Budget, today_usd: float) -> None:
        self._budget = budget
        self._today = today_usd

    def before_call(self, transcript: Transcript) -> None:
        """Raise :class:`BudgetExceededError` if another model call may not be made."""
        day, run = self._budget.per_day_usd, self._budget.per_run_usd
        if day is not None and self._today + transcript.spent >= day:
            raise BudgetExceededError(
                f"daily budget reached: ${self._today + transcript.spent:.6f} spent today "
                f"(UTC), router.budget.per_day_usd is ${day:g}"
            )
        if run is not None and transcript.spent >= run:
            raise BudgetExceededError(
                f"run budget reached: this run spent ${transcript.spent:.6f}, "
                f"router.budget.per_run_usd is ${run:g}"
            )

    def after_call(self, transcript: Transcript) -> None:
        """Raise :class:`BudgetExceededError` if the last call took the run past its cap."""
        run = self._budget.per_run_usd
        if run is not None and transcript.spent > run:
            raise BudgetExceededError(
                f"run budget passed: this run spent ${transcript.spent:.6f} after "
                f"{transcript.turns} turn(s), router.budget.per_run_usd is ${run:g}"
            )
