"""Result files: ids, atomic writes, truncation, redaction, the reviewer's Markdown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from runner.core.files import atomic_write
from runner.core.ids import new_run_id
from runner.core.redaction import Redactor
from runner.core.states import RunState
from runner.core.text import truncate
from runner.state.resultcheck import ResultCheck
from runner.state.results import RunResult, result_path, write_result
from tests.support.planted import SECRET

if TYPE_CHECKING:
    from pathlib import Path

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def make(**fields: object) -> RunResult:
    base = {
        "task_id": "repair/gateway",
        "run_id": new_run_id(T0),
        "task_hash": "abc",
        "state": RunState.COMPLETED,
        "attempt": 1,
        "executor": "builtin",
        "tool": "echo",
        "started_at": "2026-11-21T12:00:00.000Z",
        "finished_at": "2026-11-21T12:00:01.000Z",
        "duration_s": 1.0,
        "output": "hello",
    }
    return RunResult.model_validate({**base, **fields})


def test_run_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_run_id(T0 + timedelta(milliseconds=i)) for i in range(200)]
    assert ids == sorted(ids)
    assert len({new_run_id(T0) for _ in range(10_000)}) == 10_000
    assert all(len(i) == 26 for i in ids)


def test_nested_ids_nest_folders_and_json_has_the_contract_fields(tmp_path: Path) -> None:
    result = make()
    path = write_result(tmp_path, result, Redactor([]))
    assert path == tmp_path / "repair" / "gateway" / f"{result.run_id}.json"
    assert path == result_path(tmp_path, "repair/gateway", result.run_id)
    data = json.loads(path.read_text(encoding="utf-8"))
    contract = (
        "task_id run_id task_hash slot state attempt executor tool model tier mode "
        "started_at finished_at duration_s output error usage"
    )
    assert set(contract.split()) <= set(data)
    assert data["state"] == "completed"
    assert data["mode"] == "normal"
    md = path.with_suffix(".md").read_text(encoding="utf-8")
    assert "repair/gateway" in md
    assert "completed" in md
    assert "hello" in md
    assert ResultCheck(T0).read(path, tmp_path) == result
    assert not list(tmp_path.rglob("*.tmp"))


def test_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    result = make(output={"note": f"key={SECRET}", SECRET: [SECRET]}, error=f"bad {SECRET}")
    path = write_result(tmp_path, result, Redactor([SECRET, "abc"]))
    for written in (path, path.with_suffix(".md")):
        text = written.read_text(encoding="utf-8")
        assert SECRET not in text
        assert "[redacted]" in text


@pytest.mark.parametrize(
    "secret", ['pa"ss\\word', "tab\tand\nnewline", "pässwörd-ünïcode", "plain-token-123"]
)
def test_secrets_that_json_escapes_are_redacted_too(tmp_path: Path, secret: str) -> None:
    result = make(output={"text": f"<{secret}>", "list": [secret]}, error=f"bad {secret}")
    path = write_result(tmp_path, result, Redactor([secret]))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["output"] == {"text": "<[redacted]>", "list": ["[redacted]"]}
    assert data["error"] == "bad [redacted]"
    assert secret not in path.with_suffix(".md").read_text(encoding="utf-8")


def test_a_result_without_secrets_is_written_unchanged(tmp_path: Path) -> None:
    result = make(output={"text": "nothing to hide", "n": 0.00001})
    path = write_result(tmp_path, result, Redactor(["sk-not-in-there"]))
    assert ResultCheck(T0).read(path, tmp_path) == result
    assert path.read_text(encoding="utf-8").endswith("}\n")


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    blocked = tmp_path / "x.json"
    blocked.mkdir()  # the rename onto it fails after the temp file was written
    with pytest.raises(OSError):
        atomic_write(blocked, "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_truncation_keeps_a_prefix_and_says_so() -> None:
    text = "é" * 10_000
    cut = truncate(text, 1024)
    assert cut.startswith("é" * 500)
    assert "output truncated: 20,000 bytes, kept the first 1,024" in cut
    assert truncate("short", 1024) == "short"


def test_unreadable_result_reads_as_none_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "t" / "x.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    assert ResultCheck(T0).read(bad, tmp_path) is None
    assert ResultCheck(T0).read(tmp_path / "missing.json", tmp_path) is None
    assert [r.getMessage() for r in caplog.records] == [
        "result file t/x.json skipped: not a result file: (file): Invalid JSON: key must be a"
        " string at line 1 column 2"
    ]


def test_a_result_that_cannot_be_written_leaves_neither_file(tmp_path: Path) -> None:
    result = make()
    folder = tmp_path / "repair" / "gateway"
    (folder / f"{result.run_id}.json").mkdir(parents=True)  # the .json cannot land
    with pytest.raises(OSError):
        write_result(tmp_path, result, Redactor([]))
    assert sorted(p.name for p in folder.iterdir()) == [f"{result.run_id}.json"]
