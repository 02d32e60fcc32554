"""A restart of the control plane in the middle of the flow: state, keys and jobs survive it; an interrupted
job is failed with a log item or run again, never left STARTED."""

from __future__ import annotations

import time

from .conftest import Api, ServerFactory, make_api
from .waiting import log_events, wait_job


def _statuses(api: Api, job_ids: list[str]) -> dict[str, str]:
    jobs = api.mgn.describe_jobs(filters={"jobIDs": job_ids})["items"]
    return {j["jobID"]: j["status"] for j in jobs}


def test_kill_and_restart_mid_flow(servers: ServerFactory) -> None:
    api = make_api(servers.new())
    template = api.mgn.create_launch_configuration_template(launchDisposition="STOPPED", tags={"keep": "me"})
    archived = api.ready_server()
    api.mgn.disconnect_from_service(sourceServerID=archived)
    api.mgn.mark_as_archived(sourceServerID=archived)
    sids = [api.ready_server() for _ in range(6)]
    jobs = [api.mgn.start_test(sourceServerIDs=[sid])["job"]["jobID"] for sid in sids]
    # Wait until the runner has picked jobs up (they wait for their snapshots, which no agent answers).
    deadline = time.monotonic() + 30
    while "STARTED" not in _statuses(api, jobs).values():
        assert time.monotonic() < deadline, "no job started"
        time.sleep(0.05)
    before = _statuses(api, jobs)

    api.server.stop(kill=True)  # kill -9: no chance to tidy up
    api.server.start()

    # The same key still works; every record is there.
    assert api.mgn.describe_launch_configuration_templates(
        launchConfigurationTemplateIDs=[template["launchConfigurationTemplateID"]])["items"][0]["tags"] == {"keep": "me"}
    archived_doc = api.mgn.describe_source_servers(filters={"sourceServerIDs": [archived]})["items"][0]
    assert archived_doc["isArchived"] is True and archived_doc["lifeCycle"]["state"] == "DISCONNECTED"
    assert {api.state(sid) for sid in sids} == {"TESTING"}

    # Interrupted jobs were failed with a JOB_CANCEL item; jobs that had not started run now.
    for sid, job_id in zip(sids, jobs, strict=True):
        if before[job_id] == "STARTED":
            job = wait_job(api.mgn, job_id, timeout=10)
            assert job["participatingServers"][0]["launchStatus"] == "FAILED"
            events = log_events(api.mgn, job_id)
            assert events[-1]["event"] == "JOB_CANCEL" and "restart" in events[-1]["eventData"]["rawError"]
        else:
            api.finish_job(sid, job_id)
            assert log_events(api.mgn, job_id)[-1]["event"] == "JOB_END"
    assert set(_statuses(api, jobs).values()) == {"COMPLETED"}

    # The flow carries on after the restart.
    sid = sids[0]
    api.mgn.change_server_life_cycle_state(sourceServerID=sid, lifeCycle={"state": "READY_FOR_CUTOVER"})
    cut = api.run_launch("start_cutover", sid)
    assert cut["status"] == "COMPLETED" and api.state(sid) == "CUTTING_OVER"
    api.mgn.change_server_life_cycle_state(sourceServerID=sid, lifeCycle={"state": "CUTOVER"})
    api.server.restart()
    assert api.state(sid) == "CUTOVER"
    api.mgn.disconnect_from_service(sourceServerID=sid)
    api.mgn.mark_as_archived(sourceServerID=sid)
    api.mgn.delete_source_server(sourceServerID=sid)
    assert api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"] == []
    # A new registration after the restart gets a fresh, unique ID.
    new = api.agent.register()["sourceServerID"]
    assert new not in sids
