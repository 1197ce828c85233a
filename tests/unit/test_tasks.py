"""runner.defs.tasks: the task-file model and the folder loader (DESIGN §4 "Task file").

Every bad input is checked the way a person reads ``omni validate``: the exact
``PATH:LINE: FIELD: message`` line, and that a valid file next to it still loads.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.core.ids import check_task_id
from runner.defs.cron import every_seconds
from runner.defs.tasks import (
    LoadResult,
    Task,
    default_id,
    find_task_files,
    load_tasks,
)
from tests.support.cli import run_omni

GOOD = "tool: git_status\n"


def write(root: Path, name: str, content: str | bytes) -> Path:
    """Write ``content`` to ``root/name`` (folders made); bytes are written as they are."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def load_with_good(tmp_path: Path, name: str, content: str | bytes, **kwargs: int) -> list[str]:
    """Load a folder with one bad file and one good one; the lines reported for the bad one."""
    root = tmp_path / "tasks"
    write(root, "good.yaml", GOOD)
    bad = write(root, name, content)
    result = load_tasks(root, **kwargs)
    assert [t.id for t in result.tasks] == ["good"], "the valid file next to it must load"
    lines = [p.render() for p in result.problems]
    assert lines, "the bad file must be reported"
    assert all(line.startswith(f"{bad}:") for line in lines), lines
    return lines


def assert_line(line: str, path: Path, lineno: int, field: str, *words: str) -> None:
    """``line`` is ``PATH:LINE: FIELD: message`` and the message holds every word."""
    prefix = f"{path}:{lineno}: {field}: "
    assert line.startswith(prefix), f"{line!r} does not start with {prefix!r}"
    message = line.removeprefix(prefix).lower()
    for word in words:
        assert word.lower() in message, f"{word!r} not in {line!r}"


@pytest.mark.parametrize(
    ("content", "lineno", "field", "words"),
    [
        pytest.param(
            "tool: git_log\nargs: {repo_path: [.\n",
            3,
            "(file)",
            ["invalid yaml", "from line 2"],
            id="malformed-yaml",
        ),
        pytest.param("- tool: a\n- tool: b\n", 1, "(file)", ["mapping", "list"], id="list"),
        pytest.param("just a string\n", 1, "(file)", ["mapping", "str"], id="scalar"),
        pytest.param(
            "tool: git_log\nrepeat: 3\n",
            2,
            "repeat",
            ["unknown key", "allowed keys", "retries"],
            id="unknown-key",
        ),
        pytest.param(
            "description: d\ntool: git_log\nprompt: summarise\n",
            3,
            "prompt",
            ["either `tool`", "`prompt`", "not both"],
            id="tool-and-prompt",
        ),
        pytest.param(
            "description: only words\n",
            1,
            "tool",
            ["needs `tool`", "or `prompt`"],
            id="neither",
        ),
        pytest.param(
            'tool: x\nschedule: "61 * * * *"\n',
            2,
            "schedule",
            ["bad cron", "minute '61'", "out of range", "0-59"],
            id="cron-minute-61",
        ),
        pytest.param(
            'tool: x\nschedule: "0 0 30 2 *"\n',
            2,
            "schedule",
            ["bad cron", "day of month '30'", "feb", "never run"],
            id="cron-never-fires",
        ),
        pytest.param(
            'tool: x\nschedule: "7/2 * * * *"\n',
            2,
            "schedule",
            ["bad cron", "minute '7/2'", "single value", "Debian cron refuses", "7-59/2"],
            id="cron-step-from-a-value",
        ),
        pytest.param(
            "tool: x\nschedule: every 3000000d\n",
            2,
            "schedule",
            ["every 3000000d", "at most 366 days"],
            id="every-too-long",
        ),
        pytest.param(
            "tool: x\nschedule: '@reboot'\n",
            2,
            "schedule",
            ["@reboot", "without `schedule`"],
            id="cron-reboot",
        ),
        pytest.param(
            'tool: x\nschedule: "* * *"\n',
            2,
            "schedule",
            ["5-field cron", "every n"],
            id="cron-three-fields",
        ),
        pytest.param(
            'tool: x\nschedule: "0 3 * * 8"\n',
            2,
            "schedule",
            ["day of week", "'8'", "0-7"],
            id="cron-weekday-8",
        ),
        pytest.param(
            "tool: x\nschedule: every 0m\n",
            2,
            "schedule",
            ["every 0m", "at least 1 second"],
            id="every-0m",
        ),
        pytest.param(
            "tool: x\nschedule: every ten minutes\n",
            2,
            "schedule",
            ["every ten minutes", "every 10m"],
            id="every-ten-minutes",
        ),
        pytest.param(
            'tool: x\nschedule: "0 3 * * *"\ntimezone: Mars/Olympus_Mons\n',
            3,
            "timezone",
            ["unknown time zone", "Mars/Olympus_Mons", "Europe/Berlin"],
            id="unknown-timezone",
        ),
        pytest.param(
            "tool: x\ntimeout: -5\n", 2, "timeout", ["greater than 0", "-5"], id="negative-timeout"
        ),
        pytest.param(
            "id: reports/../secrets\ntool: x\n",
            1,
            "id",
            ["'..'", "reports/../secrets"],
            id="id-dotdot",
        ),
        pytest.param(
            "tool: x\nid: /etc/cron\n",
            2,
            "id",
            ["starts with '/'", "relative"],
            id="id-leading-slash",
        ),
        pytest.param("tool: x\nid: a//b\n", 2, "id", ["empty part"], id="id-double-slash"),
        pytest.param("", 1, "(file)", ["empty", "tool", "prompt"], id="empty"),
        pytest.param("# only a comment\n\n", 1, "(file)", ["empty"], id="only-comments"),
        pytest.param(
            "tool: x\n---\ntool: y\n",
            2,
            "(file)",
            ["more than one yaml document", "one task"],
            id="two-documents",
        ),
        pytest.param(
            "tool: x\nschedule: every 1h\nretries: 1\nschedule: every 2h\n",
            4,
            "(file)",
            ["'schedule' appears twice", "line 2"],
            id="duplicate-key",
        ),
        pytest.param(
            "tool: x\ntools: [Read]\nmax_turns: 0\n",
            3,
            "max_turns",
            ["greater than or equal to 1"],
            id="max-turns-0",
        ),
        pytest.param(
            "tool: x\nkind: codeing\n",
            2,
            "kind",
            ["'coding'", "'general'", "codeing"],
            id="bad-kind",
        ),
    ],
)
def test_bad_file_is_one_clear_line(
    tmp_path: Path, content: str, lineno: int, field: str, words: list[str]
) -> None:
    [line] = load_with_good(tmp_path, "bad.yaml", content)
    assert_line(line, tmp_path / "tasks" / "bad.yaml", lineno, field, *words)


def test_wrong_types_each_get_a_line_in_file_order(tmp_path: Path) -> None:
    content = "tool: x\ntimeout: abc\nenabled: maybe\nargs: [1, 2]\nretries: -1\n"
    lines = load_with_good(tmp_path, "types.yaml", content)
    path = tmp_path / "tasks" / "types.yaml"
    assert len(lines) == 4
    assert_line(lines[0], path, 2, "timeout", "valid number", "'abc'")
    assert_line(lines[1], path, 3, "enabled", "valid boolean", "'maybe'")
    assert_line(lines[2], path, 4, "args", "valid dictionary", "[1, 2]")
    assert_line(lines[3], path, 5, "retries", "greater than or equal to 0", "-1")


def test_file_name_that_makes_a_bad_id_says_rename_or_set_id(tmp_path: Path) -> None:
    [line] = load_with_good(tmp_path, "my task.yaml", "tool: x\n")
    path = tmp_path / "tasks" / "my task.yaml"
    assert_line(line, path, 1, "id", "'my task'", "from the file name", "rename", "`id:`")


def test_file_name_problem_goes_away_with_an_explicit_id(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    write(root, "my task.yaml", "id: my-task\ntool: x\n")
    result = load_tasks(root)
    assert result.problems == []
    assert [t.id for t in result.tasks] == ["my-task"]


def test_duplicate_id_names_both_files(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    first = write(root, "a/first.yaml", "id: nightly\ntool: x\n")
    second = write(root, "b/second.yaml", "description: again\nid: nightly\nprompt: hi\n")
    write(root, "good.yaml", GOOD)
    result = load_tasks(root)
    assert sorted(t.id for t in result.tasks) == ["good", "nightly"]
    assert next(t for t in result.tasks if t.id == "nightly").path == first
    [problem] = result.problems
    assert_line(problem.render(), second, 2, "id", "'nightly'", "already used", str(first))


def test_default_ids_can_collide_too(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    write(root, "report.yaml", "tool: x\n")
    second = write(root, "report.yml", "tool: y\n")
    result = load_tasks(root)
    assert [t.id for t in result.tasks] == ["report"]
    [problem] = result.problems
    assert_line(problem.render(), second, 1, "id", "'report'", "already used", "report.yaml")


def test_file_over_the_size_cap(tmp_path: Path) -> None:
    content = "tool: x\ndescription: " + "x" * 200 + "\n"
    [line] = load_with_good(tmp_path, "big.yaml", content, max_bytes=100)
    size = len(content.encode())
    assert_line(line, tmp_path / "tasks" / "big.yaml", 1, "(file)", f"{size:,} bytes", "100", "cap")


@pytest.mark.parametrize(
    ("content", "lineno"),
    [
        ("[" * 5000 + "]" * 5000, 1),
        ("tool: x\nargs:\n  a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n", 3),
        ("tool: x\nargs:\n  a:\n    " + "- " * 5000 + "1\n", 4),
    ],
    ids=["flow-list", "flow-mapping", "block-list"],
)
@pytest.mark.timeout(30)  # an unbounded parse would run far longer
def test_deep_nesting_is_refused_fast(tmp_path: Path, content: str, lineno: int) -> None:
    [line] = load_with_good(tmp_path, "deep.yaml", content)
    path = tmp_path / "tasks" / "deep.yaml"
    assert_line(line, path, lineno, "(file)", "nested deeper than 64 levels")


@pytest.mark.timeout(30)  # an unbounded parse would run far longer
def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("tool: x")
    [line] = load_with_good(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    assert_line(line, tmp_path / "tasks" / "bomb.yaml", 1, "(file)", "over 100,000 values", "alias")


def test_python_object_tag_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    content = f"tool: x\nargs: !!python/object/apply:os.system ['touch {marker}']\n"
    [line] = load_with_good(tmp_path, "evil.yaml", content)
    assert not marker.exists()
    assert_line(
        line,
        tmp_path / "tasks" / "evil.yaml",
        2,
        "(file)",
        "tags that build objects",
        "python/object/apply:os.system",
    )


def test_invalid_utf8(tmp_path: Path) -> None:
    [line] = load_with_good(tmp_path, "latin1.yaml", b"tool: x\ndescription: caf\xe9\n")
    assert_line(line, tmp_path / "tasks" / "latin1.yaml", 2, "(file)", "not valid utf-8")


def test_a_file_name_that_is_not_utf8_is_a_problem_and_the_others_run(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    # Bytes no UTF-8 decoder takes, in a file's name and in a folder's: with `id:` set,
    # nothing refused the file until its path reached SQLite and stopped every task.
    (tasks / os.fsdecode(b"w\xff.yaml")).write_text("id: weird\ntool: echo\nargs: {text: w}\n")
    (tasks / os.fsdecode(b"d\xfe")).mkdir()
    (tasks / os.fsdecode(b"d\xfe") / "t.yaml").write_text("id: indir\ntool: echo\n")
    (tasks / "good.yaml").write_text("tool: echo\nargs: {text: ok}\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    problems = [
        "tasks/d\\xfe/t.yaml:1: (file): its name is not valid UTF-8",
        "tasks/w\\xff.yaml:1: (file): its name is not valid UTF-8",
    ]
    checked = run_omni(tmp_path, "validate", env=env)
    assert checked.returncode == 1, checked.stderr
    assert [line for line in checked.stdout.splitlines() if "UTF-8" in line] == problems
    done = run_omni(tmp_path, "run", "--once", env=env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if "UTF-8" in line] == [
        f"invalid {line}" for line in problems
    ]
    assert "1 completed, 0 failed, 0 not run, 2 invalid task file problem(s)" in done.stdout


def test_every_problem_file_is_reported_and_valid_ones_load(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    write(root, "a.yaml", "tool: x\nfoo: 1\n")
    write(root, "b.yaml", "- x\n")
    write(root, "c/ok.yaml", "prompt: hello\n")
    write(root, "d.yaml", GOOD)
    result = load_tasks(root)
    assert sorted(t.id for t in result.tasks) == ["c/ok", "d"]
    assert [Path(p.path).name for p in result.problems] == ["a.yaml", "b.yaml"]


# --- good input ------------------------------------------------------------------------


def load_ok(root: Path) -> dict[str, Task]:
    result = load_tasks(root)
    assert result.problems == [], [p.render() for p in result.problems]
    return {t.id: t for t in result.tasks}


def test_ids_default_from_the_path_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    write(root, "top.yaml", "tool: x\n")
    write(root, "a/b.yaml", "tool: x\n")
    write(root, "repair/deep/fix-1.2.yml", "prompt: fix it\n")
    write(root, "named/whatever.yaml", "id: chosen/by-hand\ntool: x\n")
    tasks = load_ok(root)
    assert sorted(tasks) == ["a/b", "chosen/by-hand", "repair/deep/fix-1.2", "top"]
    assert tasks["a/b"].path == root / "a" / "b.yaml"
    assert tasks["repair/deep/fix-1.2"].is_prompt
    assert not tasks["top"].is_prompt


def test_default_id_outside_the_root_is_the_file_name(tmp_path: Path) -> None:
    assert default_id(tmp_path / "x" / "y.yaml", tmp_path / "tasks") == "y"


def test_a_single_file_as_root(tmp_path: Path) -> None:
    path = write(tmp_path, "tasks/solo.yaml", "tool: x\n")
    assert [t.id for t in load_tasks(path).tasks] == ["solo"]


@pytest.mark.parametrize(
    ("schedule", "seconds"),
    [
        ("every 10m", 600),
        ("every 30s", 30),
        ("every 2h", 7200),
        ("every 1d", 86400),
        ("EVERY 5 minutes", 300),
        ("every 90 sec", 90),
    ],
)
def test_every_schedules(tmp_path: Path, schedule: str, seconds: int) -> None:
    write(tmp_path / "tasks", "t.yaml", f"tool: x\nschedule: {schedule}\n")
    task = load_ok(tmp_path / "tasks")["t"]
    assert task.spec.schedule == schedule
    assert every_seconds(schedule) == seconds


def test_every_seconds_is_none_for_cron() -> None:
    assert every_seconds("0 3 * * *") is None


def test_cron_with_timezone(tmp_path: Path) -> None:
    write(tmp_path / "tasks", "t.yaml", 'tool: x\nschedule: "0 3 * * *"\ntimezone: Europe/Berlin\n')
    spec = load_ok(tmp_path / "tasks")["t"].spec
    assert (spec.schedule, spec.timezone) == ("0 3 * * *", "Europe/Berlin")


@pytest.mark.parametrize("schedule", ["@daily", "@hourly", "0 0 * * fri-7", "*/60 * * * *"])
def test_debian_schedules_load(tmp_path: Path, schedule: str) -> None:
    write(tmp_path / "tasks", "t.yaml", f"tool: x\nschedule: '{schedule}'\n")
    assert load_ok(tmp_path / "tasks")["t"].spec.schedule == schedule


def test_hidden_files_and_folders_and_other_suffixes_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    write(root, "visible.yaml", "tool: x\n")
    write(root, "also.yml", "tool: x\n")
    write(root, ".hidden.yaml", "not: a task\n")
    write(root, ".git/config.yaml", "not: a task\n")
    write(root, "team/.cache/old.yaml", "not: a task\n")
    write(root, "README.md", "# notes\n")
    write(root, "notes.yaml.bak", "junk: [\n")
    (root / "folder.yaml").mkdir()
    assert [p.name for p in find_task_files(root)] == ["also.yml", "visible.yaml"]
    assert sorted(load_ok(root)) == ["also", "visible"]


def test_a_hidden_folder_above_the_root_does_not_hide_tasks(tmp_path: Path) -> None:
    root = tmp_path / ".omni" / "tasks"
    write(root, "t.yaml", "tool: x\n")
    assert list(load_ok(root)) == ["t"]


def test_missing_root_loads_nothing(tmp_path: Path) -> None:
    assert load_tasks(tmp_path / "nope") == LoadResult()


BASE = """\
# nightly report
description: Summarise yesterday's commits
tool: git_log
args: {repo_path: ., max_count: 10}
schedule: "0 3 * * *"
"""


@pytest.mark.parametrize(
    "variant",
    [
        BASE,
        "# another comment\n\n" + BASE.replace(": ", ":   ") + "\n# trailing\n",
        # key order, flow vs block style, quoting
        "schedule: '0 3 * * *'\nargs:\n  max_count: 10\n  repo_path: '.'\n"
        'tool: git_log\ndescription: "Summarise yesterday\'s commits"\n',
        BASE + "enabled: true\nretries: 0\n",  # defaults written out
    ],
    ids=["same", "comments-whitespace", "key-order-style", "defaults-spelled-out"],
)
def test_content_hash_ignores_form(tmp_path: Path, variant: str) -> None:
    write(tmp_path / "a", "t.yaml", BASE)
    write(tmp_path / "b", "t.yaml", variant)
    assert load_ok(tmp_path / "a")["t"].task_hash == load_ok(tmp_path / "b")["t"].task_hash


@pytest.mark.parametrize(
    "variant",
    [
        BASE.replace("max_count: 10", "max_count: 11"),
        BASE.replace("0 3 * * *", "0 4 * * *"),
        BASE + "timeout: 60\n",
        BASE + "id: other\n",
    ],
    ids=["arg", "schedule", "timeout", "id"],
)
def test_content_hash_changes_with_a_value(tmp_path: Path, variant: str) -> None:
    write(tmp_path / "a", "t.yaml", BASE)
    write(tmp_path / "b", "t.yaml", variant)
    [changed] = load_ok(tmp_path / "b").values()
    assert load_ok(tmp_path / "a")["t"].task_hash != changed.task_hash


@pytest.mark.parametrize("value", ["a", "repair/x", "a.b/c_d-e/F9", "..a", "a.."])
def test_check_task_id_accepts(value: str) -> None:
    assert check_task_id(value) == value


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "empty"),
        ("/a", "starts with '/'"),
        ("a/", "empty part"),
        ("a/./b", "'.' part"),
        ("../a", "'..' part"),
        ("a b", "A-Z a-z 0-9"),
        ("a\\b", "A-Z a-z 0-9"),
    ],
)
def test_check_task_id_refuses(value: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_task_id(value)


# --- pull_request: and network: -----------------------------------------------------------


def test_pull_request_loads_with_its_defaults(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    write(root, "docs.yaml", "prompt: refresh\npull_request:\n  paths: ['docs/**']\n")
    [task] = load_tasks(root).tasks
    assert task.is_model_driven and task.is_prompt
    pull = task.spec.pull_request
    assert pull is not None
    assert (pull.paths, pull.title, pull.draft, pull.labels) == (["docs/**"], None, False, [])
    assert task.spec.network is False


def test_a_tool_task_with_pull_request_is_model_driven(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    write(root, "t.yaml", "tool: write_file\npull_request: {paths: [notes.md], draft: true}\n")
    [task] = load_tasks(root).tasks
    assert task.is_model_driven and not task.is_prompt
    [plain] = load_tasks(write(root, "p.yaml", GOOD)).tasks
    assert not plain.is_model_driven


BAD_PULL_REQUESTS = [
    ("pull_request:\n  title: x\n", 2, "pull_request.paths", ["required"]),
    ("pull_request:\n  paths: []\n", 3, "pull_request.paths", ["at least 1"]),
    ("pull_request:\n  paths: ['../x']\n", 3, "pull_request.paths", ["inside the repository"]),
    ("pull_request:\n  paths: [a]\n  branch: x\n", 4, "pull_request.branch", ["unknown key"]),
]


@pytest.mark.parametrize(("body", "line", "field", "words"), BAD_PULL_REQUESTS)
def test_bad_pull_request_names_file_line_and_key(
    tmp_path: Path, body: str, line: int, field: str, words: list[str]
) -> None:
    [problem] = load_with_good(tmp_path, "bad.yaml", "prompt: x\n" + body)
    assert_line(problem, tmp_path / "tasks" / "bad.yaml", line, field, *words)
