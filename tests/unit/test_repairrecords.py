"""Repair records: which record of a repair task counts (``runner.state.repairrecords``)."""

from __future__ import annotations

from runner.state.repairrecords import newest_records

TASK = "repair/gateway-20261130T100000Z"


def record(run_id: str, status: str) -> tuple[str, str, dict[str, object]]:
    return TASK, run_id, {"task_hash": "h", "fault": {"kind": "gateway", "status": status}}


def test_a_resolved_fault_stays_resolved_whatever_order_its_run_ids_sort_in() -> None:
    # Two records written in the same millisecond sort by their random part.
    [found] = newest_records([record("01B", "resolved"), record("01C", "open")])
    assert (found.run_id, found.open) == ("01B", False)
    [found] = newest_records([record("01A", "open"), record("01C", "open")])
    assert (found.run_id, found.open) == ("01C", True)


def test_only_repair_tasks_with_a_fault_mapping_count() -> None:
    results = [
        ("nightly", "01A", {"fault": {"status": "open"}}),
        (TASK, "01B", {"fault": "open"}),
        ("repair/other", "01C", {"fault": {"status": "open"}}),
    ]
    assert newest_records(results) == []
