"""The built-in executor's tools and their input schemas, known without starting it.

``omni validate`` checks tool tasks on ``builtin`` (tool names, arguments) and prompt
tasks' ``tools:`` against these, with no server and no ``mcp`` import. A test holds them
equal to what the running server lists, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

#: Tool name -> its input schema, as ``tools/list`` gives it (titles left out).
TOOLS: dict[str, dict[str, Any]] = {
    "echo": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
    "read_file": {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
    "write_file": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
    "list_dir": {
        "type": "object",
        "properties": {"path": {"type": "string", "default": "."}},
    },
    "run": {
        "type": "object",
        "properties": {
            "command": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]
            },
            "timeout": {"type": "number", "default": 60.0},
        },
        "required": ["command"],
    },
}
