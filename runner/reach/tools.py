"""MCP tools as a server lists them, each with its input schema digested for the cheap
check of a call's arguments (:mod:`runner.defs.toolargs`; the server checks the rest),
and what a call answers: the records the pool and its callers share, without the
``mcp`` SDK."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.defs.toolargs import ArgsSchema

if TYPE_CHECKING:
    from collections.abc import Mapping

    import mcp_types as types


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A tool as its server lists it."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """A tool's answer; ``is_error`` results are returned, the caller decides."""

    text: str
    """The text content blocks, joined by newlines."""
    structured: Any | None
    is_error: bool


@dataclass(frozen=True, slots=True)
class ListedTool:
    """A listed tool with its input schema digested for a cheap check of each call."""

    info: ToolInfo
    args: ArgsSchema

    @classmethod
    def of(cls, tool: types.Tool) -> ListedTool:
        """Digest a listed tool."""
        schema = dict(tool.input_schema or {})
        return cls(ToolInfo(tool.name, tool.description or "", schema), ArgsSchema.of(schema))

    def problem(self, args: Mapping[str, Any]) -> str | None:
        """Why ``args`` fail the tool's schema, or None; the server checks the rest."""
        return self.args.problem(args)
