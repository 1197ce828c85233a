"""A tool call's arguments against the tool's JSON Schema input: the check the executor
pool makes before every call, and ``omni validate`` before any run.

Not a full JSON Schema validator: the top level (required, unknown when the schema is
closed) and each argument's type, through ``anyOf``/``oneOf`` and array items, which is
what a task author gets wrong. Digested once per listed tool, so a call's check is a few
dictionary look-ups. The server checks the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

_JSON_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "integer": int, "object": dict}
_JSON_TYPES |= {"number": (int, float), "array": (list, tuple), "null": type(None)}
#: How deep nested ``anyOf`` / ``items`` are followed (schemas from outside may nest).
_MAX_DEPTH = 4


def _is_json_type(value: Any, name: str) -> bool:
    if isinstance(value, bool):  # bool is an int in Python, not in JSON
        return name == "boolean"
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    kind = _JSON_TYPES.get(name)
    return kind is None or isinstance(value, kind)


def _alternatives(node: Any) -> list[dict[str, Any]]:
    """The schemas a value may match: ``anyOf``/``oneOf`` branches, or the node."""
    if not isinstance(node, dict):
        return []
    branches = node.get("anyOf") or node.get("oneOf")
    if isinstance(branches, list):
        return [b for b in branches if isinstance(b, dict)]
    return [node]


def _types(node: dict[str, Any]) -> tuple[str, ...]:
    kind = node.get("type")
    kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else []
    return tuple(k for k in kinds if isinstance(k, str))


def fits(value: Any, node: Any, depth: int = 0) -> bool:
    """True when ``value`` has a type ``node`` allows (an untyped node allows any)."""
    if depth > _MAX_DEPTH:
        return True
    branches = _alternatives(node)
    if not branches:
        return True
    for branch in branches:
        kinds = _types(branch)
        if kinds and not any(_is_json_type(value, k) for k in kinds):
            continue
        items = branch.get("items")
        listed = isinstance(value, list | tuple) and isinstance(items, dict)
        if listed and not all(fits(item, items, depth + 1) for item in value):
            continue
        nested = "anyOf" in branch or "oneOf" in branch
        if nested and not fits(value, branch, depth + 1):
            continue
        return True
    return False


def describe(node: Any, depth: int = 0) -> str:
    """The types ``node`` allows, in short: ``integer|null``, ``array of string|string``;
    ``any`` when untyped."""
    parts: list[str] = []
    for branch in _alternatives(node):
        kinds = _types(branch)
        items = branch.get("items")
        for kind in kinds:
            if kind == "array" and isinstance(items, dict) and depth < _MAX_DEPTH:
                inner = describe(items, depth + 1)
                parts.append(f"array of {inner}" if inner != "any" else kind)
            else:
                parts.append(kind)
        if not kinds and ("anyOf" in branch or "oneOf" in branch) and depth < _MAX_DEPTH:
            parts.append(describe(branch, depth + 1))
    return "|".join(dict.fromkeys(parts)) or "any"


@dataclass(frozen=True, slots=True)
class ArgsSchema:
    """A tool's input schema, digested for a cheap check of one call's arguments."""

    properties: dict[str, Any]
    """Each argument's schema node."""
    required: tuple[str, ...]
    closed: bool
    """The schema forbids arguments it does not list."""

    @classmethod
    def of(cls, schema: Mapping[str, Any] | None) -> ArgsSchema:
        """Digest an input schema (``None`` or ``{}``: takes anything)."""
        schema = schema or {}
        properties = schema.get("properties")
        required = schema.get("required")
        return cls(
            dict(properties) if isinstance(properties, dict) else {},
            tuple(k for k in required or () if isinstance(k, str))
            if isinstance(required, list)
            else (),
            schema.get("additionalProperties") is False,
        )

    def problem(self, args: Mapping[str, Any], *, strict: bool = False) -> str | None:
        """Why ``args`` do not fit, or ``None``. ``strict`` (``omni validate``) also
        refuses an argument an open schema does not list: the tool would ignore it, so
        it is most likely a misspelt one."""
        if missing := [k for k in self.required if k not in args]:
            return f"missing required argument(s) {', '.join(map(repr, missing))}; {self.usage()}"
        for key, value in args.items():
            node = self.properties.get(key)
            if node is None:
                if self.closed or (strict and self.properties):
                    return f"unknown argument {key!r}; {self.usage()}"
                continue
            if not fits(value, node):
                got = f"{type(value).__name__} {value!r:.60}"
                wanted = describe(node).replace("|", " or ")
                return f"argument {key!r} must be {wanted}, got {got}"
        return None

    def usage(self) -> str:
        """The arguments in short, for error messages (``?`` marks optional ones)."""
        parts = (
            f"{k}: {describe(node)}{'' if k in self.required else '?'}"
            for k, node in self.properties.items()
        )
        return f"the tool takes ({', '.join(parts)})"
