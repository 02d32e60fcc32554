"""An agent that loses its replication server reports STALLED with MGN's error, and recovers."""

from __future__ import annotations

import pytest

from .agentapi import AgentApiError
from .conftest import Api


def _info(api: Api, sid: str) -> dict:
    return api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]["dataReplicationInfo"]


def test_stalled_with_an_error_then_continuous_again(api: Api) -> None:
    sid = api.ready_server()
    api.agent.call("UpdateAgentReplicationInfoForMgn", {
        "sourceServerID": sid, "dataReplicationState": "STALLED",
        "error": {"error": "FAILED_TO_CONNECT_AGENT_TO_REPLICATION_SERVER", "rawError": "connection refused"}})
    info = _info(api, sid)
    assert info["dataReplicationState"] == "STALLED"
    assert info["dataReplicationError"] == {"error": "FAILED_TO_CONNECT_AGENT_TO_REPLICATION_SERVER",
                                            "rawError": "connection refused"}
    api.agent.call("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "dataReplicationState": "CONTINUOUS"})
    info = _info(api, sid)
    assert info["dataReplicationState"] == "CONTINUOUS"
    assert "dataReplicationError" not in info


def test_stalled_without_a_reason_is_refused(api: Api) -> None:
    sid = api.ready_server()
    with pytest.raises(AgentApiError) as exc:
        api.agent.call("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "dataReplicationState": "STALLED"})
    assert exc.value.code == "ValidationException"
    with pytest.raises(AgentApiError) as exc:
        api.agent.call("UpdateAgentReplicationInfoForMgn", {
            "sourceServerID": sid, "dataReplicationState": "STALLED", "error": {"error": "SOMETHING_ELSE"}})
    assert exc.value.code == "ValidationException"
    assert _info(api, sid)["dataReplicationState"] == "CONTINUOUS"
