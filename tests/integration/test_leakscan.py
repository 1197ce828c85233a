"""The session-wide leak scan can fail: a crafted tree with a leak in each kind of place
it covers (result files, Markdown, text and binary patches, a state database's raw bytes
and cells, both log formats, saved CLI output, a repair task, the ``gh`` stub's record,
git objects, reflogs and bare remotes), in each encoding, is found place by place, and
the report never shows the secret; a planted input is left out, its committed copy too.
And the plugin fails a pytest session that leaves a planted secret behind, however
few of its tests were selected."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from runner.core.redaction import encoded_forms
from tests.support.git import git
from tests.support.leakscan import PLANTED_INPUTS, Planted, scan
from tests.support.planted import SECRET

pytestmark = pytest.mark.integration

#: Not a planted secret: the session's own scan does not look for it in this tree.
CRAFTED = "sk-crafted-leak-5e8a1f3c9b7d2046"
SECRETS = {"CRAFTED": CRAFTED}


def write(root: Path, rel: str, data: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def binary_patch(root: Path) -> bytes:
    """A ``git diff --binary`` patch adding a binary file that holds the secret."""
    repo = root / "patch-src"
    git(root, "init", "-q", "-b", "main", str(repo))
    write(repo, "logo.png", b"\x89PNG\r\n\x1a\n\0\0" + CRAFTED.encode() + bytes(range(256)))
    git(repo, "add", "logo.png")
    patch = subprocess.run(
        ["git", "diff", "--cached", "--binary", "--full-index"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    shutil.rmtree(repo)
    assert b"GIT binary patch" in patch and CRAFTED.encode() not in patch
    return patch


def database(path: Path) -> None:
    """A state database whose ``runs.error`` holds the secret in a long cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (run_id TEXT, error TEXT)")
        long = "x" * 5000 + CRAFTED + "y" * 5000
        db.execute("INSERT INTO runs VALUES (?, ?)", ("01A", long))
    db.close()


def repositories(root: Path) -> None:
    """A project repository whose history leaks (a commit message, a dangling blob) and
    that commits its planted config on purpose; a bare remote it pushed a leak to."""
    repo, remote = root / "proj", root / "remote.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(remote))
    write(repo, "config.yaml", f"lite_llm_key: {CRAFTED}\n")
    git(root, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", "config.yaml")
    git(repo, "commit", "-q", "-m", "the test's own config")
    write(repo, "leak.txt", f"token={CRAFTED}\n")
    git(repo, "hash-object", "-w", "leak.txt")  # an object no commit reaches
    (repo / "leak.txt").unlink()
    write(repo, "notes.md", base64.b64encode(b"k=" + CRAFTED.encode()).decode())
    git(repo, "add", "notes.md")
    git(repo, "commit", "-q", "-m", "notes")
    hexed = CRAFTED.encode().hex()
    git(repo, "commit", "-q", "--allow-empty", "-m", f"omni: results ({hexed})")
    git(repo, "push", "-q", str(remote), "main")


def crafted_tree(root: Path) -> None:
    split_json = json.dumps({"message": f"{CRAFTED[:12]}\n{CRAFTED[12:]}"})
    write(root, "proj/results/t/01A.json", json.dumps({"output": CRAFTED}))
    write(root, "proj/results/t/01A.md", base64.b64encode(b"0" + CRAFTED.encode()).decode())
    write(root, "proj/results/t/01A.patch", f"+{CRAFTED.encode().hex().upper()}\n")
    write(root, "proj/results/t/01B.patch", binary_patch(root))
    write(root, "proj/results/t/01C.json", "{}")  # clean
    database(root / "proj/.omni/state.db")
    write(root, "proj/service.log", split_json + "\n")
    write(root, "proj/run.log", f"fetched https://h/?k={quote(CRAFTED, safe='')}\n")
    write(root, "proj/saved-output/status.out", base64.urlsafe_b64encode(CRAFTED.encode()))
    write(root, "proj/tasks/repair/gateway-1.yaml", f"prompt: the key {CRAFTED}\n")
    write(root, "proj/tasks/mine.yaml", f"prompt: use {CRAFTED}\n")  # not planted: a leak
    write(root, "gh-texts.json", json.dumps([{"title": "t", "body": CRAFTED}]))
    repositories(root)


def test_a_leak_in_each_kind_of_place_is_found_and_never_shown(tmp_path: Path) -> None:
    crafted_tree(tmp_path / "test_leaky0")  # as pytest names the folder of test_leaky
    planted = [Planted("test_leaky", "proj/config.yaml", "the test's own config, committed")]
    found = scan(tmp_path, SECRETS, planted)
    where = {(h.kind, h.where.split(": ")[0].removeprefix("test_leaky0/")) for h in found.hits}
    assert where == {
        ("result file", "proj/results/t/01A.json"),
        ("Markdown", "proj/results/t/01A.md"),
        ("patch", "proj/results/t/01A.patch"),
        ("patch (a binary hunk, inflated)", "proj/results/t/01B.patch"),
        ("SQLite database", "proj/.omni/state.db"),
        ("SQLite cell", "proj/.omni/state.db"),
        ("log", "proj/service.log"),
        ("log", "proj/run.log"),
        ("saved CLI output", "proj/saved-output/status.out"),
        ("repair task", "proj/tasks/repair/gateway-1.yaml"),
        ("other file", "proj/tasks/mine.yaml"),
        ("Markdown", "proj/notes.md"),
        ("gh stub record (PR titles, bodies)", "gh-texts.json"),
        ("git metadata", "proj/.git/COMMIT_EDITMSG"),
        ("git reflog", "proj/.git/logs/HEAD"),
        ("git reflog", "proj/.git/logs/refs/heads/main"),
        ("git commit", "proj/.git"),
        ("git blob", "proj/.git"),
    }
    # Each object once: the remote's copies of the project's objects are not counted
    # again; the dangling blob and the pushed notes are both found.
    blobs = [h for h in found.hits if h.kind == "git blob"]
    assert len(blobs) == 2
    assert [h.found for h in found.hits if h.kind == "git commit"] == ["CRAFTED (hex)"]
    assert found.skipped == ["test_leaky0/proj/config.yaml"]
    assert found.repositories == 2 and found.databases == 1
    cell = next(h for h in found.hits if h.kind == "SQLite cell")
    assert cell.where == "test_leaky0/proj/.omni/state.db: table runs, column error"
    report = "\n".join(map(str, found.hits)) + found.summary()
    for form in encoded_forms(CRAFTED):
        assert form not in report
    assert "CRAFTED (plain)" in report and "CRAFTED (base64)" in report


def test_the_bare_remote_alone_is_scanned(tmp_path: Path) -> None:
    repositories(tmp_path)
    shutil.rmtree(tmp_path / "proj")
    found = scan(tmp_path, SECRETS)
    assert {(h.kind, h.where.split(": ")[0]) for h in found.hits} == {
        ("git commit", "remote.git"),
        ("git blob", "remote.git"),
    }


def test_a_clean_tree_has_no_hit(tmp_path: Path) -> None:
    write(tmp_path, "proj/results/t/01A.json", json.dumps({"output": "[redacted]"}))
    database(tmp_path / "proj/.omni/state.db")
    found = scan(tmp_path, {"OTHER": "sk-another-value-0123456789"})
    assert found.hits == []
    assert found.files == 2


#: The inner session: the leak-scan plugin (and the asyncio plugin's setting, as ours).
PLUGIN = ("-p", "tests.support.leakcheck", "-o", "asyncio_default_fixture_loop_scope=function")
INNER = """
from tests.support.planted import SECRET

def test_leaks(tmp_path):
    (tmp_path / "results" / "t").mkdir(parents=True)
    (tmp_path / "results" / "t" / "01A.json").write_text('{"output": "%s"}' % SECRET)

def test_clean(tmp_path):
    (tmp_path / "results").mkdir()
"""


@pytest.mark.parametrize("selected", ["test_leaks", "test_leaks or test_clean"])
def test_the_plugin_fails_a_session_that_leaves_a_secret(
    pytester: pytest.Pytester, selected: str
) -> None:
    pytester.makepyfile(test_inner=INNER)
    try:
        done = pytester.runpytest(*PLUGIN, "-k", selected)
        out = done.stdout.str()
    finally:
        shutil.rmtree(pytester.path / "basetemp", ignore_errors=True)
    assert done.ret == pytest.ExitCode.TESTS_FAILED
    done.assert_outcomes(passed=len(selected.split(" or ")))
    assert "planted secrets found after the session" in out
    assert "  result file: test_leaks0/results/t/01A.json: SECRET (plain)" in out
    assert "virtual environments left out" in out and ": 1 hits" in out
    for form in encoded_forms(SECRET):
        assert form not in out


def test_the_plugin_passes_a_clean_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    done = pytester.runpytest(*PLUGIN, "-k", "test_clean")
    assert done.ret == pytest.ExitCode.OK
    assert ": 0 hits" in done.stdout.str()


def test_a_planted_input_is_left_out_only_in_its_own_tests_folders() -> None:
    planted = Planted("test_leaky", "proj/config.yaml", "why")
    assert planted.covers("test_leaky0/proj/config.yaml")
    assert planted.covers("test_leaky12/proj/config.yaml")
    assert not planted.covers("test_leaky_too0/proj/config.yaml")
    assert not planted.covers("test_leaky0/proj/results/config.yaml")
    assert not planted.covers("test_leaky0/other/proj/config.yaml")
    long = Planted("test_a_hostile_model_stays_in_its_workspace", "home/x", "why")
    assert long.covers("test_a_hostile_model_stays_in_3/home/x")  # cut at 30 characters


def test_every_planted_input_names_a_test_that_exists() -> None:
    sources = "".join(p.read_text() for p in Path(__file__).parents[1].rglob("test_*.py"))
    missing = {p.test for p in PLANTED_INPUTS if f"def {p.test}(" not in sources}
    assert missing == set()


def test_a_virtual_environment_is_not_read(tmp_path: Path) -> None:
    write(tmp_path, "job/temp/omni-venv/pyvenv.cfg", "home = /usr/bin\n")
    write(tmp_path, "job/temp/omni-venv/lib/site.py", f"# {CRAFTED}\n")
    write(tmp_path, "job/temp/summary.md", f"# {CRAFTED}\n")
    found = scan(tmp_path, SECRETS)
    assert [h.where for h in found.hits] == ["job/temp/summary.md"]
    assert found.environments == 1
