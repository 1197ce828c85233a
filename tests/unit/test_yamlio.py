"""runner.core.yamlio: the bounded safe YAML reader, ``line_of`` and ``dotted``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from runner.core import yamlio
from runner.core.errors import InvalidTaskFile
from runner.core.yamlio import (
    MAX_DEPTH,
    MAX_VALUES,
    YamlProblem,
    dotted,
    line_of,
    parse_yaml,
    read_yaml,
)
from runner.defs.tasks import load_task_file

if TYPE_CHECKING:
    from pathlib import Path

NESTED = """\
name: demo
router:
  rules:
    - match: {kind: coding}
      executor: claude_code
    - match:
        words: [deploy, release]
      executor: openclaw
mcp_servers:
  git:
    command: uvx
    args: [mcp-server-git, --repository, .]
"""


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("name",), 1),
        (("router",), 2),
        (("router", "rules"), 3),
        (("router", "rules", 0), 4),
        (("router", "rules", 0, "match", "kind"), 4),
        (("router", "rules", 0, "executor"), 5),
        (("router", "rules", 1), 6),
        (("router", "rules", 1, "match", "words"), 7),
        (("router", "rules", 1, "match", "words", 1), 7),
        (("router", "rules", 1, "executor"), 8),
        (("mcp_servers", "git", "command"), 11),
        (("mcp_servers", "git", "args", 2), 12),
    ],
)
def test_line_of_finds_nested_keys_and_list_items(loc: tuple[str | int, ...], line: int) -> None:
    assert line_of(NESTED, loc) == line


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("router", "rules", 0, "missing"), 4),  # deepest part that exists
        (("router", "rules", 9), 3),  # index past the end: the list's key
        (("mcp_servers", "git", "command", "deeper"), 11),  # a scalar has no keys
        (("nowhere",), 1),
        ((), 1),
    ],
)
def test_line_of_falls_back_to_the_deepest_part_that_exists(
    loc: tuple[str | int, ...], line: int
) -> None:
    assert line_of(NESTED, loc) == line


def test_line_of_unparsable_text_is_line_1() -> None:
    assert line_of("a: [1,\n", ("a",)) == 1


@pytest.mark.parametrize(
    ("loc", "text"),
    [
        (("rules", 0, "executor"), "rules[0].executor"),
        (("router", "rules", 2, "match", "words", 0), "router.rules[2].match.words[0]"),
        (("dispatch", "concurrency"), "dispatch.concurrency"),
        (("id",), "id"),
        ((0,), "[0]"),
        ((), "(file)"),
    ],
)
def test_dotted(loc: tuple[str | int, ...], text: str) -> None:
    assert dotted(loc) == text


def test_parse_yaml_keeps_merge_key_semantics() -> None:
    data = parse_yaml(
        "base: &base {a: 1, b: 2}\n"
        "other: &other {b: 3, c: 4}\n"
        "own: {<<: *base, a: 9}\n"
        "both: {<<: [*base, *other]}\n"
    )
    assert data["own"] == {"a": 9, "b": 2}  # the mapping's own key wins
    assert data["both"] == {"a": 1, "b": 2, "c": 4}  # the first listed merge wins


# An unbounded parse would run for hours: the timeout is the check, not a speed bar.
@pytest.mark.timeout(30)
def test_exponential_merge_bomb_is_bounded() -> None:
    lines = ["l0: &l0 {k0: 0, k1: 1, k2: 2, k3: 3}"]
    lines += [f"l{i}: &l{i} {{<<: [*l{i - 1}, *l{i - 1}], m{i}: 1}}" for i in range(1, 40)]
    data = parse_yaml("\n".join(lines))  # de-duplicated: 2**39 pairs never exist
    assert len(data["l39"]) == 4 + 39


# An unbounded parse would run for hours: the timeout is the check, not a speed bar.
@pytest.mark.timeout(30)
def test_quadratic_merge_chain_is_refused() -> None:
    lines = ["l0: &l0 {k0: 0}"]
    lines += [f"l{i}: &l{i} {{<<: *l{i - 1}, k{i}: 1}}" for i in range(1, 2000)]
    with pytest.raises(YamlProblem, match="merge bomb") as caught:
        parse_yaml("\n".join(lines))
    assert caught.value.line > 1  # where the merges went over the cap


def test_depth_up_to_the_cap_loads_and_one_more_is_refused() -> None:
    at_cap = "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1)  # the scalar is level 64
    value = parse_yaml(at_cap)
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == 1
    with pytest.raises(YamlProblem, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_yaml("[" + at_cap + "]")


# An unbounded parse would run for hours: the timeout is the check, not a speed bar.
@pytest.mark.timeout(30)
@pytest.mark.parametrize("depth", [5_000, 400_000])
def test_very_deep_nesting_answers_fast_without_crashing(depth: int) -> None:
    # 400,000 levels once killed the process (libyaml's composer recursed in C).
    with pytest.raises(YamlProblem, match="nested deeper"):
        parse_yaml("[" * depth + "]" * depth)


def test_deep_block_nesting_names_the_line() -> None:
    text = "tool: x\nargs:\n" + "".join("  " * i + "- \n" for i in range(200))
    with pytest.raises(YamlProblem, match="nested deeper") as caught:
        parse_yaml(text)
    # Line 1 is the root mapping (level 1); line N >= 3 opens level N - 1.
    assert caught.value.line == MAX_DEPTH + 2  # the first line past the cap


def test_depth_built_through_aliases_is_refused() -> None:
    half = MAX_DEPTH // 2 + 2
    text = "a: &a " + "[" * half + "]" * half + "\nb: " + "[" * half + "*a" + "]" * half
    with pytest.raises(YamlProblem, match="nested deeper"):
        parse_yaml(text)


def test_alias_bomb_is_refused() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    with pytest.raises(YamlProblem, match=f"over {MAX_VALUES:,} values"):
        parse_yaml("\n".join(lines))


@pytest.mark.parametrize(
    "text",
    ["a: 1\nb: 2\na: 3\n", "b: 2\na: {x: 1, x: 2}\n"],
)
def test_duplicate_keys_are_refused(text: str) -> None:
    with pytest.raises(YamlProblem, match="appears twice") as caught:
        parse_yaml(text)
    assert caught.value.line in {2, 3}


def test_same_key_in_different_mappings_is_fine() -> None:
    assert parse_yaml("a: {x: 1}\nb: {x: 2}\n") == {"a": {"x": 1}, "b": {"x": 2}}


@pytest.mark.parametrize(
    "tag", ["!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!custom 1"]
)
def test_object_tags_are_refused(tag: str) -> None:
    with pytest.raises(YamlProblem, match="tags that build objects are not allowed"):
        parse_yaml(f"a: 1\nb: {tag}\n")


def test_bom_and_crlf_are_accepted() -> None:
    assert parse_yaml("\ufefftool: x\r\nargs: {a: 1}\r\n") == {"tool": "x", "args": {"a": 1}}


def test_read_yaml_size_cap_is_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"a: 1\n" + b"#" * 95)  # exactly 100 bytes
    assert read_yaml(path, max_bytes=100) == ({"a": 1}, path.read_text())
    path.write_bytes(b"a: 1\n" + b"#" * 96)
    with pytest.raises(YamlProblem, match="101 bytes, over the 100-byte cap"):
        read_yaml(path, max_bytes=100)


def test_read_yaml_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"a: 1\nb: 2\nc: caf\xe9\n")
    with pytest.raises(YamlProblem, match="not valid UTF-8") as caught:
        read_yaml(path, max_bytes=1000)
    assert caught.value.line == 3


def test_unclosed_bracket_says_where_it_opened() -> None:
    with pytest.raises(YamlProblem, match=r"from line 2") as caught:
        parse_yaml("tool: x\nargs: {a: [1\n")
    assert caught.value.line == 3


def test_a_file_with_many_problems_is_composed_once_and_each_gets_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One compose a problem made a file of 1,600 unknown keys take 17 s (quadratic).
    composed: list[str] = []
    real = yamlio._compose  # pylint: disable=protected-access

    def counting(text: str) -> object:
        composed.append(text)
        return real(text)

    monkeypatch.setattr(yamlio, "_compose", counting)
    path = tmp_path / "many.yaml"
    path.write_text("tool: echo\n" + "".join(f"extra{i}: 1\n" for i in range(500)))
    with pytest.raises(InvalidTaskFile) as caught:
        load_task_file(path, tmp_path, 1_048_576)
    problems = caught.value.problems
    assert [(p.field, p.line) for p in problems] == [(f"extra{i}", i + 2) for i in range(500)]
    assert len(composed) == 1
