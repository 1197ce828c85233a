"""Reading untrusted YAML: size cap, strict UTF-8, safe tags only, bounded expansion.

Task files and config come from outside, so every way YAML can hurt is closed here:
no Python objects from tags (safe loader), a size cap checked before parsing, a cap on
how many values a document may expand to through aliases (the "billion laughs"), a
nesting cap, and exactly one document a file. Errors carry the line they were found at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

from runner.core.errors import FileRefusedError
from runner.core.files import read_regular
from runner.core.yamlfast import Unusual, available, quick_load

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

#: Values a document may hold once aliases are expanded; real task files hold dozens.
MAX_VALUES = 100_000
#: Nesting a document may reach; real task files nest three or four levels.
MAX_DEPTH = 64
_MERGE = "tag:yaml.org,2002:merge"
_QUICK = available()


class YamlProblem(Exception):
    """A file that is not acceptable YAML; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


if getattr(yaml, "__with_libyaml__", False):
    # pylint: disable-next=no-name-in-module,ungrouped-imports  # a C extension
    from yaml._yaml import CParser

    class _Base(Composer, CParser, SafeConstructor, Resolver):
        """libyaml's parser under PyYAML's Python composer (see :class:`_Loader`)."""

        def __init__(self, stream: str) -> None:  # pylint: disable=super-init-not-called
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml
    _Base = yaml.SafeLoader  # type: ignore[assignment,misc]


class _Loader(_Base):  # pylint: disable=too-many-ancestors
    """The safe loader, bounded.

    libyaml's own composer recurses in C (a deep enough document kills the process)
    and its scanner slows quadratically with nesting, so nodes are composed here,
    counting depth and stopping at :data:`MAX_DEPTH` before reading further. Merge
    keys (``<<``) are de-duplicated as they are flattened and their total is capped,
    so nested merges cannot grow a document exponentially or quadratically.
    """

    _depth = 0
    _merged = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self._depth >= MAX_DEPTH:
            mark = getattr(self.peek_event(), "start_mark", None)
            line = mark.line + 1 if mark is not None else 1
            raise YamlProblem(line, f"nested deeper than {MAX_DEPTH} levels")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, Any], int] = {}
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != _MERGE:
                line = key.start_mark.line + 1
                seen = first.get((key.tag, key.value))
                if seen is not None:
                    raise YamlProblem(
                        line, f"key {key.value!r} appears twice (first on line {seen}); keep one"
                    )
                first[key.tag, key.value] = line
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, AttributeError, KeyError, IndexError, TypeError) as exc:
            # PyYAML's constructors trust a value's tag: `2026-13-45`, `!!timestamp soon`,
            # `!!bool maybe`, `!!int ""` fail inside them with Python's own errors.
            kind = node.tag.rsplit(":", 1)[-1]
            if kind == "timestamp":
                why = f" ({exc})" if isinstance(exc, ValueError) else ""
                message = f"not a valid date or time{why}"
            else:
                message = f"not a valid value for its tag !!{kind}"
            raise ConstructorError(None, None, message, node.start_mark) from None

    def flatten_mapping(self, node: MappingNode) -> None:
        merges = any(key.tag == _MERGE for key, _ in node.value)
        super().flatten_mapping(node)
        if merges:
            # Later pairs win when constructed, so keep only each key's last pair.
            seen: set[tuple[str, Any]] = set()
            kept = []
            for key, value in reversed(node.value):
                if isinstance(key, ScalarNode):
                    if (key.tag, key.value) in seen:
                        continue
                    seen.add((key.tag, key.value))
                kept.append((key, value))
            node.value = kept[::-1]
            self._merged += len(kept)
            if self._merged > MAX_VALUES:
                raise YamlProblem(
                    node.start_mark.line + 1,
                    f"merge keys (<<) expand to over {MAX_VALUES:,} values (a merge bomb?)",
                )


def read_yaml(path: Path, max_bytes: int) -> tuple[Any, str]:
    """Load one YAML document from ``path``; returns the data and the decoded text.

    Raises :class:`YamlProblem` for every way the file can be unusable (including not
    a regular file, and over ``max_bytes``), and ``OSError`` when it cannot be read.
    """
    try:
        raw = read_regular(path, max_bytes)
    except FileRefusedError as exc:
        raise YamlProblem(1, exc.reason) from None
    return yaml_from_bytes(raw)


def yaml_from_bytes(raw: bytes) -> tuple[Any, str]:
    """:func:`read_yaml` of a file's bytes already read: the data and the decoded text,
    or :class:`YamlProblem`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise YamlProblem(line, f"not valid UTF-8 (byte {exc.start})") from None
    return parse_yaml(text), text


def _load(text: str) -> Any:
    """``yaml.load(text, Loader=_Loader)`` (a safe loader), typed."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _compose(text: str) -> Node | None:
    """``yaml.compose(text, Loader=_Loader)``, typed."""
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def parse_yaml(text: str) -> Any:
    """Parse one document of ``text`` with the safe loader and check its expansion.

    A plain document is built straight from libyaml's events (:mod:`runner.core.yamlfast`);
    anything unusual, errors included, is read again by the careful loader, so values,
    errors and their lines are the careful loader's.
    """
    if _QUICK:
        try:
            return quick_load(text, MAX_DEPTH, MAX_VALUES)
        except Unusual:
            pass
    return parse_carefully(text)


def parse_carefully(text: str) -> Any:
    """:func:`parse_yaml` without the quick reader: a node tree, then its values."""
    try:
        data = _load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlProblem(line, _describe(exc)) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(1, f"invalid YAML: {exc}") from None
    except RecursionError:  # pragma: no cover - the composer stops at MAX_DEPTH first
        raise YamlProblem(1, f"nested deeper than {MAX_DEPTH} levels") from None
    check_size(data)
    return data


def _describe(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or "invalid YAML"
    if "expected a single document" in str(exc.context) or "single document" in problem:
        return "more than one YAML document (---) in one file; put one task in each file"
    if "could not determine a constructor" in problem:
        tag = problem.split("for the tag")[-1].strip()
        return f"YAML tags that build objects are not allowed ({tag})"
    if exc.context:
        mark = exc.context_mark
        if mark is not None and exc.problem_mark is not None and mark.line != exc.problem_mark.line:
            return f"invalid YAML: {exc.context} (from line {mark.line + 1}), {problem}"
        return f"invalid YAML: {exc.context}, {problem}"
    return f"invalid YAML: {problem}"


def check_size(data: Any) -> None:
    """Walk ``data`` without recursion; refuse alias bombs and deep nesting."""
    seen = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise YamlProblem(1, f"document expands to over {MAX_VALUES:,} values (an alias bomb?)")
        if depth > MAX_DEPTH:
            raise YamlProblem(1, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def line_of(text: str, loc: Sequence[str | int]) -> int:
    """The 1-based line of the key or item at ``loc`` in ``text``, as near as it exists
    (one look; for several, :class:`Lines`)."""
    return Lines(text).of(loc)


class Lines:
    """Where the keys and items of one YAML text are, for problem messages.

    Used only after validation failed, so the slower node parse costs nothing on the
    happy path. The text is composed once, on the first look, and each mapping indexed
    once: a file with thousands of problems costs one parse, not one a problem (that was
    quadratic: 1,600 unknown keys took 17 s).
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._root: Node | None = None
        self._composed = False
        self._keys: dict[int, dict[str, tuple[int, Node]]] = {}

    def of(self, loc: Sequence[str | int]) -> int:
        """The line of ``loc``; falls back to the deepest part of it that exists, then 1."""
        if not self._composed:
            self._composed = True
            try:
                self._root = _compose(self._text)
            except (yaml.YAMLError, RecursionError):
                self._root = None
        node, line = self._root, 1
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                found = self._index(node).get(str(part))
                if found is None:
                    return line
                line, node = found
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return line
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def _index(self, node: yaml.MappingNode) -> dict[str, tuple[int, Node]]:
        """``node``'s keys: each key's line and value node (the first of a key wins)."""
        index = self._keys.get(id(node))
        if index is None:
            index = {}
            for key, value in node.value:
                if isinstance(key.value, str):
                    index.setdefault(key.value, (key.start_mark.line + 1, value))
            self._keys[id(node)] = index
        return index


def dotted(loc: Sequence[str | int]) -> str:
    """``("rules", 0, "executor")`` -> ``"rules[0].executor"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(file)"
