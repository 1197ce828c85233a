"""``omni migrate --to postgresql://…``: copy a SQLite state file into a PostgreSQL ledger.

Every table is copied as it is (tasks, runs with their ids and order, events, mode
changes, metadata), in one transaction of the ledger, while the SQLite file's runner
lock is held (no runner may change it meanwhile). Runs that were in flight come over
with no lease: the first instance to sweep settles them, as a restart would. A run
gets the unique key (its slot, or its content) when it is the newest run of that key
that may still serve it; older ones keep none. A ledger that already holds runs is
refused: copying twice, or into a ledger in use, would mix two histories.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.core.errors import StoreError
from runner.state.moves import RUN_COLUMNS, holds_key, unique_key
from runner.state.postgres import PostgresStore
from runner.state.statelock import StateLock
from runner.state.store import Store

if TYPE_CHECKING:
    from pathlib import Path

#: Tables copied, in an order their references allow, each with its columns.
_TABLES: dict[str, tuple[str, ...]] = {
    "tasks": ("id", "path", "task_hash", "schedule", "enabled", "updated_at"),
    "runs": RUN_COLUMNS,
    "events": ("id", "run_id", "at", "from_state", "to_state", "detail"),
    "modes": ("id", "at", "from_mode", "to_mode", "why"),
    "meta": ("key", "value"),
    "rate_limits": ("model", "until", "why", "at"),
}
#: Identity columns whose sequences must continue after the copied values.
_IDENTITIES = (("runs", "seq"), ("events", "id"), ("modes", "id"))


@dataclass(slots=True)
class MigrateReport:
    """What was copied, table by table, and where to."""

    source: str
    target: str
    copied: dict[str, int] = field(default_factory=dict)


def migrate_to(source: Path, url: str) -> MigrateReport:
    """Copy the SQLite state at ``source`` into the (empty) ledger at ``url``."""
    if not source.exists():
        raise StoreError(f"{source}: no state database to migrate")
    with StateLock(source, "migrate"):
        Store(source).close()  # brings the file to this omni's schema first
        rows = _read_all(source)
        with PostgresStore(url) as ledger:
            report = MigrateReport(source=str(source), target=ledger.where)
            report.copied = ledger.copy_in(
                {
                    table: _with_keys(found) if table == "runs" else found
                    for table, found in rows.items()
                },
                _IDENTITIES,
            )
    return report


def _read_all(source: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of the copied tables, in key order."""
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return {
            table: [
                dict(row)
                for row in conn.execute(
                    f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}"
                )
            ]
            for table, columns in _TABLES.items()
        }
    except sqlite3.Error as exc:
        raise StoreError(f"{source}: cannot read the state database: {exc}") from exc
    finally:
        conn.close()


def _with_keys(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs with ``run_key``: the newest run of each key that may still serve it."""
    taken: set[tuple[str, str]] = set()
    for run in sorted(runs, key=lambda r: r["seq"], reverse=True):
        holds = holds_key(run["state"], run["attempt"], run["max_attempts"])
        key = (run["task_id"], unique_key(run["task_hash"], run["slot"]))
        run["run_key"] = key[1] if holds and key not in taken else None
        if holds:
            taken.add(key)
    return runs
