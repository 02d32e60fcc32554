"""A launch job's snapshot step against a real agent: with the agent connected the job takes a fresh snapshot
that holds the source's latest write (SNAPSHOT_START, SNAPSHOT_END); with the agent stopped it fails to
(SNAPSHOT_FAIL) and uses the previous one (USING_PREVIOUS_SNAPSHOT). The image does not boot, so the jobs
then fail at conversion: this test is about the order of the log, not about launching."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from helpers import rehost_cli

from .conftest import Agent, ControlPlane, MiB, make_image, sha_file, staging_matches, wait_for, wait_quiet


def _run_test_job(cp: ControlPlane, sid: str) -> list[dict[str, Any]]:
    job = cp.mgn.start_test(sourceServerIDs=[sid])["job"]
    wait_for(lambda: cp.mgn.describe_jobs(filters={"jobIDs": [job["jobID"]]})["items"][0]["status"] == "COMPLETED",
             timeout=90, what="the job to complete")
    return cp.mgn.describe_job_log_items(jobID=job["jobID"])["items"]


def _snapshots(cp: ControlPlane, sid: str) -> list[str]:
    out = rehost_cli("snapshot", "list", sid, "--output", "json", data_dir=cp.data_dir).stdout
    return [s["snapshotID"] for s in json.loads(out)["snapshots"]]


@pytest.mark.slow
def test_job_snapshot_fresh_then_previous(installer: Path, control_plane: ControlPlane, agents: list[Agent],
                                          tmp_path: Path) -> None:
    cp = control_plane
    image = make_image(tmp_path / "disk.img", 16 * MiB, [(0, 4 * MiB)])
    agent = Agent(installer, cp, str(image), tmp_path / "a")
    agents.append(agent)
    wait_for(lambda: cp.server(agent.sid)["lifeCycle"]["state"] == "READY_FOR_TEST", what="READY_FOR_TEST")
    wait_for(lambda: staging_matches(cp, agent.sid, image), what="initial sync")
    before = _snapshots(cp, agent.sid)

    # The agent is connected: the job's snapshot is fresh and holds a write made just before StartTest.
    with open(image, "r+b") as f:
        f.seek(7 * MiB)
        f.write(os.urandom(300_000))
    events = [i["event"] for i in _run_test_job(cp, agent.sid)]
    assert events[:3] == ["JOB_START", "SNAPSHOT_START", "SNAPSHOT_END"], events
    assert events[3] == "CONVERSION_START" and events[-1] == "JOB_END", events
    assert "SNAPSHOT_FAIL" not in events and "USING_PREVIOUS_SNAPSHOT" not in events
    after = _snapshots(cp, agent.sid)
    assert len(after) == len(before) + 1 and after[1:] == before
    fresh = tmp_path / "fresh.img"
    rehost_cli("snapshot", "export", agent.sid, "--disk", str(image), "--snapshot", after[0], "--output", str(fresh),
               data_dir=cp.data_dir)
    assert sha_file(fresh) == sha_file(image)

    # The agent is stopped: the snapshot request times out and the job uses the previous snapshot.
    assert agent.stop() == 0
    events = [i["event"] for i in _run_test_job(cp, agent.sid)]
    assert events[:5] == ["JOB_START", "SNAPSHOT_START", "SNAPSHOT_FAIL", "USING_PREVIOUS_SNAPSHOT",
                          "CONVERSION_START"], events
    assert _snapshots(cp, agent.sid) == after
    # The request the job gave up on is not acted on later: a restarted agent takes no snapshot for it.
    agent.restart()
    cp.wait_state(agent.sid, "CONTINUOUS")
    wait_quiet(4)  # commands are polled every 2 s and run between replication cycles
    assert _snapshots(cp, agent.sid) == after
