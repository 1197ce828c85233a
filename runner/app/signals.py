"""SIGTERM and SIGINT from the process's first moment.

``omni``'s entry point notes both signals before it imports anything slow, so a signal
that arrives while the process starts (imports, config, opening the state database and
the executors) is neither the default kill (exit 143) nor a ``KeyboardInterrupt`` in the
middle of an import. Service mode takes the noted signals over (a clean shutdown, exit
0); every other command gives them back to their default handling, re-delivering any
that arrived meanwhile.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

STOP_SIGNALS = (signal.Signals.SIGTERM, signal.Signals.SIGINT)


class EarlySignals:
    """Notes SIGTERM and SIGINT until a command takes them over or gives them back."""

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        """The signals noted so far, in order."""

    def install(self) -> EarlySignals:
        """Note the stop signals from now on (instead of their default handling)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum))

    def release(self) -> None:
        """Give the stop signals their default handling back, and deliver again any that
        arrived while they were noted (then the process ends as it would have)."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in dict.fromkeys(self.received):
            signal.raise_signal(sig)
