"""Path globs (``pull_request.paths``, protected paths): what each form covers."""

from __future__ import annotations

import pytest

from runner.core.pathglob import PathRules, compile_glob, normalize


@pytest.mark.parametrize(
    ("pattern", "covered", "not_covered"),
    [
        ("docs/**", ["docs/a.md", "docs/x/y/z.txt"], ["docs", "doc/a.md", "src/docs/a.md"]),
        ("tasks", ["tasks", "tasks/a.yaml", "tasks/x/b.yml"], ["tasksx", "x/tasks"]),
        ("src/*.py", ["src/b.py"], ["src/x/b.py", "src/b.pyc", "b.py"]),
        ("**/*.key", ["a.key", "x/y/a.key"], ["a.keys", "x/key"]),
        ("a/[bc].txt", ["a/b.txt", "a/c.txt"], ["a/d.txt"]),
        ("a/[!b].txt", ["a/c.txt"], ["a/b.txt"]),
        ("README.md", ["README.md"], ["docs/README.md"]),
        ("**", ["anything", "x/y"], []),
        ("build/", ["build", "build/out.o"], ["builder"]),
    ],
)
def test_what_a_pattern_covers(pattern: str, covered: list[str], not_covered: list[str]) -> None:
    rules = PathRules([pattern])
    for path in covered:
        assert rules.match(path) == pattern, path
    for path in not_covered:
        assert rules.match(path) is None, path


def test_paths_are_normalized_before_matching() -> None:
    rules = PathRules([".git"])
    assert rules.covers("./.git/config")
    assert rules.covers("x/../.git/hooks/pre-commit")
    assert not rules.covers("../.git")  # outside: never covered, never allowed
    assert normalize("/etc/passwd") is None
    assert normalize("a/../..") is None
    assert normalize("a//b/./c") == "a/b/c"


def test_first_matching_pattern_is_named() -> None:
    rules = PathRules(["docs/**", "**/*.md", "docs/**"])
    assert rules.patterns == ("docs/**", "**/*.md")
    assert rules.match("docs/a.md") == "docs/**"
    assert rules.match("b.md") == "**/*.md"
    assert not PathRules([])


@pytest.mark.parametrize("pattern", ["../x", "/etc/*", "", ".."])
def test_patterns_leaving_the_repository_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="not a relative path inside the repository"):
        compile_glob(pattern)
