"""The state store, on both backends (a real SQLite file; a real PostgreSQL database):
claims, transitions, resume, modes. The backend-specific parts (the SQLite file, the
PostgreSQL schema) are tested apart at the end."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from runner.core.clock import iso
from runner.core.errors import IllegalTransitionError, StaleRunError, StoreError
from runner.core.ids import time_prefix
from runner.core.redaction import Redactor
from runner.core.states import Mode, RunState
from runner.defs.tasks import Task, TaskSpec
from runner.state.postgres import PostgresStore
from runner.state.records import NewRun, TaskRuns
from runner.state.recovery import resume
from runner.state.resultcheck import ResultCheck
from runner.state.results import RunResult, result_path, write_result
from runner.state.store import Store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from runner.state.interface import StateStore
    from runner.state.records import RunRecord

    Opener = Callable[..., StateStore]

S = RunState
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / ".omni" / "state.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, db_path: Path) -> Opener:
    """Opens another store on the test's one database (a file, or a PostgreSQL database)."""
    if request.param == "sqlite":
        return lambda **kw: Store(db_path, **kw)
    url = request.getfixturevalue("pg_url")
    # A store that may write joins the fleet, as a runner does; a looking one cannot.
    return lambda **kw: PostgresStore(url, **(kw if "read_only" in kw else {"role": "test"} | kw))


@pytest.fixture
def store(opener: Opener, clock: FakeClock) -> Iterator[StateStore]:
    with opener(clock=clock) as opened:
        yield opened


def run_to(store: StateStore, state: RunState, *, max_attempts: int = 3, **kw: str) -> RunRecord:
    """A new run of task ``t`` driven along legal moves into ``state``."""
    run = store.create_run("t", "h1", max_attempts=max_attempts, **kw)
    if state is S.IDLE:
        return run
    assert store.claim(run.run_id) is not None
    path = {
        S.DISPATCHING: [],
        S.EXECUTING: [S.EXECUTING],
        S.WAITING: [S.WAITING],
        S.COMPLETED: [S.EXECUTING, S.COMPLETED],
        S.FAILED: [S.EXECUTING, S.FAILED],
    }[state]
    for step in path:
        run = store.transition(run.run_id, step)
    return store.get_run(run.run_id) or run


def write_result_file(results: Path, run: RunRecord, state: str = "completed") -> Path:
    result = RunResult(
        task_id=run.task_id,
        run_id=run.run_id,
        task_hash=run.task_hash,
        state=state,
        attempt=run.attempt,
        started_at=iso(T0),
        finished_at=iso(T0),
        duration_s=0.1,
        output="done",
        error="boom" if state == "failed" else None,
    )
    return write_result(results, result, Redactor([]))


def transitions(store: StateStore, run_id: str) -> list[tuple[str | None, str]]:
    return [(e["from_state"], e["to_state"]) for e in store.events(run_id)]


# -- round trip -----------------------------------------------------------------------


def test_create_claim_transition_round_trip_records_events(
    store: StateStore, clock: FakeClock
) -> None:
    run = store.create_run("nightly", "h1", max_attempts=2, slot="2026-03-01T03:00:00Z")
    assert (run.state, run.attempt, run.max_attempts, run.slot) == (
        "idle",
        0,
        2,
        "2026-03-01T03:00:00Z",
    )
    assert run.created_at == "2026-03-01T12:00:00.000Z"
    assert run.started_at is None
    assert run.finished_at is None

    clock.advance(1)
    claimed = store.claim(run.run_id)
    assert claimed is not None
    assert (claimed.state, claimed.attempt) == ("dispatching", 1)
    assert claimed.started_at == "2026-03-01T12:00:01.000Z"

    clock.advance(1)
    executing = store.transition(
        run.run_id,
        S.EXECUTING,
        detail="routed",
        executor="builtin",
        tool="echo",
        mode=Mode.NORMAL,
    )
    assert (executing.executor, executing.tool, executing.mode) == ("builtin", "echo", "normal")
    assert executing.finished_at is None

    clock.advance(1)
    done = store.transition(
        run.run_id, S.COMPLETED, result_path=Path("results/nightly/x.json"), cost_usd=0.25
    )
    assert done.state == "completed"
    assert done.finished_at == "2026-03-01T12:00:03.000Z"
    assert done.result_path == str(Path("results/nightly/x.json"))
    assert store.get_run(run.run_id) == done

    events = store.events(run.run_id)
    assert [(e["from_state"], e["to_state"]) for e in events] == [
        (None, "idle"),
        ("idle", "dispatching"),
        ("dispatching", "executing"),
        ("executing", "completed"),
    ]
    assert events[0]["detail"] == "created"
    assert events[2]["detail"] == "routed"
    assert events[3]["at"] == "2026-03-01T12:00:03.000Z"
    assert store.counts_by_state() == {state: int(state is S.COMPLETED) for state in RunState}


def test_default_run_ids_are_unique_and_runs_list_in_creation_order(store: StateStore) -> None:
    ids = [store.create_run("t", "h", max_attempts=1).run_id for _ in range(5)]
    assert len(set(ids)) == 5
    assert [r.run_id for r in store.runs()] == ids[::-1]
    assert [r.run_id for r in store.runs(newest_first=False, limit=2)] == ids[:2]
    assert store.runs(task_id="other") == []
    assert len(store.runs(state=S.IDLE)) == 5


def test_duplicate_run_id_is_refused(store: StateStore) -> None:
    store.create_run("t", "h", max_attempts=1, run_id="R1")
    with pytest.raises(StoreError, match="run R1 already exists"):
        store.create_run("t", "h", max_attempts=1, run_id="R1")


# -- claims ---------------------------------------------------------------------------


def test_claim_refuses_runs_that_are_taken_done_or_unknown(store: StateStore) -> None:
    taken = run_to(store, S.DISPATCHING)
    done = run_to(store, S.COMPLETED)
    assert store.claim(taken.run_id) is None
    assert store.claim(done.run_id) is None
    assert store.claim("no-such-run") is None
    assert store.get_run(taken.run_id).attempt == 1  # type: ignore[union-attr]


def test_claim_is_atomic_across_two_stores_on_one_database(opener: Opener) -> None:
    with opener() as first, opener() as second:
        run = first.create_run("t", "h", max_attempts=3)
        assert first.claim(run.run_id) is not None
        assert second.claim(run.run_id) is None
        assert second.get_run(run.run_id).state == "dispatching"  # type: ignore[union-attr]


@pytest.mark.parametrize("shared", [False, True], ids=["store-per-thread", "one-shared-store"])
def test_of_many_concurrent_claims_exactly_one_wins(opener: Opener, shared: bool) -> None:
    workers = 8
    with opener() as setup:
        run_id = setup.create_run("t", "h", max_attempts=3).run_id
    stores = [opener()] * workers if shared else [opener() for _ in range(workers)]
    start = threading.Barrier(workers)

    def claim(store: StateStore) -> RunRecord | None:
        start.wait()
        return store.claim(run_id)

    try:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(claim, stores))
    finally:
        for store in set(stores):
            store.close()

    assert sum(r is not None for r in results) == 1
    with opener() as check:
        run = check.get_run(run_id)
        assert run is not None
        assert (run.state, run.attempt) == ("dispatching", 1)
        assert transitions(check, run_id) == [(None, "idle"), ("idle", "dispatching")]


def test_claim_with_an_executor_goes_on_to_executing_in_one_transaction(
    opener: Opener, clock: FakeClock
) -> None:
    changes: list[tuple[str | None, str, str]] = []
    with opener(
        clock=clock, on_transition=lambda c: changes.append((c.old, c.new, c.detail))
    ) as store:
        run = store.create_run("t", "h", max_attempts=2)
        clock.advance(1)
        claimed = store.claim(run.run_id, executor="builtin", tool="echo", detail="routed")
    assert claimed is not None
    assert (claimed.state, claimed.attempt, claimed.executor, claimed.tool) == (
        "executing",
        1,
        "builtin",
        "echo",
    )
    assert claimed.started_at == "2026-03-01T12:00:01.000Z"
    with opener() as check:
        assert check.get_run(run.run_id) == claimed
        events = check.events(run.run_id)
    assert [(e["from_state"], e["to_state"], e["detail"]) for e in events] == [
        (None, "idle", "created"),
        ("idle", "dispatching", "claimed, attempt 1"),
        ("dispatching", "executing", "routed"),
    ]
    assert changes == [
        (None, "idle", "created"),
        ("idle", "dispatching", "claimed, attempt 1"),
        ("dispatching", "executing", "routed"),
    ]


def test_a_move_from_a_stale_record_is_refused_and_changes_nothing(opener: Opener) -> None:
    with opener() as ours, opener() as theirs:
        run = ours.create_run("t", "h", max_attempts=1)
        held = ours.claim(run.run_id, executor="builtin", tool="echo")
        assert held is not None
        moved = theirs.transition(run.run_id, S.FAILED, error="settled elsewhere")
        with pytest.raises(StaleRunError, match=r"is failed \(attempt 1\), not executing"):
            ours.transition(held, S.COMPLETED, result_path="x.json")
        assert ours.get_run(run.run_id) == moved
        assert transitions(ours, run.run_id)[-1] == ("executing", "failed")
        ours.delete_runs([run.run_id])
        with pytest.raises(StoreError, match=f"no run {run.run_id}"):
            ours.transition(held, S.COMPLETED)


def test_a_claim_from_a_stale_record_claims_nothing(store: StateStore) -> None:
    run = store.create_run("t", "h", max_attempts=3)
    first = store.claim(run)
    assert first is not None
    assert store.claim(run) is None  # the record still says idle; the row does not
    store.transition(first, S.FAILED, error="boom")
    retried = store.transition(run.run_id, S.IDLE, detail="retry")
    # Idle again, as the old record says, but one attempt on: still not the row it read.
    assert (run.state, run.attempt, retried.state, retried.attempt) == ("idle", 0, "idle", 1)
    assert store.claim(run) is None
    assert store.get_run(run.run_id) == retried
    second = store.claim(retried, executor="builtin", tool="echo")
    assert second is not None
    assert (second.state, second.attempt) == ("executing", 2)


# -- attempts and retries -------------------------------------------------------------


def test_attempts_count_claims_from_idle_but_not_from_waiting(store: StateStore) -> None:
    run = run_to(store, S.FAILED, max_attempts=3)
    assert run.attempt == 1
    store.transition(run.run_id, S.IDLE, detail="retry")
    second = store.claim(run.run_id)
    assert second is not None
    assert second.attempt == 2

    store.transition(run.run_id, S.WAITING, detail="brainstem")
    resumed = store.claim(run.run_id)
    assert resumed is not None
    assert (resumed.state, resumed.attempt) == ("dispatching", 2)


def test_failed_run_retries_only_while_attempts_are_left(store: StateStore) -> None:
    run = run_to(store, S.FAILED, max_attempts=2)
    store.transition(run.run_id, S.IDLE)
    store.claim(run.run_id)
    store.transition(run.run_id, S.EXECUTING)
    spent = store.transition(run.run_id, S.FAILED, error="still broken")
    assert (spent.attempt, spent.max_attempts) == (2, 2)

    with pytest.raises(IllegalTransitionError, match=r"no attempts left \(2 of 2\)"):
        store.transition(run.run_id, S.IDLE)
    assert store.get_run(run.run_id) == spent


def test_illegal_transition_raises_and_leaves_the_row_and_events_unchanged(
    store: StateStore, clock: FakeClock
) -> None:
    run = store.create_run("t", "h", max_attempts=3)
    clock.advance(5)
    with pytest.raises(IllegalTransitionError, match="from idle to completed"):
        store.transition(run.run_id, S.COMPLETED, note="should not stick")
    assert store.get_run(run.run_id) == run
    assert transitions(store, run.run_id) == [(None, "idle")]


def test_transition_rejects_unknown_fields_and_unknown_runs(store: StateStore) -> None:
    run = store.create_run("t", "h", max_attempts=1)
    store.claim(run.run_id)
    with pytest.raises(TypeError, match="attempt"):
        store.transition(run.run_id, S.EXECUTING, attempt=7)
    with pytest.raises(TypeError, match="colour"):
        store.transition(run.run_id, S.EXECUTING, colour="red")
    with pytest.raises(ValueError, match="sideways"):
        store.transition(run.run_id, S.EXECUTING, mode="sideways")
    assert store.get_run(run.run_id).state == "dispatching"  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="no run nope"):
        store.transition("nope", S.EXECUTING)


# -- open runs and completion ---------------------------------------------------------


def test_open_run_and_has_completed(store: StateStore) -> None:
    assert store.open_run("t", "h1") is None
    retryable = run_to(store, S.FAILED, max_attempts=2)
    assert store.open_run("t", "h1") == retryable
    assert not store.has_completed("t", "h1")

    spent = run_to(store, S.FAILED, max_attempts=1)
    assert store.open_run("t", "h1") == retryable  # spent runs are not open
    assert spent.run_id != retryable.run_id

    waiting = run_to(store, S.WAITING, slot="03:00")
    assert store.open_run("t", "h1") == waiting
    assert store.open_run("t", "h1", slot="04:00") is None
    assert store.open_run("t", "other-hash") is None

    run_to(store, S.COMPLETED, slot="05:00")
    assert store.has_completed("t", "h1")
    assert store.has_completed("t", "h1", slot="05:00")
    assert not store.has_completed("t", "h1", slot="03:00")
    assert not store.has_completed("t", "h2")


def test_create_runs_gives_what_create_run_gives_each_in_order(store: StateStore) -> None:
    held = store.create_run("t", "h1", max_attempts=2, slot="03:00", unique=True)
    once = store.create_run("u", "h5", max_attempts=1, unique=True)
    created = store.create_runs(
        [
            NewRun("t", "h1", 2, "04:00", unique=True),
            NewRun("t", "h2", 2, "03:00", unique=True),  # the slot's run is h1's
            NewRun("u", "h5", 1, unique=True),  # this content's run exists
            NewRun("u", "h5", 1),  # not unique (a forced run): a new one
            NewRun("v", "h7", 3),
        ]
    )
    assert [r.run_id for r in created[1:3]] == [held.run_id, once.run_id]
    new = [created[0], created[3], created[4]]
    assert [(r.task_id, r.task_hash, r.slot, r.state, r.attempt, r.max_attempts) for r in new] == [
        ("t", "h1", "04:00", "idle", 0, 2),
        ("u", "h5", None, "idle", 0, 1),
        ("v", "h7", None, "idle", 0, 3),
    ]
    seqs = [r.seq for r in new]
    assert seqs == sorted(seqs) and seqs[0] > once.seq  # after every earlier run, in order
    assert all(store.get_run(r.run_id) == r for r in new)
    assert transitions(store, new[2].run_id) == [(None, "idle")]
    assert store.create_runs([]) == []
    # One key twice in one pass: the first creates the run, the second is given it.
    twice = store.create_runs([NewRun("w", "h1", 1, "05:00", unique=True)] * 2)
    assert twice[0] == twice[1] and store.runs(task_id="w") == [twice[0]]


# -- resume after a crash -------------------------------------------------------------


def test_resume_settles_runs_a_dead_process_left_in_flight(
    opener: Opener, tmp_path: Path, clock: FakeClock
) -> None:
    results = tmp_path / "results"
    with opener(clock=clock) as dead:
        retry = run_to(dead, S.EXECUTING, max_attempts=3)
        retry_early = run_to(dead, S.DISPATCHING, max_attempts=3)
        spent = run_to(dead, S.EXECUTING, max_attempts=1)
        finished = run_to(dead, S.EXECUTING, max_attempts=1)
        finished_early = run_to(dead, S.DISPATCHING)
        idle = run_to(dead, S.IDLE)
        write_result_file(results, finished)
        write_result_file(results, finished_early)

    with opener(clock=clock) as store:
        report = resume(store, results, ResultCheck(T0))
        assert report.to_idle == [retry.run_id, retry_early.run_id]
        assert report.to_failed == [spent.run_id]
        assert report.to_completed == [finished.run_id, finished_early.run_id]
        assert report.waiting == []

        assert store.get_run(idle.run_id) == idle
        assert store.events(retry.run_id)[-1]["detail"] == "interrupted; will retry"
        assert store.events(spent.run_id)[-1]["detail"] == "interrupted; no attempts left"
        done = store.get_run(finished.run_id)
        assert done is not None
        assert done.state == "completed"
        assert done.result_path == str(result_path(results, "t", finished.run_id))
        assert store.events(finished.run_id)[-1]["detail"] == "result file found on resume"
        # dispatching -> completed is not a legal move: resume goes through executing.
        assert transitions(store, finished_early.run_id)[-2:] == [
            ("dispatching", "executing"),
            ("executing", "completed"),
        ]
        # Nothing in flight any more.
        assert resume(store, results, ResultCheck(T0)) == type(report)([], [], [], [])
        # The retried run can be claimed again, as a new attempt.
        again = store.claim(retry.run_id)
        assert again is not None
        assert again.attempt == 2


def test_resume_trusts_the_state_and_attempt_written_in_the_result_file(
    opener: Opener, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    with opener() as dead:
        failed = run_to(dead, S.EXECUTING, max_attempts=1)
        write_result_file(results, failed, state="failed")
        stale = run_to(dead, S.FAILED, max_attempts=3)
        write_result_file(results, stale)  # attempt 1 ...
        dead.transition(stale.run_id, S.IDLE)
        dead.claim(stale.run_id)  # ... but attempt 2 was interrupted

    with opener() as store:
        report = resume(store, results, ResultCheck(T0))
        assert report.to_failed == [failed.run_id]
        assert store.get_run(failed.run_id).error == "boom"  # type: ignore[union-attr]
        assert report.to_idle == [stale.run_id]
        assert report.to_completed == []


def test_resume_lists_waiting_runs_in_creation_order(store: StateStore, tmp_path: Path) -> None:
    first = store.create_run("a", "h", max_attempts=1)
    second = store.create_run("b", "h", max_attempts=1)
    third = store.create_run("c", "h", max_attempts=1)
    for run in (third, first, second):  # parked in a different order than created
        store.claim(run.run_id)
        store.transition(run.run_id, S.WAITING, detail="brainstem")
    report = resume(store, tmp_path / "results", ResultCheck(T0))
    assert [r.run_id for r in report.waiting] == [first.run_id, second.run_id, third.run_id]
    assert all(r.state == "waiting" for r in report.waiting)


# -- the database file ----------------------------------------------------------------


def test_database_uses_wal_and_survives_reopening(db_path: Path) -> None:
    with Store(db_path) as store:
        run = store.create_run("t", "h", max_attempts=1)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    with Store(db_path) as store:
        assert store.get_run(run.run_id) == run


def test_a_new_database_is_made_without_loading_numpy_which_loads_after(db_path: Path) -> None:
    # sqlite-utils imports numpy (a fifth of a second) when it is installed; creating the
    # state file (every CI run's first step) does without it, and numpy imports as
    # usual afterwards.
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from runner.state.store import Store\n"
        "with Store(Path(sys.argv[1])) as store:\n"
        "    store.create_run('t', 'h', max_attempts=1)\n"
        "print(sorted(m for m in ('numpy', 'pandas', 'sqlite_utils') if m in sys.modules))\n"
        "import numpy\n"
        "print(numpy.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(db_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['sqlite_utils']", "numpy"]
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    conn.close()


def test_database_from_a_newer_omni_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    conn = sqlite3.connect(db_path)
    known = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
    with conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (known + 7, iso(T0)))
    conn.close()
    with pytest.raises(StoreError) as caught:
        Store(db_path)
    message = str(caught.value)
    assert str(db_path) in message
    assert f"schema {known + 7}" in message
    assert f"knows up to {known}" in message


def test_garbage_file_is_refused_naming_the_path(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database, just some text\n" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite state database") as caught:
        Store(db_path)
    assert str(db_path) in str(caught.value)


def test_tasks_and_meta_are_stored(store: StateStore, tmp_path: Path) -> None:
    spec = TaskSpec(tool="echo", schedule="every 10m", enabled=False)
    store.upsert_task(Task(id="ping", path=tmp_path / "ping.yaml", spec=spec, task_hash="h1"))
    store.upsert_task(Task(id="ping", path=tmp_path / "ping.yaml", spec=spec, task_hash="h2"))
    assert task_rows(store) == [("ping", "h2", "every 10m", 0)]

    assert store.meta_get("git.last_commit") is None
    store.meta_set("git.last_commit", "abc")
    store.meta_set("git.last_commit", "def")
    assert store.meta_get("git.last_commit") == "def"


def task_rows(
    store: StateStore, columns: str = "id, task_hash, schedule, enabled"
) -> list[tuple[object, ...]]:
    """The ``tasks`` table (by id), read past the store's API."""
    sql = f"SELECT {columns} FROM tasks ORDER BY id"
    if isinstance(store, PostgresStore):
        with psycopg.connect(store.url) as conn:
            return list(conn.execute(sql).fetchall())
    assert isinstance(store, Store)
    with sqlite3.connect(store.path) as conn:
        found = conn.execute(sql).fetchall()
    conn.close()
    return found


def test_delete_runs_removes_rows_and_their_events(store: StateStore) -> None:
    keep = store.create_run("t", "h", max_attempts=1)
    gone = [run_to(store, S.COMPLETED).run_id for _ in range(3)]
    assert store.delete_runs([*gone, "unknown"]) == 3
    assert [r.run_id for r in store.runs()] == [keep.run_id]
    assert all(store.events(run_id) == [] for run_id in gone)
    assert store.delete_runs([]) == 0


# -- modes and spend ------------------------------------------------------------------


def test_mode_changes_are_recorded_with_history(store: StateStore, clock: FakeClock) -> None:
    initial = store.mode()
    assert (initial.mode, initial.since, initial.why) == ("normal", None, "")

    clock.advance(10)
    degraded = store.set_mode(Mode.DEGRADED, "gateway refused 2 calls")
    assert (degraded.mode, degraded.since) == ("degraded", "2026-03-01T12:00:10.000Z")
    clock.advance(10)
    assert store.set_mode(Mode.DEGRADED, "again") == degraded  # same mode: no-op
    store.set_mode(Mode.BRAINSTEM, "direct API down too")
    store.set_mode(Mode.NORMAL, "gateway back")

    assert store.mode().mode == "normal"
    history = store.mode_history()
    assert [(h["from_mode"], h["to_mode"]) for h in history] == [
        ("brainstem", "normal"),
        ("degraded", "brainstem"),
        ("normal", "degraded"),
    ]
    assert history[-1]["why"] == "gateway refused 2 calls"
    assert len(store.mode_history(limit=1)) == 1


def test_normal_to_brainstem_is_recorded_when_there_is_no_backup_key(store: StateStore) -> None:
    store.set_mode(Mode.BRAINSTEM, "gateway failed; no backup key")
    assert store.mode().mode == "brainstem"
    [change] = store.mode_history()
    assert (change["from_mode"], change["to_mode"]) == ("normal", "brainstem")


def test_spend_since_sums_costs_of_runs_finished_since(store: StateStore, clock: FakeClock) -> None:
    assert store.spend_since(iso(T0)) == 0.0
    for cost in (0.5, None, 0.25):
        run = run_to(store, S.EXECUTING)
        store.transition(run.run_id, S.COMPLETED, cost_usd=cost)
        clock.advance(3600)
    failed = run_to(store, S.EXECUTING)
    store.transition(failed.run_id, S.FAILED, cost_usd=1.0)

    assert store.spend_since(iso(T0)) == pytest.approx(1.75)
    assert store.spend_since(iso(T0 + timedelta(hours=1))) == pytest.approx(1.25)
    assert store.spend_since(iso(T0 + timedelta(days=1))) == 0.0
    # The runs a spend from result files leaves to the store: those created since.
    created = [run.run_id for run in store.runs()]  # newest first, an hour apart
    assert store.run_ids_since(time_prefix(T0)) == set(created)
    assert store.run_ids_since(time_prefix(T0 + timedelta(hours=1))) == set(created[:-1])
    # What prune need not read: finished runs (a failed one with attempts left is not).
    final = run_to(store, S.FAILED, max_attempts=1)
    done = {run_id: S.COMPLETED for run_id in created[1:]} | {final.run_id: S.FAILED}
    assert store.finished_runs("t") == done
    assert store.finished_runs("other") == {}


# -- one run a slot or content, whoever plans it ----------------------------------------


def test_a_unique_run_is_created_once_per_slot_or_content(store: StateStore) -> None:
    first = store.create_run("t", "h1", max_attempts=1, slot="03:00", unique=True)
    again = store.create_run("t", "h2", max_attempts=1, slot="03:00", unique=True)
    other_slot = store.create_run("t", "h1", max_attempts=1, slot="04:00", unique=True)
    assert again == first
    assert other_slot.run_id != first.run_id

    one_off = store.create_run("t", "h1", max_attempts=1, unique=True)
    assert store.create_run("t", "h1", max_attempts=1, unique=True) == one_off
    assert store.create_run("t", "h2", max_attempts=1, unique=True).run_id != one_off.run_id
    forced = store.create_run("t", "h1", max_attempts=1)  # a forced run has no key
    assert forced.run_id != one_off.run_id
    assert len(store.runs(task_id="t")) == 5


def test_a_run_failed_for_good_frees_its_key_and_a_completed_one_keeps_it(
    store: StateStore,
) -> None:
    spent = store.create_run("t", "h1", max_attempts=1, slot="03:00", unique=True)
    store.claim(spent.run_id, executor="builtin", tool="echo")
    store.transition(spent.run_id, S.FAILED, error="boom")
    retry = store.create_run("t", "h1", max_attempts=1, slot="03:00", unique=True)
    assert retry.run_id != spent.run_id
    store.claim(retry.run_id, executor="builtin", tool="echo")
    done = store.transition(retry.run_id, S.COMPLETED)
    assert store.create_run("t", "h1", max_attempts=1, slot="03:00", unique=True) == done


def test_a_read_only_store_leaves_the_file_as_it_was(db_path: Path, clock: FakeClock) -> None:
    with Store(db_path, clock=clock) as writer:
        run = writer.create_run("t", "h", max_attempts=1)
    before = sorted(p.name for p in db_path.parent.iterdir()), db_path.read_bytes()
    with Store(db_path, read_only=True) as reader:
        assert reader.get_run(run.run_id) == run
        assert reader.runs_by_id_prefix(run.run_id[:12].lower()) == [run]
        with pytest.raises(StoreError, match="readonly"):
            reader.set_note(run.run_id, "x")
    assert (sorted(p.name for p in db_path.parent.iterdir()), db_path.read_bytes()) == before


def test_a_read_only_store_never_creates_one(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        Store(tmp_path / "none" / "state.db", read_only=True)
    assert not (tmp_path / "none").exists()


# -- every read and write on both backends ----------------------------------------------


def test_unfinished_runs_and_the_recorded_task_paths(store: StateStore, tmp_path: Path) -> None:
    idle = store.create_run("a", "h", max_attempts=1)
    waiting = run_to(store, S.WAITING)
    retry = run_to(store, S.FAILED, max_attempts=2)
    run_to(store, S.FAILED, max_attempts=1)  # spent: not unfinished
    run_to(store, S.COMPLETED)
    assert [r.run_id for r in store.unfinished_runs()] == [
        idle.run_id,
        waiting.run_id,
        retry.run_id,
    ]

    spec = TaskSpec(tool="echo")
    store.upsert_task(Task(id="a", path=Path("tasks/a.yaml"), spec=spec, task_hash="h"))
    store.upsert_task(Task(id="b", path=tmp_path / "b.yaml", spec=spec, task_hash="h"))
    assert store.task_paths() == {
        "a": str(Path("tasks/a.yaml").absolute()),  # so a pass from elsewhere finds it
        "b": str(tmp_path / "b.yaml"),
    }


def test_a_skipped_run_is_closed_frees_its_key_and_a_move_clears_the_note(
    store: StateStore,
) -> None:
    gone = store.create_run("t", "h1", max_attempts=3, slot="03:00", unique=True)
    store.set_note(gone.run_id, "waits for a model")
    assert store.get_run(gone.run_id).note == "waits for a model"  # type: ignore[union-attr]
    skipped = store.transition(gone.run_id, S.SKIPPED, detail="task file gone")
    assert (skipped.state, skipped.note, skipped.finished_at) == (S.SKIPPED, None, iso(T0))
    assert store.unfinished_runs() == []
    assert store.counts_by_state()[S.SKIPPED] == 1
    assert store.claim(gone.run_id) is None
    with pytest.raises(IllegalTransitionError):
        store.transition(gone.run_id, S.IDLE)

    # The file is back: its slot gets a new run, as a one-off's content does.
    back = store.create_run("t", "h1", max_attempts=3, slot="03:00", unique=True)
    assert back.run_id != gone.run_id
    one_off = store.create_run("t", "h1", max_attempts=1, unique=True)
    store.transition(one_off.run_id, S.SKIPPED, detail="task file gone", note="gone")
    assert store.get_run(one_off.run_id).note == "gone"  # type: ignore[union-attr]
    assert store.create_run("t", "h1", max_attempts=1, unique=True).run_id != one_off.run_id


def test_rate_limits_are_remembered_the_later_reset_wins_and_the_why_is_redacted(
    opener: Opener, clock: FakeClock
) -> None:
    with opener(clock=clock, redactor=Redactor(["sk-secret-123456"])) as store:
        assert store.rate_limits(iso(T0)) == {}
        store.set_rate_limit("free", iso(T0 + timedelta(minutes=5)), "429 for sk-secret-123456")
        store.set_rate_limit("free", iso(T0 + timedelta(minutes=1)), "an earlier reset")
        store.set_rate_limit("paid", iso(T0 + timedelta(minutes=1)), "429")
        limits = store.rate_limits(iso(T0))
        assert set(limits) == {"free", "paid"}
        until, why = limits["free"]
        assert until == iso(T0 + timedelta(minutes=5))
        assert "sk-secret-123456" not in why
        assert why.startswith("429 for ")
        assert set(store.rate_limits(iso(T0 + timedelta(minutes=2)))) == {"free"}
        assert store.rate_limits(iso(T0 + timedelta(minutes=5))) == {}


def test_runs_by_id_prefix_and_the_last_finished_slot(store: StateStore, clock: FakeClock) -> None:
    first = run_to(store, S.COMPLETED, slot="2026-03-01T03:00:00Z")
    clock.advance(3600)
    second = run_to(store, S.FAILED, max_attempts=1, slot="2026-03-01T04:00:00Z")
    run_to(store, S.EXECUTING, slot="2026-03-01T05:00:00Z")  # unfinished: does not count
    assert store.last_finished_slot("t") == "2026-03-01T04:00:00Z"
    assert store.last_finished_slot("other") is None

    assert store.runs_by_id_prefix(second.run_id.lower()) == [store.get_run(second.run_id)]
    differs = next(
        i for i, (a, b) in enumerate(zip(first.run_id, second.run_id, strict=True)) if a != b
    )
    found = store.runs_by_id_prefix(first.run_id[:differs])  # the time, an hour apart
    assert [r.run_id for r in found][-2:] == [second.run_id, first.run_id]
    assert store.runs_by_id_prefix("ZZZZ") == []
    assert len(store.runs_by_id_prefix("", limit=2)) == 2


def test_a_read_only_store_reads_and_writes_nothing(opener: Opener, clock: FakeClock) -> None:
    with opener(clock=clock) as writer:
        run = writer.create_run("t", "h", max_attempts=1)
        writer.set_mode(Mode.DEGRADED, "gateway down")
    with opener(read_only=True) as reader:
        assert reader.get_run(run.run_id) == run
        assert reader.mode().mode == "degraded"
        with pytest.raises(StoreError, match=r"read-?only"):
            reader.set_note(run.run_id, "x")
        with pytest.raises(StoreError, match=r"read-?only"):
            reader.create_run("t", "h2", max_attempts=1)
    with opener() as again:
        assert again.get_run(run.run_id) == run
        assert again.runs() == [run]


def test_a_read_only_ledger_is_never_created_or_migrated(pg_url: str) -> None:
    with pytest.raises(StoreError, match="ledger schema 0, this omni reads schema"):
        PostgresStore(pg_url, read_only=True)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('runs')").fetchone() == (None,)


def test_a_pass_records_its_tasks_and_reads_their_runs_in_one_go(
    store: StateStore, tmp_path: Path
) -> None:
    hourly = TaskSpec(tool="echo", schedule="every 1h")
    once = TaskSpec(tool="echo")
    tasks = [
        Task(id="t", path=tmp_path / "t.yaml", spec=hourly, task_hash="h1"),
        Task(id="u", path=tmp_path / "u.yaml", spec=once, task_hash="h9"),
        Task(id="new", path=tmp_path / "new.yaml", spec=once, task_hash="h0"),
    ]
    store.upsert_tasks(tasks)
    store.upsert_tasks([Task(id="u", path=tmp_path / "moved.yaml", spec=hourly, task_hash="h8")])
    assert store.task_paths() == {
        "t": str(tmp_path / "t.yaml"),
        "u": str(tmp_path / "moved.yaml"),
        "new": str(tmp_path / "new.yaml"),
    }

    run_to(store, S.COMPLETED, slot="2026-11-21T08:00:00.000Z")
    run_to(store, S.FAILED, max_attempts=1, slot="2026-11-21T09:00:00.000Z")
    run_to(store, S.IDLE, slot="2026-11-21T10:00:00.000Z")  # unfinished: serves nothing
    for task_hash, end in (("h9", S.COMPLETED), ("h8", S.FAILED)):
        run = store.create_run("u", task_hash, max_attempts=1)
        store.claim(run.run_id)
        store.transition(run.run_id, S.EXECUTING)
        store.transition(run.run_id, end, result_path=f"results/u/{run.run_id}.json")
    edited = Task(id="u", path=tmp_path / "u.yaml", spec=once, task_hash="h8")
    found = store.task_runs([*tasks, edited])
    # As has_completed and last_finished_slot say, task by task.
    assert found["t"].last_slot == store.last_finished_slot("t") == "2026-11-21T09:00:00.000Z"
    assert found["t"].completed is store.has_completed("t", "h1") is True
    assert found["t"].failed is False  # a failed run counts only with its result file
    assert found["u"] == TaskRuns(completed=False, failed=True, last_slot=None)  # h8
    assert store.task_runs(tasks)["u"].completed is True  # h9
    assert found["new"] == TaskRuns(completed=False, failed=False, last_slot=None)
    newest = store.newest_runs(["t", "u", "new"])
    assert newest == {"t": store.runs(task_id="t", limit=1)[0], "u": store.runs(task_id="u")[0]}


def test_a_pass_rewrites_only_the_task_rows_that_changed(
    store: StateStore, clock: FakeClock, tmp_path: Path
) -> None:
    store.upsert_tasks([])  # a pass with no task files
    assert (store.task_paths(), store.task_runs([]), store.newest_runs([])) == ({}, {}, {})
    once, hourly = TaskSpec(tool="echo"), TaskSpec(tool="echo", schedule="every 1h")
    paused = TaskSpec(tool="echo", schedule="every 1h", enabled=False)
    a = Task(id="a", path=tmp_path / "a.yaml", spec=once, task_hash="h1")  # no schedule: NULL
    b = Task(id="b", path=tmp_path / "b.yaml", spec=hourly, task_hash="h1")
    c = Task(id="c", path=tmp_path / "c.yaml", spec=hourly, task_hash="h1")
    store.upsert_tasks([a, b, c])
    first = iso(clock())
    clock.advance(60)
    b2 = Task(id="b", path=tmp_path / "b.yaml", spec=hourly, task_hash="h2")
    c2 = Task(id="c", path=tmp_path / "c.yaml", spec=paused, task_hash="h1")
    store.upsert_tasks([a, b2, c2])
    later = iso(clock())
    assert task_rows(store, "id, task_hash, schedule, enabled, updated_at") == [
        ("a", "h1", None, 1, first),  # unchanged: not rewritten
        ("b", "h2", "every 1h", 1, later),
        ("c", "h1", "every 1h", 0, later),
    ]


def test_an_unchanged_upsert_task_keeps_its_updated_at(
    store: StateStore, clock: FakeClock, tmp_path: Path
) -> None:
    task = Task(id="a", path=tmp_path / "a.yaml", spec=TaskSpec(tool="echo"), task_hash="h1")
    store.upsert_task(task)
    first = iso(clock())
    clock.advance(60)
    store.upsert_task(task)  # the same file again: as upsert_tasks, not rewritten
    assert task_rows(store, "id, updated_at") == [("a", first)]
    edited = Task(id="a", path=tmp_path / "a.yaml", spec=TaskSpec(tool="echo"), task_hash="h2")
    store.upsert_task(edited)
    assert task_rows(store, "id, task_hash, updated_at") == [("a", "h2", iso(clock()))]
