"""Tool arguments against a tool's input schema (runner.defs.toolargs): the check the
executor pool makes before each call and ``omni validate`` before any run."""

from __future__ import annotations

import pytest

from runner.defs.toolargs import ArgsSchema
from runner.reach.builtin.catalog import TOOLS

RUN = ArgsSchema.of(TOOLS["run"])


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"command": ["ls", "-l"]}, None),
        ({"command": "ls -l", "timeout": 5}, None),
        (
            {"command": [1, 2]},
            "argument 'command' must be array of string or string, got list [1, 2]",
        ),
        (
            {"command": [False]},
            "argument 'command' must be array of string or string, got list [False]",
        ),
        ({"command": 5}, "argument 'command' must be array of string or string, got int 5"),
        ({"command": "ls", "timeout": "soon"}, "argument 'timeout' must be number, got str 'soon'"),
        (
            {},
            "missing required argument(s) 'command'; the tool takes"
            " (command: array of string|string, timeout: number?)",
        ),
    ],
)
def test_any_of_and_array_items_are_checked(args: dict[str, object], problem: str | None) -> None:
    assert RUN.problem(args) == problem


def test_strict_refuses_an_argument_an_open_schema_would_ignore() -> None:
    echo = ArgsSchema.of(TOOLS["echo"])
    assert echo.problem({"text": "hi", "txt": "x"}) is None  # the server ignores it
    assert echo.problem({"text": "hi", "txt": "x"}, strict=True) == (
        "unknown argument 'txt'; the tool takes (text: string)"
    )
    assert ArgsSchema.of({}).problem({"anything": 1}, strict=True) is None  # takes anything


def test_hostile_schemas_do_not_break_the_check() -> None:
    deep: dict[str, object] = {"type": "array"}
    for _ in range(50):
        deep = {"anyOf": [deep]}
    odd = ArgsSchema.of(
        {"properties": {"a": deep, "b": "not a schema", "c": {"type": 7}}, "required": "a"}
    )
    assert odd.problem({"a": [1], "b": 2, "c": 3}) is None
    assert ArgsSchema.of(None).problem({"x": 1}) is None
