"""The state machine: agent.states.TRANSITIONS, README's diagram, and the check on every change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.states import (
    AWAITING_USER,
    SIGN_IN_REQUIRED,
    SIGN_IN_STOPPED,
    SIGNED_IN,
    STARTING,
    STATES,
    STOPPING,
    TRANSITIONS,
    IllegalTransition,
    check_transition,
)

README = Path(__file__).resolve().parent.parent / "README.md"
EDGE = re.compile(r"^(\w+)\s+--.*-->\s+(\w+)")


def readme_edges() -> set[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    block = text.split("### States\n", 1)[1].split("```", 2)[1]
    edges = set()
    for line in block.splitlines():
        match = EDGE.match(line.strip())
        if match:
            edges.add((match.group(1), match.group(2)))
    return edges


def table_edges() -> set[tuple[str, str]]:
    return {(old, new) for old, targets in TRANSITIONS.items() for new in targets}


def test_readme_diagram_is_the_table():
    edges = readme_edges()
    assert ("any", STOPPING) in edges
    assert edges - {("any", STOPPING)} == table_edges()


def test_every_state_has_its_row_and_only_stopping_is_final():
    assert set(TRANSITIONS) == set(STATES)
    assert all(TRANSITIONS[s] for s in STATES if s != STOPPING)
    assert TRANSITIONS[STOPPING] == frozenset()


def test_the_check_allows_the_table_staying_put_and_stopping():
    for old, new in table_edges():
        check_transition(old, new)
    for state in STATES:
        check_transition(state, state)
        if state != STOPPING:
            check_transition(state, STOPPING)


@pytest.mark.parametrize("old,new", [
    (SIGNED_IN, AWAITING_USER),           # a sign-in always asks for a code first
    (SIGN_IN_STOPPED, AWAITING_USER),
    (STARTING, SIGN_IN_STOPPED),
    (STOPPING, SIGNED_IN),
    (SIGN_IN_REQUIRED, SIGNED_IN),
])
def test_a_change_not_in_the_table_is_a_programming_error(old, new):
    with pytest.raises(IllegalTransition, match=f"{old} -> {new}"):
        check_transition(old, new)


def test_the_service_checks_each_change(make_service):
    """Service.enter refuses a change the table does not have (the state stays)."""
    service = make_service()
    with pytest.raises(IllegalTransition):
        service.enter(SIGN_IN_STOPPED)
    assert service.state == STARTING


def test_the_history_of_a_sign_in_follows_the_table(make_service, idp):
    idp.auto_approve_after_polls = 1
    service = make_service()
    assert service.run_until(lambda s: s.state == SIGNED_IN, 5000)
    assert service.history[:4] == [STARTING, SIGN_IN_REQUIRED, AWAITING_USER, SIGNED_IN]
    for old, new in zip(service.history, service.history[1:]):
        assert new in TRANSITIONS[old] or new in (old, STOPPING)
