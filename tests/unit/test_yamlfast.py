"""runner.core.yamlfast: the quick reader gives the careful reader's values, or leaves the
document to it; every hostile construct ends as the careful reader's value or error."""

from __future__ import annotations

import math

import pytest

from runner.core.yamlfast import Unusual, quick_load
from runner.core.yamlio import MAX_DEPTH, MAX_VALUES, YamlProblem, parse_carefully, parse_yaml

PLAIN = [
    "",
    "~\n",
    "---\n",
    "--- \ntool: x\n...\n",
    "plain text\n",
    "[1, 2, [3, [4]]]\n",
    "tool: echo\nargs: {text: 'hi', n: 3}\nschedule: \"every 1h\"\ntimeout: 300\n",
    "description: |\n  two\n  lines\nprompt: >\n  folded\n  text\n",
    "a: yes\nb: No\nc: ~\nd: null\ne: 0x1F\nf: 0o17\ng: 1_000\nh: 1:30\ni: -.5e3\n",
    "a: .inf\nb: -.Inf\nc: 2026-01-01\nd: 2026-01-01 10:00:00+02:00\ne: ''\nf:\n",
    "nested:\n  - {k: [a, b]}\n  - - deep\n    - 1\n",
    "\ufefftool: x\r\nargs: {a: 1}\r\n",
    "'1': quoted key\n\"2\": other\n",
    "%YAML 1.1\n---\na: 1\n",
]


@pytest.mark.parametrize("text", PLAIN)
def test_plain_documents_are_read_quickly_with_the_careful_values(text: str) -> None:
    value = quick_load(text, MAX_DEPTH, MAX_VALUES)
    assert value == parse_carefully(text)
    assert repr(value) == repr(parse_carefully(text))  # same types: 1 is not True


def test_nan_is_read_as_the_careful_reader_reads_it() -> None:
    assert math.isnan(quick_load("a: .nan\n", MAX_DEPTH, MAX_VALUES)["a"])


UNUSUAL = [
    "a: &x 1\nb: *x\n",  # anchor and alias
    "base: &b {a: 1}\nown: {<<: *b, c: 2}\n",  # merge key
    "a: !!str 1\n",  # explicit tag
    "a: !custom 1\n",
    "b: !!python/object/apply:os.system ['true']\n",
    "a: 1\nb: 2\na: 3\n",  # a key twice
    "a: 1\n'a': 2\n",  # the same key quoted
    "1: a\n01: b\n",  # keys that are not strings
    "~: a\n",
    "true: a\n",
    "? [a, b]\n: c\n",  # a complex key
    "=: a\n",  # the value key
    "a: 1\n---\nb: 2\n",  # two documents
    "tool: x\nargs: {a: [1\n",  # a syntax error
    "a: b: c\n",
    "a: 2026-13-45\n",  # a date that does not exist
    "\tkey: tab\n",
]


@pytest.mark.parametrize("text", UNUSUAL)
def test_unusual_documents_go_to_the_careful_reader_and_end_the_same(text: str) -> None:
    with pytest.raises(Unusual):
        quick_load(text, MAX_DEPTH, MAX_VALUES)
    try:
        careful = parse_carefully(text)
    except YamlProblem as exc:
        with pytest.raises(YamlProblem) as caught:
            parse_yaml(text)
        assert (caught.value.line, caught.value.message) == (exc.line, exc.message)
    else:
        assert parse_yaml(text) == careful


def test_a_date_that_does_not_exist_is_a_problem_with_its_line() -> None:
    with pytest.raises(YamlProblem, match=r"not a valid date or time \(month must be") as caught:
        parse_yaml("tool: x\nargs: {when: 2026-13-45}\n")
    assert caught.value.line == 2


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("!!timestamp soon", "not a valid date or time"),
        ('!!timestamp ""', "not a valid date or time"),
        ("!!bool maybe", "not a valid value for its tag !!bool"),
        ('!!bool ""', "not a valid value for its tag !!bool"),
        ('!!int ""', "not a valid value for its tag !!int"),
        ("!!int abc", "not a valid value for its tag !!int"),
        ('!!float ""', "not a valid value for its tag !!float"),
        ("!!float", "not a valid value for its tag !!float"),
        ("!<tag:yaml.org,2002:int> zz", "not a valid value for its tag !!int"),
    ],
)
def test_a_value_its_safe_tag_cannot_build_is_a_problem_with_its_line(value: str, why: str) -> None:
    # PyYAML's constructors trust the tag and fail with Python's own errors (an
    # AttributeError, a KeyError, an IndexError): a traceback that stopped every task.
    with pytest.raises(YamlProblem) as caught:
        parse_yaml(f"tool: x\nargs:\n  when: {value}\n")
    assert (caught.value.line, caught.value.message) == (3, f"invalid YAML: {why}")


def test_billion_laughs_stops_at_the_first_alias() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "\n".join(lines)
    with pytest.raises(Unusual):
        quick_load(text, MAX_DEPTH, MAX_VALUES)
    with pytest.raises(YamlProblem, match=f"over {MAX_VALUES:,} values"):
        parse_yaml(text)


# An unbounded parse would run for hours: the timeout is the check, not a speed bar.
@pytest.mark.timeout(30)
def test_depth_bomb_stops_at_the_cap_with_the_careful_line() -> None:
    text = "tool: x\nargs:\n" + "".join("  " * i + "- \n" for i in range(200))
    with pytest.raises(Unusual):
        quick_load(text, MAX_DEPTH, MAX_VALUES)
    with pytest.raises(YamlProblem, match="nested deeper") as caught:
        parse_yaml(text)
    assert caught.value.line == MAX_DEPTH + 2
    with pytest.raises(Unusual):
        quick_load("[" * 400_000 + "]" * 400_000, MAX_DEPTH, MAX_VALUES)


def test_depth_up_to_the_cap_is_read_quickly() -> None:
    at_cap = "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1)
    value = quick_load(at_cap, MAX_DEPTH, MAX_VALUES)
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == 1
    with pytest.raises(Unusual):
        quick_load("[" + at_cap + "]", MAX_DEPTH, MAX_VALUES)


def test_too_many_values_without_aliases_get_the_careful_error() -> None:
    text = "a: [" + ",".join(["1"] * MAX_VALUES) + "]\n"  # the root, a, and the items
    with pytest.raises(Unusual):
        quick_load(text, MAX_DEPTH, MAX_VALUES)
    with pytest.raises(YamlProblem, match=f"over {MAX_VALUES:,} values"):
        parse_yaml(text)
