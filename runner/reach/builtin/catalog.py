"""The built-in executor's tools, their descriptions and input schemas, known without
starting it.

``omni validate`` checks tool tasks on ``builtin`` (tool names, arguments) and prompt
tasks' ``tools:`` against these, and a prompt run offers them to its model, with no
server and no ``mcp`` import: the run's own executor starts only when the model calls a
tool. The server registers its tools with these descriptions, and a test holds the
schemas equal to what it lists, so the two cannot drift apart.
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

#: Tool name -> the description the server gives it (and a model reads).
DESCRIPTIONS: dict[str, str] = {
    "echo": "Return `text` unchanged (a health check).",
    "read_file": "Read a UTF-8 text file in the workspace.",
    "write_file": (
        "Write a text file in the workspace (parent folders are created); returns the "
        "number of bytes written."
    ),
    "list_dir": (
        "List a workspace folder: sorted names, one a line, folders marked with a trailing `/`."
    ),
    "run": (
        "Run a command in the workspace without a shell (a string is split like a shell "
        "would). Output (stdout and stderr) is capped at 64 KiB. A non-zero exit or a "
        "timeout is an error result that still carries the output."
    ),
}
