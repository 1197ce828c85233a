"""The quick YAML reader: plain documents built straight from libyaml's events.

Most task files are a mapping of plain keys to strings, numbers and small lists. For
them the careful reader (:mod:`runner.core.yamlio`) composes a node tree and then
constructs it, which costs several times the parse itself. This reader builds the values
as the events arrive, and gives up (:class:`Unusual`) on everything it does not handle
exactly as the careful reader would: anchors and aliases, merge keys, explicit tags,
keys that are not strings, a key given twice, more than one document, a nesting deeper
than :data:`~runner.core.yamlio.MAX_DEPTH`, more than
:data:`~runner.core.yamlio.MAX_VALUES` values, and every parse error. The caller then
reads the text again with the careful reader, which gives the same value, or the same
error on the same line, as before this reader existed.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

#: Plain scalars whose value the safe constructor builds from the text alone.
_SIMPLE = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("bool", "int", "float", "null", "timestamp")
)
_RESOLVERS: dict[Any, list[tuple[str, Any]]] = Resolver.yaml_implicit_resolvers
_WILDCARD = _RESOLVERS.get(None, [])
_NO_KEY = object()

_PARSER: Any
try:
    # pylint: disable-next=no-name-in-module,ungrouped-imports  # a C extension
    from yaml._yaml import CParser as _PARSER
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _PARSER = None


class Unusual(Exception):
    """The document holds something the quick reader leaves to the careful one."""


def available() -> bool:
    """True when libyaml is there to read events from."""
    return _PARSER is not None


def quick_load(text: str, max_depth: int, max_values: int) -> Any:
    """The value of the one plain document in ``text``; :class:`Unusual` for anything
    else (including every YAML error: the careful reader reports it)."""
    parser = _PARSER(text)
    try:
        return _Builder(parser, max_depth, max_values).document()
    except (yaml.YAMLError, ValueError):  # ValueError: a timestamp that is no date
        raise Unusual from None
    finally:
        parser.dispose()


class _Builder:  # pylint: disable=too-few-public-methods  # one document, one call
    """Values from one parser's events, with the careful reader's limits."""

    def __init__(self, parser: Any, max_depth: int, max_values: int) -> None:
        self._parser = parser
        self._max_depth = max_depth
        self._max_values = max_values
        self._constructor: SafeConstructor | None = None

    def document(self) -> Any:
        """The document's value (``None`` for an empty stream, as the careful reader)."""
        events = self._parser.get_event
        if not isinstance(events(), StreamStartEvent):
            raise Unusual
        start = events()
        if isinstance(start, StreamEndEvent):
            return None
        if not isinstance(start, DocumentStartEvent):
            raise Unusual
        value = self._node(events)
        if not isinstance(events(), DocumentEndEvent) or not isinstance(events(), StreamEndEvent):
            raise Unusual  # more than one document: the careful reader says so
        return value

    def _node(self, events: Any) -> Any:
        stack: list[Any] = []  # the open containers, innermost last
        keys: list[Any] = []  # for each, the key waiting for its value (a mapping's)
        count = 0
        while True:
            event = events()
            kind = type(event)
            if kind is MappingEndEvent or kind is SequenceEndEvent:
                done = stack.pop()
                keys.pop()
                if not stack:
                    return done
                continue
            count += 1  # keys count too: over the cap, the careful reader decides
            if count > self._max_values or len(stack) >= self._max_depth:
                raise Unusual  # the careful reader names the cap and the line
            value = self._value(event, kind)
            if stack and not _place(stack[-1], keys, value):
                continue  # a key: its value comes next
            if kind is not ScalarEvent:
                stack.append(value)
                keys.append(_NO_KEY)
            elif not stack:
                return value

    def _value(self, event: Any, kind: type) -> Any:
        """A scalar's value, or the empty container an event opens."""
        if event.anchor is not None or event.tag is not None:
            raise Unusual
        if kind is ScalarEvent:
            return self._scalar(event)
        if kind is MappingStartEvent:
            return {}
        if kind is SequenceStartEvent:
            return []
        raise Unusual  # an alias

    def _scalar(self, event: Any) -> Any:
        text: str = event.value
        if not event.implicit[0]:
            return text  # quoted or a block scalar: a string
        resolvers = _RESOLVERS.get(text[0] if text else "", [])
        tag = next((tag for tag, regexp in [*resolvers, *_WILDCARD] if regexp.match(text)), None)
        if tag is None:
            return text
        if tag not in _SIMPLE:
            raise Unusual  # a merge key (<<) or a value key (=)
        if self._constructor is None:
            self._constructor = SafeConstructor()
        build = SafeConstructor.yaml_constructors[tag]
        return build(self._constructor, ScalarNode(tag, text))


def _place(parent: Any, keys: list[Any], value: Any) -> bool:
    """Put ``value`` into ``parent``: False when it is a mapping's key (its value next)."""
    if isinstance(parent, list):
        parent.append(value)
        return True
    key = keys[-1]
    if key is _NO_KEY:
        if not isinstance(value, str) or value in parent:
            raise Unusual  # a key given twice, or not a string
        keys[-1] = value
        return False
    parent[key] = value
    keys[-1] = _NO_KEY
    return True
