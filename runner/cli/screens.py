"""Where a command prints: stdout or stderr, a terminal (:class:`Terminal`: rich's
console, made when first printed to) or anything else (:class:`Plain`: a pipe, a file, a
CI log; written without rich). rich, with the ``attrs`` it imports, is a few hundredths
of a second of start-up: a command that draws nothing on a stream never loads it for
that stream (``omni status --json | jq`` loads it for neither).
"""
# pylint: disable=import-outside-toplevel  # deliberate: see the module docstring

from __future__ import annotations

import os
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from rich.console import Console

#: The control characters rich drops from text it prints (bell, backspace, vertical
#: tab, form feed, carriage return): :class:`Plain` drops the same.
_DROPPED = str.maketrans(dict.fromkeys((7, 8, 11, 12, 13)))
#: Tab stops every 8 columns, as rich expands tabs.
_TAB_SIZE = 8


class Plain:
    """stdout or stderr that is not a terminal: each text is written whole, unstyled and
    unwrapped, as rich's console writes it there (control characters dropped, tabs
    expanded), without loading rich."""

    is_terminal = False

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr

    def write_line(self, text: str) -> None:
        """``text`` and a newline, on the stream as it is now (the CLI wraps
        ``sys.stdout`` and ``sys.stderr`` in its redactor)."""
        stream = sys.stderr if self._stderr else sys.stdout
        text = text.translate(_DROPPED)
        stream.write((_expand_tabs(text) if "\t" in text else text) + "\n")


class Terminal:
    """stdout or stderr that is a terminal (or ``FORCE_COLOR`` is set, which rich takes
    for one): rich's console, made when something is first printed."""

    is_terminal = True

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr

    @cached_property
    def console(self) -> Console:
        """rich's console on this stream (wrapping to the terminal's width)."""
        from rich.console import Console  # noqa: PLC0415

        console = Console(stderr=self._stderr, highlight=False)
        console.soft_wrap = not console.is_terminal
        return console


#: Where a command prints.
Screen: TypeAlias = Terminal | Plain


def screen(*, stderr: bool = False) -> Screen:
    """stdout (or stderr) as it is now: a terminal, or not."""
    stream = sys.stderr if stderr else sys.stdout
    # rich takes FORCE_COLOR (any value) for a terminal.
    if "FORCE_COLOR" in os.environ or _isatty(stream):
        return Terminal(stderr=stderr)
    return Plain(stderr=stderr)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _expand_tabs(text: str) -> str:
    """Tabs as rich expands them: to the next stop counted in terminal cells (a wide
    character takes two)."""
    from rich.cells import cell_len  # noqa: PLC0415  # only for text with a tab

    lines = []
    for one in text.split("\n"):
        *parts, rest = one.split("\t")
        column, pieces = 0, []
        for part in parts:
            column += cell_len(part) + 1  # the tab is a space ...
            pad = -column % _TAB_SIZE  # ... and as many more as reach the next stop
            pieces.append(part + " " * (1 + pad))
            column += pad
        lines.append("".join(pieces) + rest)
    return "\n".join(lines)
