"""Path globs for repository paths: ``pull_request.paths``, protected paths.

A pattern is matched against a POSIX path relative to the repository's top folder:
``*`` matches within one path segment, ``?`` one character of a segment, ``[abc]`` a
class, and ``**`` any number of whole segments (``docs/**`` is everything under
``docs``; ``**/*.md`` every Markdown file). A pattern without a glob character matches
that path and everything under it (``tasks`` covers ``tasks/a.yaml``).

Pure and dependency-free: the built-in executor imports it at start-up.
"""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

_MAGIC = re.compile(r"[*?\[]")


def normalize(path: str) -> str | None:
    """``path`` as a clean relative POSIX path (no ``.``, ``..``, leading ``/``), or
    ``None`` when it leaves the top folder or is empty."""
    text = path.replace("\\", "/").strip()
    if not text or text.startswith("/"):
        return None
    clean = posixpath.normpath(text)
    if clean in {".", ""} or clean == ".." or clean.startswith("../"):
        return None
    return clean


def _segment(pattern: str) -> str:
    """A regex for one path segment's glob."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in {"!", "]"} else i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regex for one pattern (see the module docstring); raises ``ValueError`` for
    a pattern that leaves the top folder."""
    clean = normalize(pattern.rstrip("/")) if pattern.strip() not in {"**", "**/"} else "**"
    if clean is None:
        raise ValueError(f"pattern {pattern!r} is not a relative path inside the repository")
    parts = clean.split("/")
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _segment(part) + ("" if last else "/")
    if not _MAGIC.search(clean):
        regex += "(?:/.*)?"  # a plain path covers everything under it
    elif parts[-1] != "**":
        regex += "(?:/.*)?" if clean.endswith("/") else ""
    return re.compile(regex + r"\Z", re.DOTALL)


class PathRules:
    """A set of globs; :meth:`match` gives the first pattern covering a path."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(dict.fromkeys(p for p in patterns if p.strip()))
        self._compiled = [(p, compile_glob(p)) for p in self.patterns]

    def __bool__(self) -> bool:
        return bool(self._compiled)

    def match(self, path: str) -> str | None:
        """The first pattern that covers ``path`` (or a folder above it), else ``None``."""
        clean = normalize(path)
        if clean is None:
            return None
        for pattern, regex in self._compiled:
            if regex.match(clean):
                return pattern
        return None

    def covers(self, path: str) -> bool:
        """True when some pattern covers ``path``."""
        return self.match(path) is not None
