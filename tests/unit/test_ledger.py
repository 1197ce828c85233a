"""The PostgreSQL ledger's own rules, on a real database: one run a key however many
instances insert it, claims that skip locked rows, leases and their expiry, fencing of
a late writer, instances, the schema version, and a password that never shows."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import psycopg
import pytest

from runner.core.clock import utc_now
from runner.core.errors import StaleRunError, StoreError
from runner.core.redaction import Redactor
from runner.core.states import Mode, RunState
from runner.defs.tasks import Task, TaskSpec
from runner.state.fleet import Fleet
from runner.state.pgbase import connect_timeout
from runner.state.postgres import PostgresStore
from runner.state.queries import StoreQueries
from runner.state.records import NewRun, TaskRuns
from runner.state.recovery import resume
from runner.state.resultcheck import ResultCheck
from runner.state.results import RunResult, write_result
from tests.support.relay import Relay

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.support.postgres import Cluster

S = RunState


def checks() -> ResultCheck:
    """Result files checked as of now (what a fleet's sweeps use)."""
    return ResultCheck(utc_now())


def test_instances_racing_to_plan_one_slot_create_one_run(pg_url: str) -> None:
    workers = 8
    stores = [PostgresStore(pg_url, role="service") for _ in range(workers)]
    start = threading.Barrier(workers)

    def plan(store: PostgresStore) -> str:
        start.wait()
        return store.create_run("t", "h", max_attempts=1, slot="03:00", unique=True).run_id

    try:
        with ThreadPoolExecutor(workers) as pool:
            ids = set(pool.map(plan, stores))
    finally:
        for store in stores:
            store.close()
    assert len(ids) == 1
    with PostgresStore(pg_url) as check:
        assert [r.run_id for r in check.runs()] == list(ids)
        assert [e["detail"] for e in check.events(ids.pop())] == ["created"]


def test_a_claim_skips_a_run_another_transaction_holds_instead_of_waiting(pg_url: str) -> None:
    with PostgresStore(pg_url, role="service") as store:
        run = store.create_run("t", "h", max_attempts=1)
        with psycopg.connect(pg_url) as other:  # a claim in progress elsewhere
            other.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run.run_id,))
            began = time.monotonic()
            assert store.claim(run) is None
            assert time.monotonic() - began < 5  # not blocked until the other commits
        claimed = store.claim(run)
        assert claimed is not None
        assert claimed.state == "dispatching"


def test_a_live_instance_keeps_its_runs_and_one_that_left_gives_them_up(
    pg_url: str, tmp_path: Path
) -> None:
    with (
        PostgresStore(pg_url, role="service") as alive,
        PostgresStore(pg_url, role="service") as other,
    ):
        mine = alive.claim(alive.create_run("t", "h", max_attempts=2), executor="b", tool="x")
        assert mine is not None
        assert resume(other, tmp_path, ResultCheck(utc_now())).to_idle == []  # its lease is live
        assert other.get_run(mine.run_id) == mine
        leaving = PostgresStore(pg_url, role="run --once")
        theirs = leaving.claim(leaving.create_run("u", "h", max_attempts=2))
        assert theirs is not None
        leaving.close()  # gone: what it held is the others' at once
        assert resume(other, tmp_path, ResultCheck(utc_now())).to_idle == [theirs.run_id]
        assert [i.instance_id for i in other.instances()] == [alive.instance_id, other.instance_id]


def test_an_expired_lease_is_settled_by_another_instance_and_the_late_writer_is_fenced(
    pg_url: str, tmp_path: Path
) -> None:
    with (
        PostgresStore(pg_url, role="service", lease_seconds=0.2) as slow,
        PostgresStore(pg_url, role="service") as other,
    ):
        held = slow.claim(slow.create_run("t", "h", max_attempts=3), executor="b", tool="x")
        assert held is not None
        time.sleep(0.4)  # no heartbeat renews it: the instance looks dead
        report = resume(other, tmp_path, ResultCheck(utc_now()))
        assert report.to_idle == [held.run_id]
        again = other.claim(held.run_id, executor="b", tool="x")
        assert again is not None
        assert again.attempt == 2
        with pytest.raises(
            StaleRunError, match=r"is executing \(attempt 2\), not executing \(attempt 1\)"
        ):
            slow.transition(held, S.COMPLETED, result_path="late.json")
        done = other.transition(again, S.COMPLETED)
        assert other.get_run(held.run_id) == done
        details = [e["detail"] for e in other.events(held.run_id)]
        assert details.count("interrupted; will retry") == 1


def test_instances_show_host_pid_runs_in_flight_and_liveness(pg_url: str) -> None:
    with (
        PostgresStore(pg_url, role="service", lease_seconds=0.2) as quiet,
        PostgresStore(pg_url) as reader,
    ):
        quiet.claim(quiet.create_run("t", "h", max_attempts=1))
        [row] = reader.instances()  # a store opened without a role is no instance
        assert (row.instance_id, row.role, row.runs_in_flight, row.live) == (
            quiet.instance_id,
            "service",
            1,
            True,
        )
        assert row.pid > 0
        assert row.host
        time.sleep(0.4)
        assert [i.live for i in reader.instances()] == [False]


def test_a_ledger_from_a_newer_omni_is_refused(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        known = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        assert known is not None
        conn.execute("INSERT INTO schema_migrations VALUES (%s, 'then')", (known[0] + 3,))
    with pytest.raises(StoreError) as caught:
        PostgresStore(pg_url)
    assert f"schema {known[0] + 3}" in str(caught.value)
    assert f"knows up to {known[0]}" in str(caught.value)


def test_a_password_in_the_url_never_shows_in_errors(pg_url: str) -> None:
    secret = "Sup3r-Secret-Passw0rd"
    port = pg_url.split(":")[2].split("/", maxsplit=1)[0]
    wrong = pg_url.replace("omni@", f"omni:{secret}@").replace(f":{port}/", ":1/")
    with pytest.raises(StoreError) as caught:
        PostgresStore(wrong)
    message = str(caught.value)
    assert "cannot connect to the state database" in message
    assert "omni:***@127.0.0.1:1/" in message
    assert secret not in message
    # Trust authentication ignores the password: the store opens, and names itself masked.
    with PostgresStore(pg_url.replace("omni@", f"omni:{secret}@")) as store:
        assert store.where.startswith("postgresql://omni:***@127.0.0.1:")


# -- the fleet: heartbeats, sweeps, wake-ups --------------------------------------------


async def test_heartbeats_keep_a_lease_alive_and_stopping_them_lets_it_expire(
    pg_url: str, tmp_path: Path
) -> None:
    with (
        PostgresStore(pg_url, role="service", lease_seconds=0.6) as busy,
        PostgresStore(pg_url) as other,
    ):
        held = busy.claim(busy.create_run("t", "h", max_attempts=2), executor="b", tool="x")
        assert held is not None
        async with Fleet(busy, tmp_path, checks).running():
            await asyncio.sleep(1.5)  # past two leases: only heartbeats keep it
            assert resume(other, tmp_path, ResultCheck(utc_now())).to_idle == []
        await asyncio.sleep(1.0)  # heartbeats stopped, the instance still open: it hangs
        assert resume(other, tmp_path, ResultCheck(utc_now())).to_idle == [held.run_id]


async def test_a_fleet_settles_a_dead_instances_runs_by_their_result_files(
    pg_url: str, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    dead = PostgresStore(pg_url, role="service", lease_seconds=0.2)
    finished = dead.claim(dead.create_run("t", "h", max_attempts=1), executor="b", tool="x")
    cut_short = dead.claim(dead.create_run("u", "h", max_attempts=2), executor="b", tool="x")
    assert finished is not None
    assert cut_short is not None
    write_result(
        results,
        RunResult(
            task_id="t",
            run_id=finished.run_id,
            task_hash="h",
            state="completed",
            attempt=1,
            started_at="2026-03-01T12:00:00.000Z",
            finished_at="2026-03-01T12:00:01.000Z",
            duration_s=1.0,
            output="done before the crash",
        ),
        Redactor([]),
    )
    await asyncio.sleep(0.4)  # killed: no close, no heartbeat
    woken: list[int] = []
    with PostgresStore(pg_url, role="service") as alive:
        async with Fleet(alive, results, checks, on_work=lambda: woken.append(1)).running():
            for _ in range(100):
                if woken:
                    break
                await asyncio.sleep(0.05)
        assert alive.get_run(finished.run_id).state == "completed"  # type: ignore[union-attr]
        assert alive.get_run(cut_short.run_id).state == "idle"  # type: ignore[union-attr]
        assert woken  # the run given back is work: the instance was woken
    dead.close()


async def test_a_run_created_anywhere_wakes_a_listening_instance(
    pg_url: str, tmp_path: Path
) -> None:
    woken = asyncio.Event()
    with PostgresStore(pg_url, role="service") as idle, PostgresStore(pg_url) as planner:
        async with Fleet(idle, tmp_path, checks, on_work=woken.set).running():
            await asyncio.sleep(0.3)
            assert not woken.is_set()
            planner.create_run("t", "h", max_attempts=1)
            await asyncio.wait_for(woken.wait(), 5)


def test_a_dropped_connection_fails_one_call_and_the_next_reconnects(pg_url: str) -> None:
    with PostgresStore(pg_url, role="service") as store:
        run = store.create_run("t", "h", max_attempts=1)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'omni' AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StoreError, match="state database error"):
            store.get_run(run.run_id)
        assert store.get_run(run.run_id) == run


def test_the_ledger_redacts_every_text_it_writes(pg_url: str) -> None:
    secret = "sk-ledger-SECRET-0123456789"
    with PostgresStore(pg_url, redactor=Redactor([secret])) as store:
        run = store.create_run("t", "h", max_attempts=2)
        run = store.claim(run, executor="x", tool="y", detail=f"x.y with {secret}") or run
        run = store.transition(run, S.FAILED, error=f"bad {secret}", detail=secret)
        store.set_note(run.run_id, f"note {secret}")
        store.set_mode(Mode.DEGRADED, f"gateway https://u:{secret}@h failed")
    with psycopg.connect(pg_url) as conn:
        for table in ("runs", "events", "modes"):
            dump = conn.execute(f"SELECT CAST(t AS text) FROM {table} t").fetchall()
            assert all(secret not in row[0] for row in dump), table
        [(error, note)] = conn.execute("SELECT error, note FROM runs").fetchall()
    assert (error, note) == ("bad [redacted]", "note [redacted]")


# -- a pass over many tasks -------------------------------------------------------------


def plant(store: PostgresStore, task: Task, kind: int, slot: str | None) -> None:
    """A run of ``task`` of one of six kinds: completed (current content, or an older
    one), failed for good (with its result file, or without), failed with an attempt
    left, idle."""
    digest = "old" if kind == 1 else task.task_hash
    run = store.create_run(task.id, digest, max_attempts=2 if kind == 4 else 1, slot=slot)
    if kind == 5:
        return
    held = store.claim(run, executor="b", tool="x")
    assert held is not None
    path = None if kind == 3 else f"results/{task.id}/{run.run_id}.json"
    store.transition(held, S.COMPLETED if kind < 2 else S.FAILED, result_path=path)


def log_every_statement(pg_url: str) -> str:
    """Have the server log every statement (parameters left out) on the test's database,
    from its next connection on; returns the database's name."""
    with psycopg.connect(pg_url, autocommit=True) as admin:
        [(name,)] = admin.execute("SELECT current_database()").fetchall()
        admin.execute(f"ALTER DATABASE {name} SET log_statement = 'all'")
        admin.execute(f"ALTER DATABASE {name} SET log_parameter_max_length = 0")
    return str(name)


def omni_backend(pg_url: str, name: str) -> int:
    """The server process of the one connection omni holds to database ``name``."""
    with psycopg.connect(pg_url) as admin:
        [(pid,)] = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'omni'",
            (name,),
        ).fetchall()
    return int(pid)


def statements(log: Path, start: int, pid: int) -> list[str]:
    """The statements the server logged for backend ``pid`` past byte ``start``."""
    text = log.read_bytes()[start:].decode(errors="replace")
    marks = (f"[{pid}] LOG:  execute", f"[{pid}] LOG:  statement:")
    return [line for line in text.splitlines() if line.startswith(marks, line.find("["))]


def test_a_pass_over_many_tasks_sends_one_statement_a_step_with_task_by_task_answers(
    pg_cluster: Cluster, pg_url: str, tmp_path: Path
) -> None:
    name = log_every_statement(pg_url)
    once, hourly = TaskSpec(tool="echo"), TaskSpec(tool="echo", schedule="0 * * * *")
    tasks = [
        Task(
            id=f"g{i % 7}/t{i}",
            path=tmp_path / f"t{i}.yaml",
            spec=hourly if i % 5 == 0 else once,
            task_hash=f"h{i % 3}",
        )
        for i in range(3000)
    ]
    # Hostile names: an array literal's NULL, quotes, braces, commas, backslashes.
    tasks += [
        Task(id="NULL", path=tmp_path / "NULL", spec=once, task_hash="h0"),
        Task(id="q", path=tmp_path / "a'\"{},\\ NULL.yaml", spec=hourly, task_hash="{}"),
    ]
    with PostgresStore(pg_url, role="service") as store:
        for i, task in enumerate([*tasks[:88], *tasks[-2:]]):
            scheduled = task.spec.schedule is not None
            plant(store, task, i % 6, f"2026-11-30T0{i % 6}:00:00.000Z" if scheduled else None)
            if i % 4 == 0:  # a second, newer run
                plant(store, task, (i + 1) % 6, "2026-11-30T09:00:00.000Z" if scheduled else None)
        plant(store, tasks[-2], 0, None)  # "NULL": completed
        pid = omni_backend(pg_url, name)
        log = pg_cluster.folder / "log"
        start = log.stat().st_size
        store.upsert_tasks(tasks)
        found = store.task_runs(tasks)
        newest = store.newest_runs([t.id for t in tasks])
        assert len(statements(log, start, pid)) == 3
        # The same answers as the reads task by task (the shared per-task defaults).
        assert found == StoreQueries.task_runs(store, tasks)
        assert newest == StoreQueries.newest_runs(store, [t.id for t in tasks])
        assert len(newest) == 90
        assert {(r.completed, r.failed) for r in found.values()} == {
            (True, False),
            (False, True),
            (False, False),
        }
        assert {r.last_slot for r in found.values()} > {None, "2026-11-30T09:00:00.000Z"}
        assert store.task_paths() == {t.id: str(t.path) for t in tasks}
        assert (newest["NULL"].task_id, newest["q"].task_id) == ("NULL", "q")
        assert found["NULL"] == TaskRuns(completed=True, failed=False, last_slot=None)


def record_at_once(stores: list[PostgresStore], orders: list[list[Task]]) -> None:
    """Each store records its list of tasks, all starting at once."""
    start = threading.Barrier(len(stores))

    def record(k: int) -> None:
        start.wait()
        stores[k].upsert_tasks(orders[k])  # a deadlock would be a StoreError

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(record, range(len(stores))))


def test_a_pass_creating_many_runs_sends_them_in_one_transaction(
    pg_cluster: Cluster, pg_url: str
) -> None:
    name = log_every_statement(pg_url)
    wanted = [
        NewRun(f"t{i}", "h", 1, f"2026-11-30T{i % 24:02d}:00", unique=True) for i in range(300)
    ]
    with PostgresStore(pg_url, role="service") as store:
        held = store.create_run("t7", "h", max_attempts=1, slot="2026-11-30T07:00", unique=True)
        pid = omni_backend(pg_url, name)
        log = pg_cluster.folder / "log"
        start = log.stat().st_size
        created = store.create_runs(wanted)
        sent = statements(log, start, pid)
        # One transaction: BEGIN, the pass's lock, the inserts (one executemany), t7's
        # holder, COMMIT.
        ends = [line.rsplit("  ", 1)[1] for line in sent if "statement: " in line]
        assert (ends, len(sent)) == (["statement: BEGIN", "statement: COMMIT"], 304)
        assert sent[0].endswith("BEGIN") and sent[-1].endswith("COMMIT")
        assert created[7] == held
        assert [(r.task_id, r.slot) for r in created] == [(n.task_id, n.slot) for n in wanted]
        assert len({r.run_id for r in created}) == 300
        assert len(store.runs()) == 300


def test_instances_recording_the_same_tasks_in_other_orders_at_once_never_deadlock(
    pg_url: str, tmp_path: Path
) -> None:
    stores = [PostgresStore(pg_url, role="service") for _ in range(3)]
    try:
        for edit in range(4):
            tasks = [
                Task(
                    id=f"t{i}",
                    path=tmp_path / f"t{i}.yaml",
                    spec=TaskSpec(tool="echo"),
                    task_hash=f"h{edit}",
                )
                for i in range(2000)
            ]
            record_at_once(stores, [tasks, tasks[::-1], tasks[1::2] + tasks[::2]])
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT DISTINCT task_hash FROM tasks").fetchall() == [("h3",)]
    finally:
        for store in stores:
            store.close()


def create_at_once(stores: list[PostgresStore], orders: list[list[NewRun]]) -> list[set[str]]:
    """Each store creates its list of runs, all starting at once; the run ids each got."""
    start = threading.Barrier(len(stores))

    def create(k: int) -> set[str]:
        start.wait()
        return {run.run_id for run in stores[k].create_runs(orders[k])}  # or a StoreError

    with ThreadPoolExecutor(len(stores)) as pool:
        return list(pool.map(create, range(len(stores))))


def test_instances_creating_the_same_runs_in_other_orders_at_once_get_one_run_a_key(
    pg_url: str,
) -> None:
    stores = [PostgresStore(pg_url, role="service") for _ in range(3)]
    try:
        for hour in range(4):
            wanted = [
                NewRun(f"t{i}", "h", 1, f"2026-11-30T{hour:02d}:00", unique=True)
                for i in range(500)
            ]
            made = create_at_once(stores, [wanted, wanted[::-1], wanted[1::2] + wanted[::2]])
            assert made[0] == made[1] == made[2] and len(made[0]) == 500
    finally:
        for store in stores:
            store.close()


# -- an unreachable ledger ------------------------------------------------------------


def test_a_connect_timeout_in_the_url_wins_over_the_runners_own() -> None:
    assert connect_timeout("postgresql://omni@db.internal/omni?connect_timeout=7", 10) == 7
    assert connect_timeout("postgresql://omni@db.internal/omni", 10) == 10
    assert connect_timeout("postgresql://omni@db.internal/omni", 0.2) == 2  # libpq's floor
    assert connect_timeout("postgresql://omni@db.internal/omni?connect_timeout=x", 3) == 3


@pytest.fixture
def relay(pg_cluster: Cluster) -> Iterator[Relay]:
    """A relay to the cluster that can turn into a port nobody answers."""
    through = Relay(pg_cluster.port)
    try:
        yield through
    finally:
        through.close()


async def test_a_fleet_that_cannot_reach_the_ledger_fails_within_a_beat_as_a_store_error(
    pg_cluster: Cluster, pg_url: str, relay: Relay, tmp_path: Path
) -> None:
    url = pg_url.replace(f":{pg_cluster.port}/", f":{relay.port}/")
    with PostgresStore(url, role="service", lease_seconds=0.6) as store:
        relay.black_hole()  # the store's own connection goes on; a new one gets no answer

        async def listen() -> None:
            async with Fleet(store, tmp_path, checks).running():
                pass

        with pytest.raises(StoreError) as caught:
            await asyncio.wait_for(listen(), 60)  # psycopg's default would be 130 s
    assert str(caught.value) == (
        f"postgresql://omni@127.0.0.1:{relay.port}/{url.rsplit('/', 1)[1]}:"
        " cannot connect to listen for work: no answer within 2 s"
    )


def test_a_fleet_cut_off_from_the_ledger_still_stops(
    pg_cluster: Cluster,
    pg_url: str,
    relay: Relay,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = pg_url.replace(f":{pg_cluster.port}/", f":{relay.port}/")

    async def cut_off(store: PostgresStore) -> None:
        async with Fleet(store, tmp_path, checks, on_work=lambda: None).running():
            await asyncio.sleep(0.3)
            relay.black_hole()
            with psycopg.connect(pg_url, autocommit=True) as admin:  # both reconnect: no answer
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name IN ('omni heartbeat', 'omni fleet')"
                    " AND datname = current_database()"
                )
            await asyncio.sleep(3)  # a connect times out meanwhile (2 s)

    with PostgresStore(url, role="service", lease_seconds=0.6) as store:
        stopping = threading.Thread(target=asyncio.run, args=(cut_off(store),), daemon=True)
        stopping.start()
        stopping.join(60)  # psycopg's default connect timeout would hold it 130 s
        assert not stopping.is_alive()
    beats = [r.getMessage() for r in caplog.records if "heartbeat to" in r.getMessage()]
    assert any("connection timeout expired" in beat for beat in beats), beats
