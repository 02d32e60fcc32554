"""MGN's source server lifecycle as one declared transition table (mgn-reference.md §2.1).

Every change of ``lifeCycle.state`` goes through :func:`transition`; an illegal move raises
:class:`rehost.errors.Conflict`, which the API answers as ConflictException.
"""

from __future__ import annotations

from enum import StrEnum

from rehost.errors import Conflict


class LifeCycleState(StrEnum):
    NOT_READY = "NOT_READY"
    READY_FOR_TEST = "READY_FOR_TEST"
    TESTING = "TESTING"
    READY_FOR_CUTOVER = "READY_FOR_CUTOVER"
    CUTTING_OVER = "CUTTING_OVER"
    CUTOVER = "CUTOVER"
    DISCONNECTED = "DISCONNECTED"


class Trigger(StrEnum):
    """What moves a server: an API call or an event of replication."""

    INITIAL_SYNC_DONE = "initial sync complete with a launchable snapshot"
    START_TEST = "StartTest"
    MARK_READY_FOR_CUTOVER = "ChangeServerLifeCycleState(READY_FOR_CUTOVER)"
    REVERT_TO_READY_FOR_TEST = "ChangeServerLifeCycleState(READY_FOR_TEST)"
    START_CUTOVER = "StartCutover"
    REVERT_TO_READY_FOR_CUTOVER = "ChangeServerLifeCycleState(READY_FOR_CUTOVER) from cutover"
    FINALIZE_CUTOVER = "FinalizeCutover"
    CHANGE_TO_CUTOVER = "ChangeServerLifeCycleState(CUTOVER)"
    DISCONNECT = "DisconnectFromService"


S = LifeCycleState
_ANY_CONNECTED = (S.NOT_READY, S.READY_FOR_TEST, S.TESTING, S.READY_FOR_CUTOVER, S.CUTTING_OVER, S.CUTOVER)

# (trigger, from-state) -> to-state. The one place that says which moves exist.
TRANSITIONS: dict[tuple[Trigger, LifeCycleState], LifeCycleState] = {
    (Trigger.INITIAL_SYNC_DONE, S.NOT_READY): S.READY_FOR_TEST,
    (Trigger.START_TEST, S.READY_FOR_TEST): S.TESTING,
    (Trigger.START_TEST, S.TESTING): S.TESTING,  # a new test instance replaces the previous one
    (Trigger.START_TEST, S.READY_FOR_CUTOVER): S.TESTING,
    (Trigger.MARK_READY_FOR_CUTOVER, S.TESTING): S.READY_FOR_CUTOVER,
    (Trigger.REVERT_TO_READY_FOR_TEST, S.TESTING): S.READY_FOR_TEST,
    (Trigger.REVERT_TO_READY_FOR_TEST, S.READY_FOR_CUTOVER): S.READY_FOR_TEST,
    (Trigger.START_CUTOVER, S.READY_FOR_CUTOVER): S.CUTTING_OVER,
    (Trigger.START_CUTOVER, S.CUTTING_OVER): S.CUTTING_OVER,  # relaunch after a failed cutover launch
    (Trigger.REVERT_TO_READY_FOR_CUTOVER, S.CUTTING_OVER): S.READY_FOR_CUTOVER,
    (Trigger.FINALIZE_CUTOVER, S.CUTTING_OVER): S.CUTOVER,
    (Trigger.CHANGE_TO_CUTOVER, S.CUTTING_OVER): S.CUTOVER,
    # Cloud Migration Factory's finalize: DisconnectFromService, then mark the server cut over (MGN accepts
    # it for a server whose cutover instance was launched; the service checks that).
    (Trigger.CHANGE_TO_CUTOVER, S.DISCONNECTED): S.CUTOVER,
    **{(Trigger.DISCONNECT, state): S.DISCONNECTED for state in _ANY_CONNECTED},
}

# Console words (MGN's console labels).
CONSOLE_LABELS: dict[LifeCycleState, str] = {
    S.NOT_READY: "Not ready",
    S.READY_FOR_TEST: "Ready for testing",
    S.TESTING: "Test in progress",
    S.READY_FOR_CUTOVER: "Ready for cutover",
    S.CUTTING_OVER: "Cutover in progress",
    S.CUTOVER: "Cutover complete",
    S.DISCONNECTED: "Disconnected",
}


def transition(current: LifeCycleState | str, trigger: Trigger, *, resource_id: str = "") -> LifeCycleState:
    """The state ``trigger`` moves a server in ``current`` to, or Conflict if the move is illegal."""
    state = LifeCycleState(current)
    try:
        return TRANSITIONS[(trigger, state)]
    except KeyError:
        raise Conflict(
            f"Source server {resource_id} is in lifecycle state {state.value}; {trigger.value} is not allowed from it.".replace(
                "server  is", "server is"
            ),
            resource_id=resource_id,
            resource_type="SOURCE_SERVER",
        ) from None


def allowed(current: LifeCycleState | str, trigger: Trigger) -> bool:
    return (trigger, LifeCycleState(current)) in TRANSITIONS


def change_trigger(current: LifeCycleState | str, requested: str) -> Trigger:
    """Which trigger ChangeServerLifeCycleState(requested) means from ``current``."""
    state = LifeCycleState(current)
    if requested == "READY_FOR_TEST":
        return Trigger.REVERT_TO_READY_FOR_TEST
    if requested == "READY_FOR_CUTOVER":
        return Trigger.REVERT_TO_READY_FOR_CUTOVER if state is S.CUTTING_OVER else Trigger.MARK_READY_FOR_CUTOVER
    if requested == "CUTOVER":
        return Trigger.CHANGE_TO_CUTOVER
    from rehost.errors import InvalidInput

    raise InvalidInput(f"Unknown lifecycle state {requested!r}")
