"""The state database's schema migrations, in order.

The schema version is a migration's 1-based position in :data:`MIGRATIONS`. A shipped
migration never changes; a new one is appended. A database newer than the migrations
this omni knows is refused (:func:`check_version`); the PostgreSQL backend keeps its own
list the same way (:mod:`runner.state.pgschema`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.core.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlite_utils import Database


def check_version(where: str, found: int, known: int, elsewhere: str) -> None:
    """Refuse a database whose schema is newer than this omni's migrations."""
    if found > known:
        raise StoreError(
            f"{where}: state database is from a newer omni (schema {found},"
            f" this omni knows up to {known}); upgrade omni or {elsewhere}"
        )


def _columns(spec: str) -> dict[str, type]:
    """Columns in order from ``"name name:int name:float"`` (a bare name is text)."""
    kinds: dict[str, type] = {"int": int, "float": float}
    return {
        name: kinds.get(kind, str)
        for name, _, kind in (word.partition(":") for word in spec.split())
    }


def _initial_schema(db: Database) -> None:
    task_columns = dict.fromkeys(("id", "path", "task_hash", "schedule", "updated_at"), str)
    db.table("tasks").create(
        task_columns | {"enabled": int},
        pk="id",
        not_null={"path", "task_hash", "enabled", "updated_at"},
    )
    # Written out, not derived from RunRecord: a migration must never change once shipped.
    runs = db.table("runs").create(
        _columns(
            "run_id task_id task_hash slot state attempt:int max_attempts:int executor tool"
            " model tier mode created_at updated_at started_at finished_at note error"
            " result_path cost_usd:float seq:int"
        ),
        pk="run_id",
        not_null=set(
            [
                "task_id",
                "task_hash",
                "state",
                "attempt",
                "max_attempts",
                "seq",
                "created_at",
                "updated_at",
            ]
        ),
    )
    runs.create_index(["state"])
    runs.create_index(["task_id", "task_hash"])
    # Unique: seq is the creation order waiting runs resume in; also makes MAX(seq) cheap.
    runs.create_index(["seq"], unique=True)
    # Raw DDL: sqlite-utils' create() cannot say AUTOINCREMENT, and event/mode ids must
    # never be reused after a delete, or history would reorder.
    db.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,"
        " at TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, detail TEXT NOT NULL)"
    )
    db.table("events").create_index(["run_id"])
    db.execute(
        "CREATE TABLE modes (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
        " from_mode TEXT NOT NULL, to_mode TEXT NOT NULL, why TEXT NOT NULL)"
    )
    db.table("meta").create({"key": str, "value": str}, pk="key")


def _rate_limits(db: Database) -> None:
    """Models that answered HTTP 429, skipped until ``until`` (an ISO time)."""
    db.execute(
        "CREATE TABLE rate_limits (model TEXT PRIMARY KEY, until TEXT NOT NULL,"
        " why TEXT NOT NULL, at TEXT NOT NULL)"
    )


#: Schema migrations in order.
MIGRATIONS: tuple[Callable[[Database], None], ...] = (_initial_schema, _rate_limits)
