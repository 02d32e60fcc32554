"""What the control plane records about snapshots comes from the chunk store, not from an agent's word.

A real `rehost server`; the test plays the agent over the agent API and takes snapshots for real in the
server's chunk store (the replication servers' way of taking them is tested in tests/replication_control).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from api.agentapi import AgentClient, store_snapshot
from helpers import RunningServer

from .conftest import served


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[RunningServer, Any, AgentClient]]:
    with served() as parts:
        yield parts


def _server(mgn: Any, sid: str) -> dict[str, Any]:
    return dict(mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0])


def test_a_snapshot_the_store_does_not_hold_makes_nothing_launchable(env: tuple[RunningServer, Any, AgentClient]) -> None:
    server, mgn, agent = env
    sid = agent.register("liar")["sourceServerID"]
    other = agent.register("other")["sourceServerID"]
    others_snapshot = store_snapshot(server.data_dir, other, "2024-02-01T00:00:00.000000Z")
    # never taken; another server's; both are ignored, and the rest of each report is applied
    for snapshot_id in ("snap-0123456789abcdef0", others_snapshot):
        agent.report_synced(sid, snapshot_id=snapshot_id)
        doc = _server(mgn, sid)
        assert doc["lifeCycle"]["state"] == "NOT_READY"
        assert "lastSnapshotDateTime" not in doc["dataReplicationInfo"]
        assert doc["dataReplicationInfo"]["dataReplicationState"] == "CONTINUOUS"
    with pytest.raises(mgn.exceptions.ConflictException, match='NOT_READY'):
        mgn.start_test(sourceServerIDs=[sid])
    assert "snap-0123456789abcdef0" in (server.data_dir.parent / f"server-{server.port}.log").read_text()


def test_the_recorded_time_is_the_stores_not_the_agents(env: tuple[RunningServer, Any, AgentClient]) -> None:
    server, mgn, agent = env
    sid = agent.register("honest")["sourceServerID"]
    snapshot_id = store_snapshot(server.data_dir, sid, "2024-03-04T05:06:07.000000Z")
    agent.report_synced(sid, snapshot_id=snapshot_id, when="2030-01-01T00:00:00.000000Z")  # a wrong time
    doc = _server(mgn, sid)
    assert doc["lifeCycle"]["state"] == "READY_FOR_TEST"
    assert doc["dataReplicationInfo"]["lastSnapshotDateTime"].startswith("2024-03-04T05:06:07")
    resume = agent.call("GetAgentConfirmedResumeInfoForMgn", {"sourceServerID": sid})
    assert resume["lastSnapshot"]["snapshotID"] == snapshot_id
