"""MCP tools as a server lists them, and the cheap check of a call's arguments against
the top level of a tool's input schema (the server checks the rest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    import mcp_types as types


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A tool as its server lists it."""

    name: str
    description: str
    input_schema: dict[str, Any]


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "integer": int, "object": dict}
_JSON_TYPES |= {"number": (int, float), "array": (list, tuple), "null": type(None)}


def _is_json_type(value: Any, name: str) -> bool:
    if isinstance(value, bool):  # bool is an int in Python, not in JSON
        return name == "boolean"
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    kind = _JSON_TYPES.get(name)
    return kind is None or isinstance(value, kind)


def _type_names(prop: Any) -> tuple[str, ...]:
    kind = prop.get("type") if isinstance(prop, dict) else None
    kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else []
    return tuple(k for k in kinds if isinstance(k, str))


@dataclass(frozen=True, slots=True)
class ListedTool:
    """A listed tool with its schema's top level pre-digested for a cheap check."""

    info: ToolInfo
    required: tuple[str, ...]
    typed: dict[str, tuple[str, ...]]  # property -> JSON type names (empty: any)
    closed: bool  # the schema forbids properties it does not list

    @classmethod
    def of(cls, tool: types.Tool) -> ListedTool:
        """Digest a listed tool."""
        schema = tool.input_schema or {}
        return cls(
            ToolInfo(tool.name, tool.description or "", dict(schema)),
            tuple(k for k in schema.get("required") or () if isinstance(k, str)),
            {k: _type_names(p) for k, p in (schema.get("properties") or {}).items()},
            schema.get("additionalProperties") is False,
        )

    def problem(self, args: Mapping[str, Any]) -> str | None:
        """Why ``args`` fail the schema's top level, or None; the server checks the rest."""
        if missing := [k for k in self.required if k not in args]:
            return f"missing required argument(s) {', '.join(map(repr, missing))}; {self.usage()}"
        for key, value in args.items():
            kinds = self.typed.get(key)
            if kinds is None and self.closed:
                return f"unknown argument {key!r}; {self.usage()}"
            if kinds and not any(_is_json_type(value, k) for k in kinds):
                got = f"{type(value).__name__} {value!r:.60}"
                return f"argument {key!r} must be {' or '.join(kinds)}, got {got}"
        return None

    def usage(self) -> str:
        """The arguments in short, for error messages (``?`` marks optional ones)."""
        opt = {k: "" if k in self.required else "?" for k in self.typed}
        parts = (f"{k}: {'|'.join(t) or 'any'}{opt[k]}" for k, t in self.typed.items())
        return f"the tool takes ({', '.join(parts)})"
