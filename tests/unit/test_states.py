"""The transition tables in states.py are exactly DESIGN §3, and every other move is refused."""

from __future__ import annotations

import itertools
import json

import pytest

from runner.core.errors import IllegalTransitionError
from runner.core.states import (
    MODE_TRANSITIONS,
    RUN_TRANSITIONS,
    Mode,
    RunState,
    check_mode_change,
    check_transition,
)

# DESIGN §3, written out by hand: a change to the table must change this test too.
# Plus `skipped` (issue 15): an unfinished run whose task file is gone is closed.
EXPECTED_RUN_TRANSITIONS = {
    "idle": {"dispatching", "skipped"},
    "dispatching": {"executing", "waiting", "failed", "idle"},
    "executing": {"completed", "failed", "waiting", "idle"},
    "waiting": {"dispatching", "skipped"},
    "failed": {"idle", "skipped"},
    "completed": set(),
    "skipped": set(),
}
EXPECTED_MODE_TRANSITIONS = {
    "normal": {"degraded", "brainstem"},  # brainstem: the gateway failed, no backup key
    "degraded": {"normal", "brainstem"},
    "brainstem": {"normal", "degraded"},
}

ILLEGAL_RUN_PAIRS = [
    (old, new)
    for old, new in itertools.product(RunState, RunState)
    if new.value not in EXPECTED_RUN_TRANSITIONS[old.value]
]
ILLEGAL_MODE_PAIRS = [
    (old, new)
    for old, new in itertools.product(Mode, Mode)
    if new.value not in EXPECTED_MODE_TRANSITIONS[old.value]
]


def test_run_table_is_design_section_3() -> None:
    actual = {old.value: {new.value for new in news} for old, news in RUN_TRANSITIONS.items()}
    assert actual == EXPECTED_RUN_TRANSITIONS


def test_mode_table_is_design_section_3() -> None:
    actual = {old.value: {new.value for new in news} for old, news in MODE_TRANSITIONS.items()}
    assert actual == EXPECTED_MODE_TRANSITIONS


@pytest.mark.parametrize(
    ("old", "new"),
    [(o, n) for o, news in EXPECTED_RUN_TRANSITIONS.items() for n in sorted(news)],
)
def test_every_legal_run_transition_passes(old: str, new: str) -> None:
    check_transition(RunState(old), RunState(new))


@pytest.mark.parametrize(("old", "new"), ILLEGAL_RUN_PAIRS, ids=str)
def test_every_illegal_run_transition_names_both_states(old: RunState, new: RunState) -> None:
    with pytest.raises(IllegalTransitionError) as caught:
        check_transition(old, new)
    assert f"from {old.value} to {new.value}" in str(caught.value)


@pytest.mark.parametrize(("old", "new"), ILLEGAL_MODE_PAIRS, ids=str)
def test_every_illegal_mode_change_names_both_modes(old: Mode, new: Mode) -> None:
    with pytest.raises(IllegalTransitionError) as caught:
        check_mode_change(old, new)
    assert f"from {old.value} to {new.value}" in str(caught.value)


def test_completed_is_final_and_says_so() -> None:
    with pytest.raises(IllegalTransitionError, match=r"nothing \(final\)"):
        check_transition(RunState.COMPLETED, RunState.IDLE)


@pytest.mark.parametrize("member", [*RunState, *Mode], ids=str)
def test_enums_are_lowercase_strings(member: RunState | Mode) -> None:
    assert isinstance(member, str)
    assert member.value == member.value.lower()
    assert str(member) == member.value
    assert f"{member}" == member.value
    assert json.dumps(member) == f'"{member.value}"'
