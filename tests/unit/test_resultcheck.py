"""Result files are input: every reader (due-ness, spend, crash recovery) takes them
through one check, and a file that fails it counts for nothing, with a warning."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner.core.clock import iso
from runner.core.errors import FileRefusedError
from runner.core.files import read_regular
from runner.core.ids import new_run_id
from runner.core.states import RunState
from runner.defs.tasks import Task, TaskSpec, task_hash
from runner.planning.dueness import Due, DueRule, History, decide, history_for
from runner.state.recovery import resume
from runner.state.resultcheck import ResultCheck
from runner.state.spend import spent_today
from runner.state.store import Store
from tests.support.cli import run_omni
from tests.support.results import result_data

NOW = datetime(2026, 11, 21, 10, 5, tzinfo=UTC)
ONCE = TaskSpec(tool="echo")
HASH = task_hash(ONCE, "once")
#: The same task id, scheduled: its latest slot at NOW is 10:00.
HOURLY_SPEC = TaskSpec(tool="echo", schedule="every 1h")
HOURLY = Task("once", Path("tasks/once.yaml"), HOURLY_SPEC, task_hash(HOURLY_SPEC, "once"))
SERVED = "2026-11-21T10:00:00.000Z"


def plant(results: Path, folder: str, **fields: object) -> Path:
    """A result file as anyone able to write the results folder could make it."""
    name = fields.pop("name", None)
    data = result_data("once", HASH) | fields
    path = results / folder / str(name or f"{data['run_id']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


FORGED = [
    ("once", {"run_id": "not-a-run-id", "name": "not-a-run-id.json"}, "run_id is not a run id"),
    ("elsewhere", {}, "its folder is not its task_id"),
    ("once", {"name": "01K00000000000000000000000.json"}, "its name is not <run_id>.json"),
    ("once", {"task_id": "../once"}, "task_id is not a valid task id"),
    ("once", {"slot": "9999-12-31T23:00:00Z"}, "slot lies in the future"),
    ("once", {"finished_at": "9999-12-31T23:00:00Z"}, "finished_at lies in the future"),
    ("once", {"started_at": "yesterday"}, "started_at is not an ISO 8601 time"),
    # Times UTC cannot hold: the year 0 and the year 10000 there.
    ("once", {"started_at": "0001-01-01T00:00:00+01:00"}, "started_at is not an ISO 8601 time"),
    ("once", {"finished_at": "9999-12-31T23:59:59-01:00"}, "finished_at is not an ISO 8601 time"),
    ("once", {"usage": {"cost_usd": float("nan")}}, "usage.cost_usd is not a number"),
    ("once", {"usage": {"cost_usd": float("inf")}}, "usage.cost_usd is not a number"),
    ("once", {"usage": {"cost_usd": -1e9}}, "usage.cost_usd is not a number"),
    ("once", {"usage": {"cost_usd": 1e9}}, "usage.cost_usd is not a number"),
    ("once", {"duration_s": -1}, "attempt or duration_s is negative"),
    ("once", {"state": "finished"}, "not a result file: state: Input should be"),
    ("once", {"attempt": "many"}, "not a result file: attempt: Input should be a valid integer"),
]


@pytest.mark.parametrize(("folder", "fields", "why"), FORGED)
def test_a_forged_completed_result_counts_for_nothing(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    folder: str,
    fields: dict[str, object],
    why: str,
) -> None:
    # Completed for the one-off's content, and serving the scheduled task's latest slot.
    path = plant(tmp_path, folder, **{"slot": SERVED} | fields)
    check = ResultCheck(NOW)
    assert check.read(path, tmp_path) is None
    [record] = caplog.records
    where = path.relative_to(tmp_path).as_posix()
    assert record.getMessage().startswith(f"result file {where} skipped: {why}")
    rule = DueRule(now=NOW, results=tmp_path)
    for task in (Task("once", Path("tasks/once.yaml"), ONCE, HASH), HOURLY):
        # Neither the one-off is suppressed nor the scheduled task's slot taken as served.
        decision = decide(task, history_for(task, History(), rule), rule)
        assert decision.verdict is Due.RUN, task.spec.schedule


def test_an_unforged_result_file_counts(tmp_path: Path) -> None:
    plant(tmp_path, "once", slot=SERVED)  # the forged tests' file, as a runner writes it
    rule = DueRule(now=NOW, results=tmp_path)
    once = Task("once", Path("tasks/once.yaml"), ONCE, HASH)
    assert decide(once, history_for(once, History(), rule), rule).verdict is Due.DONE
    assert decide(HOURLY, history_for(HOURLY, History(), rule), rule).verdict is Due.SERVED


def test_a_slot_before_1970_does_not_hide_the_slot_served(tmp_path: Path) -> None:
    plant(tmp_path, "once", slot=SERVED)  # the runner's own result of the latest slot
    # A newer file (by its name) serving a slot before 1970: its run-id prefix must not
    # wrap above every run id, or the files older than it go unread.
    plant(tmp_path, "once", run_id=new_run_id(NOW), slot="1969-12-31T23:00:00Z")
    rule = DueRule(now=NOW, results=tmp_path)
    assert decide(HOURLY, history_for(HOURLY, History(), rule), rule).verdict is Due.SERVED


def test_times_utc_cannot_hold_are_a_warning_for_every_command(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "once.yaml").write_text("tool: echo\nargs: {text: hi}\n")
    results = tmp_path / "results"
    for run_id, field in ((new_run_id(NOW), "started_at"), (new_run_id(NOW), "finished_at")):
        moment = (
            "0001-01-01T00:00:00+01:00" if field == "started_at" else "9999-12-31T23:59:59-01:00"
        )
        plant(results, "once", run_id=run_id, **{field: moment})
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMNI_NOW": iso(NOW)}
    # prune keeps (unread) the runs created since the start of yesterday: it looks later.
    days_later = env | {"OMNI_NOW": iso(NOW + timedelta(days=3))}
    for args in (("status",), ("prune", "--keep", "1", "--dry-run"), ("run", "--once")):
        done = run_omni(tmp_path, *args, env=days_later if args[0] == "prune" else env)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert "started_at is not an ISO 8601 time" in done.stderr, args
    assert "1 completed, 0 failed" in done.stdout  # the task ran: the files count for nothing


def test_costs_that_are_not_sane_are_not_spent(tmp_path: Path) -> None:
    for cost in (float("nan"), float("inf"), -1e9, 1e9, 0.5):
        plant(tmp_path, "once", usage={"cost_usd": cost}, finished_at=iso(NOW))
    # A little clock skew is allowed: another machine's clock four minutes ahead.
    plant(tmp_path, "once", usage={"cost_usd": 0.25}, finished_at="2026-11-21T10:09:00.000Z")
    assert spent_today(None, tmp_path, NOW, 1_000_000) == 0.75


def test_files_that_are_not_regular_or_too_large_are_refused_without_hanging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "once"
    big = plant(tmp_path, "once", output="x" * 70_000)
    fifo = folder / f"{new_run_id(NOW)}.json"
    os.mkfifo(fifo)
    link = folder / f"{new_run_id(NOW)}.json"
    link.symlink_to(plant(tmp_path, "elsewhere/real", task_id="elsewhere/real"))
    check = ResultCheck(NOW, max_bytes=65_536)
    done: list[list[object]] = []
    reader = threading.Thread(target=lambda: done.append(list(check.scan(folder, tmp_path))))
    reader.start()
    reader.join(timeout=30)
    assert done == [[]]
    reasons = sorted(r.getMessage().split(" skipped: ")[1] for r in caplog.records)
    assert reasons == [
        "a symbolic link; it is not followed",
        f"file is {big.stat().st_size:,} bytes, over the 65,536-byte cap",
        "not a regular file (a FIFO); only files are read",
    ]


def test_resume_does_not_trust_a_result_file_of_other_content(tmp_path: Path) -> None:
    results = tmp_path / "results"
    with Store(tmp_path / "state.db", clock=lambda: NOW) as store:
        run = store.create_run("once", HASH, max_attempts=1)
        store.claim(run.run_id, executor="builtin", tool="echo")
        # A file at the run's own path, but not for its content (or with a bad cost).
        plant(results, "once", run_id=run.run_id, task_hash="other-content")
        report = resume(store, results, ResultCheck(NOW))
        assert report.to_completed == []
        assert report.to_failed == [run.run_id]
        again = store.create_run("once", HASH, max_attempts=1)
        store.claim(again.run_id, executor="builtin", tool="echo")
        plant(results, "once", run_id=again.run_id, usage={"cost_usd": -1e9})
        report = resume(store, results, ResultCheck(NOW))
        assert report.to_completed == []
        assert store.spend_since(iso(NOW.replace(hour=0))) == 0.0
        assert store.get_run(again.run_id).state is RunState.FAILED  # type: ignore[union-attr]


def test_read_regular_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_bytes(b"12345")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    cases = {
        tmp_path / "fifo": "not a regular file (a FIFO)",
        Path("/dev/zero"): "not a regular file (a character device)",
        tmp_path: "not a regular file (a folder)",
    }
    for path, why in cases.items():
        with pytest.raises(FileRefusedError, match=why.replace("(", r"\(").replace(")", r"\)")):
            read_regular(path, 1000)
    assert read_regular(tmp_path / "link", 5) == b"12345"
    with pytest.raises(FileRefusedError, match="a symbolic link"):
        read_regular(tmp_path / "link", 5, follow_symlinks=False)
    with pytest.raises(FileRefusedError, match="file is 5 bytes, over the 4-byte cap"):
        read_regular(tmp_path / "file", 4)


def test_a_json_file_not_named_by_a_run_id_is_refused_by_its_name_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A completed result of the current content, but under another name, and too large
    # to read: the name alone refuses it (reading it would have said "over the cap").
    plant(tmp_path, "once", name="notes.json", output="x" * 70_000)
    check = ResultCheck(NOW, max_bytes=65_536)
    task = Task("once", Path("tasks/once.yaml"), ONCE, HASH)
    rule = DueRule(now=NOW, results=tmp_path, result_bytes=65_536)
    assert decide(task, history_for(task, History(), rule), rule).verdict is Due.RUN
    assert list(check.scan(tmp_path / "once", tmp_path)) == []
    assert [r.getMessage() for r in caplog.records] == [
        "result file once/notes.json skipped: its name is not <run_id>.json"
    ] * 2


def test_status_takes_a_known_runs_spend_from_its_row_and_reads_only_the_other_files(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    with Store(tmp_path / ".omni" / "state.db", clock=lambda: NOW) as store:
        run = store.create_run("once", HASH, max_attempts=1)
        store.claim(run.run_id, executor="builtin", tool="echo")
        store.transition(run.run_id, RunState.COMPLETED, cost_usd=0.25)
    # The known run's file, rewritten with a plausible cost: the row is what counts.
    plant(results, "once", run_id=run.run_id, finished_at=iso(NOW), usage={"cost_usd": 900})
    # A run the state file never saw (from the results branch, say): its file counts.
    plant(
        results,
        "elsewhere",
        task_id="elsewhere",
        run_id=new_run_id(NOW),
        finished_at=iso(NOW),
        usage={"cost_usd": 0.5},
    )
    yesterday = NOW - timedelta(days=1)
    plant(
        results,
        "elsewhere",
        task_id="elsewhere",
        run_id=new_run_id(yesterday),
        started_at=iso(yesterday),
        finished_at=iso(yesterday),
        usage={"cost_usd": 0.125},
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMNI_NOW": iso(NOW)}
    done = run_omni(tmp_path, "status", env=env)
    assert done.returncode == 0, done.stderr
    assert "spend today: $0.7500 (no daily cap); no per-run cap" in done.stdout.splitlines()
    shown = run_omni(tmp_path, "status", "--json", "--state-file", "none.db", env=env)
    assert json.loads(shown.stdout)["spend_today_usd"] == 900.5  # no state file: files alone
