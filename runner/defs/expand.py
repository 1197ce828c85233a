"""``${VAR}``, ``${VAR:-default}`` and ``$$`` in the config's strings (DESIGN §4): what
the environment fills into a config file. A missing variable, or a ``${`` that is not
one, is a problem naming its key (the loader adds the file and line), never its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Expansion:
    """``${VAR}``, ``${VAR:-default}`` (the default may hold ``${...}`` itself) and
    ``$$`` (a literal ``$``) in one string; a ``$`` before anything else stays as it is."""

    def __init__(self, text: str, environ: Mapping[str, str]) -> None:
        self._text = text
        self._env = environ
        self.missing: list[str] = []
        """Variables that were needed and not set, in order."""

    def run(self) -> str:
        """The expanded string (``missing`` lists the variables that were not set)."""
        value, end = self._until(0, closing=False, used=True)
        assert end == len(self._text)
        return value

    def _until(self, i: int, *, closing: bool, used: bool) -> tuple[str, int]:
        """The expansion from ``i`` to the end (or, ``closing``, to the ``}`` that
        closes a default); returns it and the index after it."""
        text, out = self._text, list[str]()
        while i < len(text):
            char = text[i]
            if closing and char == "}":
                return "".join(out), i
            if text.startswith("$$", i):
                out.append("$")
                i += 2
            elif text.startswith("${", i):
                value, i = self._variable(i + 2, used=used)
                out.append(value)
            else:
                out.append(char)
                i += 1
        if closing:
            raise ValueError("a `${` has no closing `}` (write `$$` for a literal `$`)")
        return "".join(out), i

    def _variable(self, i: int, *, used: bool) -> tuple[str, int]:
        match = _NAME.match(self._text, i)
        if match is None:
            raise ValueError(
                "`${` must be followed by a variable name, as in ${NAME} or ${NAME:-default}"
                " (write `$$` for a literal `$`)"
            )
        name, i = match.group(), match.end()
        present = name in self._env
        if self._text.startswith(":-", i):
            default, i = self._until(i + 2, closing=True, used=used and not present)
            return (self._env[name] if present else default), i + 1
        if not self._text.startswith("}", i):
            raise ValueError(f"${{{name} is not closed with `}}` (or `:-default}}`)")
        if not present and used:
            self.missing.append(name)
        return self._env.get(name, ""), i + 1


@dataclass(frozen=True, slots=True)
class Unexpanded:
    """A string of the config that could not be expanded, and why."""

    loc: tuple[str | int, ...]
    message: str


def expand_env(data: Any, environ: Mapping[str, str], problems: list[Unexpanded]) -> Any:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``$$`` in every string of ``data``;
    each missing variable or bad ``${`` is appended to ``problems`` (that string is
    then left as it was)."""
    found = problems

    def walk(value: Any, loc: tuple[str | int, ...]) -> Any:
        if isinstance(value, str):
            if "$" not in value:
                return value
            expansion = _Expansion(value, environ)
            try:
                expanded = expansion.run()
            except ValueError as exc:
                found.append(Unexpanded(loc, str(exc)))
                return value
            for name in expansion.missing:
                found.append(
                    Unexpanded(
                        loc,
                        f"environment variable ${{{name}}} is not set"
                        f" (set it, or write ${{{name}:-default}})",
                    )
                )
            return value if expansion.missing else expanded
        if isinstance(value, dict):
            return {k: walk(v, (*loc, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(value)]
        return value

    return walk(data, ())
