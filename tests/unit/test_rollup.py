"""The aggregated status of applications and waves (`rehost.domain.rollup`) and the full table of moves
ChangeServerLifeCycleState accepts (`rehost.domain.lifecycle`)."""

from __future__ import annotations

from typing import Any

import pytest

from rehost.domain import rollup
from rehost.domain.lifecycle import LifeCycleState, change_trigger, transition
from rehost.errors import Conflict


def _server(state: str, replication: str = "CONTINUOUS", **life: Any) -> dict[str, Any]:
    return {"lifeCycle": {"state": state, **life}, "dataReplicationInfo": {"dataReplicationState": replication}}


def test_progress_from_lifecycle_states() -> None:
    assert rollup.progress_status([]) == "NOT_STARTED"
    assert rollup.progress_status([_server("NOT_READY"), _server("READY_FOR_TEST")]) == "NOT_STARTED"
    assert rollup.progress_status([_server("READY_FOR_TEST"), _server("TESTING")]) == "IN_PROGRESS"
    # Reverted to ready for testing after a test: the migration has started.
    tested = _server("READY_FOR_TEST", lastTest={"initiated": {"jobID": "mgnjob-1"}})
    assert rollup.progress_status([tested]) == "IN_PROGRESS"
    assert rollup.progress_status([_server("CUTOVER"), _server("CUTTING_OVER")]) == "IN_PROGRESS"
    finalized = _server("DISCONNECTED", lastCutover={"finalized": {"apiCallDateTime": "2024-01-01T00:00:00Z"}})
    assert rollup.progress_status([_server("CUTOVER"), finalized]) == "COMPLETED"
    assert rollup.progress_status([_server("CUTOVER"), _server("DISCONNECTED")]) == "IN_PROGRESS"


def test_health_from_replication_of_servers_still_replicating() -> None:
    assert rollup.health_status([]) == "HEALTHY"
    assert rollup.health_status([_server("READY_FOR_TEST"), _server("NOT_READY", "INITIAL_SYNC")]) == "HEALTHY"
    assert rollup.health_status([_server("READY_FOR_TEST"), _server("TESTING", "BACKLOG")]) == "LAGGING"
    assert rollup.health_status([_server("TESTING", "RESCAN"), _server("TESTING", "STALLED")]) == "ERROR"
    errored = _server("NOT_READY", "INITIATING")
    errored["dataReplicationInfo"]["dataReplicationError"] = {"error": "FAILED_TO_LAUNCH_REPLICATION_SERVER"}
    assert rollup.health_status([errored]) == "ERROR"
    # Cut over, disconnected or archived: their replication is over and no longer counts.
    archived = dict(_server("READY_FOR_TEST", "STALLED"), isArchived=True)
    assert rollup.health_status([_server("CUTOVER", "DISCONNECTED"), _server("DISCONNECTED", "STALLED"),
                                 archived]) == "HEALTHY"


def test_replication_started_is_the_first_byte_of_any_server() -> None:
    a = _server("NOT_READY", firstByteDateTime="2024-01-02T00:00:00.000000Z")
    b = _server("NOT_READY", firstByteDateTime="2024-01-01T00:00:00.000000Z")
    assert rollup.replication_started([a, b, _server("NOT_READY")]) == "2024-01-01T00:00:00.000000Z"
    assert rollup.replication_started([_server("NOT_READY")]) is None


S = LifeCycleState
# ChangeServerLifeCycleState: (from, requested) -> new state. Every pair not listed is a ConflictException.
ACCEPTED = {
    (S.TESTING, "READY_FOR_TEST"): S.READY_FOR_TEST,
    (S.READY_FOR_CUTOVER, "READY_FOR_TEST"): S.READY_FOR_TEST,
    (S.TESTING, "READY_FOR_CUTOVER"): S.READY_FOR_CUTOVER,
    (S.CUTTING_OVER, "READY_FOR_CUTOVER"): S.READY_FOR_CUTOVER,
    (S.CUTTING_OVER, "CUTOVER"): S.CUTOVER,
    (S.DISCONNECTED, "CUTOVER"): S.CUTOVER,  # Cloud Migration Factory's finalize, after DisconnectFromService
}


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("requested", ["READY_FOR_TEST", "READY_FOR_CUTOVER", "CUTOVER"])
def test_change_server_life_cycle_state_table(current: LifeCycleState, requested: str) -> None:
    expected = ACCEPTED.get((current, requested))
    if expected is None:
        with pytest.raises(Conflict):
            transition(current, change_trigger(current, requested), resource_id="s-1")
    else:
        assert transition(current, change_trigger(current, requested), resource_id="s-1") is expected
