"""A source server's lifecycle driven through the agent API and MGN's public API, and its illegal moves."""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from .conftest import TEST_AGENT_SNAPSHOT_FAILURE, Api
from .waiting import log_events, wait_job

SERVER_ID = re.compile(r"^s-[0-9a-zA-Z]{17}$")
JOB_ID = re.compile(r"^mgnjob-[0-9a-zA-Z]{17}$")


def _change(api: Api, sid: str, state: str) -> dict:
    return api.mgn.change_server_life_cycle_state(sourceServerID=sid, lifeCycle={"state": state})


def _conflict(call, *args, **kwargs) -> ClientError:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    assert info.value.response["Error"]["Code"] == "ConflictException", info.value.response
    return info.value


def test_registration_creates_a_not_ready_server_in_mgn_formats(api: Api) -> None:
    reg = api.agent.register("web-1", tags={"team": "blue"})
    sid = reg["sourceServerID"]
    assert SERVER_ID.match(sid) and reg["isNew"] is True
    server = api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]
    account = server["arn"].split(":")[4]
    assert re.fullmatch(r"\d{12}", account)
    assert server["arn"] == f"arn:aws:mgn:us-east-1:{account}:source-server/{sid}"
    assert server["lifeCycle"]["state"] == "NOT_READY"
    assert server["isArchived"] is False and server["replicationType"] == "AGENT_BASED"
    assert server["sourceProperties"]["identificationHints"]["hostname"] == "web-1"
    assert server["sourceProperties"]["disks"] == [{"deviceName": "/dev/sda", "bytes": 8 * 1024**3}]
    assert server["tags"] == {"team": "blue"}
    # The same machine (same MAC) registering again is the same source server.
    mac = server["sourceProperties"]["networkInterfaces"][0]["macAddress"]
    again = api.agent.register("web-1", mac=mac)
    assert again["sourceServerID"] == sid and again["isNew"] is False


def test_not_launchable_before_initial_sync(api: Api) -> None:
    sid = api.agent.register()["sourceServerID"]
    err = _conflict(api.mgn.start_test, sourceServerIDs=[sid])
    assert err.response["resourceId"] == sid and err.response["resourceType"] == "SOURCE_SERVER"
    _conflict(_change, api, sid, "READY_FOR_CUTOVER")
    assert api.state(sid) == "NOT_READY"


def test_full_lifecycle_to_deletion(api: Api) -> None:
    sid = api.ready_server()
    server = api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]
    assert server["lifeCycle"]["state"] == "READY_FOR_TEST"
    info = server["dataReplicationInfo"]
    assert info["dataReplicationState"] == "CONTINUOUS"
    assert info["lagDuration"].startswith("P") and info["lastSnapshotDateTime"].startswith("2024-01-01T00:00:00")
    _conflict(api.mgn.start_cutover, sourceServerIDs=[sid])  # no cutover before a test

    # StartTest: a LAUNCH job. It asks the agent for a snapshot; this agent cannot take one, so the job
    # uses the previous one (a disk of zeros), whose conversion fails: honestly, with the reasons in its
    # log, and the job completes.
    job = api.mgn.start_test(sourceServerIDs=[sid], tags={"wave": "1"})["job"]
    assert JOB_ID.match(job["jobID"]) and job["type"] == "LAUNCH" and job["initiatedBy"] == "START_TEST"
    assert job["arn"].endswith(f":job/{job['jobID']}") and job["tags"] == {"wave": "1"}
    assert job["status"] in ("PENDING", "STARTED")
    assert api.state(sid) == "TESTING"
    _conflict(_change, api, sid, "READY_FOR_CUTOVER")  # not while its job runs
    api.fail_snapshots(sid)
    done = wait_job(api.mgn, job["jobID"])
    assert done["participatingServers"] == [{"sourceServerID": sid, "launchStatus": "FAILED"}]
    assert "endDateTime" in done
    events = log_events(api.mgn, job["jobID"])
    assert [e["event"] for e in events] == ["JOB_START", "SNAPSHOT_START", "SNAPSHOT_FAIL", "USING_PREVIOUS_SNAPSHOT",
                                            "CONVERSION_START", "CONVERSION_FAIL", "JOB_END"]
    assert TEST_AGENT_SNAPSHOT_FAILURE in events[2]["eventData"]["rawError"]
    assert "partition table" in events[5]["eventData"]["rawError"]
    assert events[2]["eventData"]["sourceServerID"] == sid
    server = api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]
    assert server["lifeCycle"]["lastTest"]["initiated"]["jobID"] == job["jobID"]

    assert _change(api, sid, "READY_FOR_CUTOVER")["lifeCycle"]["state"] == "READY_FOR_CUTOVER"
    cut = api.run_launch("start_cutover", sid)
    assert cut["initiatedBy"] == "START_CUTOVER" and cut["status"] == "COMPLETED"
    assert api.state(sid) == "CUTTING_OVER"

    # Nothing was launched, so there is nothing to finalize; archiving and deleting are too early.
    _conflict(api.mgn.finalize_cutover, sourceServerID=sid)
    _conflict(api.mgn.mark_as_archived, sourceServerID=sid)
    _conflict(api.mgn.delete_source_server, sourceServerID=sid)
    _conflict(api.mgn.terminate_target_instances, sourceServerIDs=[sid])

    after = _change(api, sid, "CUTOVER")
    assert after["lifeCycle"]["state"] == "CUTOVER"
    assert "finalized" in after["lifeCycle"]["lastCutover"]
    gone = api.mgn.disconnect_from_service(sourceServerID=sid)
    assert gone["lifeCycle"]["state"] == "DISCONNECTED"
    assert gone["dataReplicationInfo"]["dataReplicationState"] == "DISCONNECTED"
    # The agent is told to go away.
    assert api.agent.call("GetAgentReplicationInfoForMgn", {"sourceServerID": sid})["replicationState"] == "DISCONNECTED"
    commands = api.agent.call("GetAgentCommandForMgn", {"sourceServerID": sid})["commands"]
    assert "DISCONNECT" in [c["type"] for c in commands]

    archived = api.mgn.mark_as_archived(sourceServerID=sid)
    assert archived["isArchived"] is True
    listed = api.mgn.describe_source_servers(filters={"isArchived": True})["items"]
    assert sid in [s["sourceServerID"] for s in listed]
    not_archived = api.mgn.describe_source_servers(filters={"isArchived": False})["items"]
    assert sid not in [s["sourceServerID"] for s in not_archived]
    _conflict(api.mgn.start_test, sourceServerIDs=[sid])
    _conflict(api.mgn.update_launch_configuration, sourceServerID=sid, name="x")

    api.mgn.delete_source_server(sourceServerID=sid)
    assert api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"] == []
    with pytest.raises(api.mgn.exceptions.ResourceNotFoundException):
        api.mgn.get_launch_configuration(sourceServerID=sid)


def test_reverts(api: Api) -> None:
    sid = api.ready_server()
    api.run_launch("start_test", sid)
    back = _change(api, sid, "READY_FOR_TEST")
    assert back["lifeCycle"]["state"] == "READY_FOR_TEST" and "reverted" in back["lifeCycle"]["lastTest"]
    # StartTest again, mark ready for cutover, then revert that too.
    api.run_launch("start_test", sid)
    _change(api, sid, "READY_FOR_CUTOVER")
    assert _change(api, sid, "READY_FOR_TEST")["lifeCycle"]["state"] == "READY_FOR_TEST"
    api.run_launch("start_test", sid)
    _change(api, sid, "READY_FOR_CUTOVER")
    api.run_launch("start_cutover", sid)
    reverted = _change(api, sid, "READY_FOR_CUTOVER")
    assert reverted["lifeCycle"]["state"] == "READY_FOR_CUTOVER"
    assert "reverted" in reverted["lifeCycle"]["lastCutover"]


def test_illegal_moves_are_conflicts(api: Api) -> None:
    sid = api.ready_server()
    _conflict(_change, api, sid, "CUTOVER")             # READY_FOR_TEST -> CUTOVER
    _conflict(_change, api, sid, "READY_FOR_CUTOVER")   # not tested yet
    _conflict(api.mgn.mark_as_archived, sourceServerID=sid)
    _conflict(api.mgn.delete_source_server, sourceServerID=sid)
    _conflict(api.mgn.finalize_cutover, sourceServerID=sid)
    api.run_launch("start_test", sid)
    _conflict(api.mgn.terminate_target_instances, sourceServerIDs=[sid])  # refused while TESTING
    _conflict(api.mgn.start_cutover, sourceServerIDs=[sid])
    _conflict(_change, api, sid, "CUTOVER")
    _change(api, sid, "READY_FOR_CUTOVER")
    # READY_FOR_CUTOVER with nothing launched: nothing to terminate.
    _conflict(api.mgn.terminate_target_instances, sourceServerIDs=[sid])
    assert api.state(sid) == "READY_FOR_CUTOVER"
    api.mgn.disconnect_from_service(sourceServerID=sid)
    _conflict(api.mgn.disconnect_from_service, sourceServerID=sid)
    _conflict(_change, api, sid, "READY_FOR_TEST")


def test_unknown_server_is_resource_not_found(api: Api) -> None:
    missing = "s-0000000000000000a"
    for call in (api.mgn.disconnect_from_service, api.mgn.mark_as_archived, api.mgn.delete_source_server,
                 api.mgn.get_replication_configuration, api.mgn.finalize_cutover):
        with pytest.raises(api.mgn.exceptions.ResourceNotFoundException) as info:
            call(sourceServerID=missing)
        assert info.value.response["Error"]["Message"]
