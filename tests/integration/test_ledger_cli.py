"""The PostgreSQL ledger through the ``omni`` command: choosing it (config or env),
``omni migrate --to`` from a SQLite state, ``omni status`` showing live instances, and a
password in the URL that no output shows."""

from __future__ import annotations

import json
import re
import signal
from typing import TYPE_CHECKING

import pytest

from tests.support.cli import run_omni
from tests.support.fleet import omni, query, states, wait_until, write_config, write_sleep_tasks

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

SECRET = "Pg-Passw0rd-Never-Shown"
#: A ledger URL as output shows it: host and port kept, the user part masked or dropped
#: (the store's own form, or the output guard's); the password checked apart.
MASKED = re.compile(r"postgresql://[^\s/@]*@127\.0\.0\.1:\d+/")


def with_password(url: str) -> str:
    """``url`` with a password (the test cluster trusts local connections: it is ignored)."""
    return url.replace("omni@", f"omni:{SECRET}@")


def env_for(root: Path, url: str | None = None) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root)}
    return env | ({"OMNI_STATE_URL": url} if url else {})


def test_migrate_copies_a_sqlite_state_and_the_ledger_carries_on_from_it(
    tmp_path: Path, pg_url: str
) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "hello.yaml").write_text("tool: echo\nargs: {text: hello}\n")
    (tmp_path / "tasks" / "every.yaml").write_text(
        "tool: echo\nargs: {text: tick}\nschedule: every 1h\n"
    )
    first = run_omni(tmp_path, "run", "--once", env=env_for(tmp_path))
    assert first.returncode == 0, first.stderr
    url = with_password(pg_url)

    moved = run_omni(tmp_path, "migrate", "--to", url, "--json", env=env_for(tmp_path))
    assert moved.returncode == 0, moved.stderr
    report = json.loads(moved.stdout)
    assert report["copied"]["runs"] == 2
    assert report["copied"]["tasks"] == 2
    assert MASKED.match(report["target"]), report["target"]
    assert SECRET not in moved.stdout + moved.stderr

    again = run_omni(tmp_path, "run", "--once", "--json", env=env_for(tmp_path, url))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["runs"] == []  # done before, and the ledger knows it
    status = run_omni(tmp_path, "status", "--json", env=env_for(tmp_path, url))
    snapshot = json.loads(status.stdout)
    assert snapshot["runs_by_state"]["completed"] == 2
    assert MASKED.match(snapshot["state_file"]), snapshot["state_file"]
    assert SECRET not in status.stdout + again.stdout + again.stderr
    rows = query(pg_url, "SELECT task_id, state, slot, run_key FROM runs ORDER BY task_id")
    assert [(r["task_id"], r["state"]) for r in rows] == [
        ("every", "completed"),
        ("hello", "completed"),
    ]
    assert rows[0]["run_key"] == f"slot {rows[0]['slot']}"  # a slot's run keeps its key
    assert rows[1]["run_key"].startswith("content ")

    twice = run_omni(tmp_path, "migrate", "--to", url, env=env_for(tmp_path))
    assert twice.returncode == 1
    assert "already has rows: migrate into an empty ledger" in twice.stderr
    assert SECRET not in twice.stdout + twice.stderr


@pytest.mark.timeout(180)
def test_status_shows_each_live_instance_and_no_password(tmp_path: Path, pg_url: str) -> None:
    write_config(tmp_path, with_password(pg_url), lease=5)
    write_sleep_tasks(tmp_path, 8, 5)
    service = omni(tmp_path, "run", log="service.log")
    try:
        wait_until(lambda: states(pg_url)["executing"] == 4, timeout=60, what="4 in flight")
        shown = run_omni(tmp_path, "status", "--json", env=env_for(tmp_path))
        [instance] = json.loads(shown.stdout)["instances"]
        assert (instance["pid"], instance["role"], instance["runs_in_flight"]) == (
            service.pid,
            "service",
            4,
        )
        assert instance["host"]
        assert instance["last_heartbeat"].endswith("Z")
        table = run_omni(tmp_path, "status", env=env_for(tmp_path))
        assert MASKED.search(table.stdout.split("live instances on ", 1)[1])
        assert SECRET not in shown.stdout + table.stdout
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(60) == 0
    log = (tmp_path / "service.log").read_text()
    assert MASKED.search(log.split("(state ", 1)[1])
    assert SECRET not in log


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        (
            "state: {url: sqlite:///tmp/x.db}\n",
            {},
            "state.url: want a postgresql:// URL",
        ),
        ("", {"OMNI_STATE_URL": "mysql://db/x"}, "OMNI_STATE_URL: want a postgresql:// URL"),
        ("state: {url: 'postgresql://h/db', colour: red}\n", {}, "state.colour: unknown key"),
    ],
)
def test_a_bad_ledger_setting_is_a_config_error(
    tmp_path: Path, config: str, env: dict[str, str], message: str
) -> None:
    (tmp_path / "config.yaml").write_text(config)
    done = run_omni(tmp_path, "status", env=env_for(tmp_path) | env)
    assert done.returncode == 2
    assert message in done.stderr
