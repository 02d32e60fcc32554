"""The lifecycle transition table: MGN's moves are allowed, everything else is a Conflict."""

from __future__ import annotations

import pytest

from rehost.domain.lifecycle import TRANSITIONS, LifeCycleState, Trigger, change_trigger, transition
from rehost.errors import Conflict

S = LifeCycleState


def test_the_hands_on_path_walks_every_state() -> None:
    state = S.NOT_READY
    for trigger, expected in [
        (Trigger.INITIAL_SYNC_DONE, S.READY_FOR_TEST),
        (Trigger.START_TEST, S.TESTING),
        (Trigger.MARK_READY_FOR_CUTOVER, S.READY_FOR_CUTOVER),
        (Trigger.START_CUTOVER, S.CUTTING_OVER),
        (Trigger.FINALIZE_CUTOVER, S.CUTOVER),
    ]:
        state = transition(state, trigger)
        assert state is expected


@pytest.mark.parametrize("state", list(S))
def test_every_state_but_disconnected_can_disconnect(state: LifeCycleState) -> None:
    if state is S.DISCONNECTED:
        with pytest.raises(Conflict):
            transition(state, Trigger.DISCONNECT)
    else:
        assert transition(state, Trigger.DISCONNECT) is S.DISCONNECTED


def test_reverts() -> None:
    assert transition(S.TESTING, change_trigger(S.TESTING, "READY_FOR_TEST")) is S.READY_FOR_TEST
    assert transition(S.READY_FOR_CUTOVER, change_trigger(S.READY_FOR_CUTOVER, "READY_FOR_TEST")) is S.READY_FOR_TEST
    assert transition(S.CUTTING_OVER, change_trigger(S.CUTTING_OVER, "READY_FOR_CUTOVER")) is S.READY_FOR_CUTOVER


@pytest.mark.parametrize(("state", "trigger"), [
    (S.NOT_READY, Trigger.START_TEST),
    (S.READY_FOR_TEST, Trigger.START_CUTOVER),
    (S.TESTING, Trigger.FINALIZE_CUTOVER),
    (S.CUTOVER, Trigger.START_TEST),
    (S.DISCONNECTED, Trigger.INITIAL_SYNC_DONE),
])
def test_illegal_moves_are_conflicts_naming_the_server(state: LifeCycleState, trigger: Trigger) -> None:
    with pytest.raises(Conflict) as exc:
        transition(state, trigger, resource_id="s-0123456789abcdef0")
    assert "s-0123456789abcdef0" in exc.value.message
    assert exc.value.resource_type == "SOURCE_SERVER"


def test_table_only_names_known_states() -> None:
    for (trigger, source), target in TRANSITIONS.items():
        assert isinstance(trigger, Trigger) and isinstance(source, S) and isinstance(target, S)
