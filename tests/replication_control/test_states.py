"""dataReplicationState and the numbers beside it, as a user watching DescribeSourceServers sees them while a
real agent replicates; and the replication controls (pause, resume, stop, start, retry) acting on the
replication itself, checked on the staging volume."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers import rehost_cli

from .conftest import Agent, ControlPlane, MiB, make_image, sha_file, staging_matches, wait_for, wait_quiet


class Watcher:
    """Polls DescribeSourceServers in the background and keeps every distinct dataReplicationInfo."""

    def __init__(self, cp: ControlPlane) -> None:
        self.mgn = cp.client(cp.key)
        self.seen: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for item in self.mgn.describe_source_servers(filters={})["items"]:
                info = item.get("dataReplicationInfo", {})
                if not self.seen or self.seen[-1] != info:
                    self.seen.append(info)
            self._stop.wait(0.1)

    def states(self) -> list[str]:
        out: list[str] = []
        for info in self.seen:
            if not out or out[-1] != info.get("dataReplicationState"):
                out.append(info.get("dataReplicationState", ""))
        return out


def _parse(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _seconds(iso_duration: str) -> float:
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?", iso_duration)
    assert m, iso_duration
    d, h, mi, s = (float(g or 0) for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def test_initial_sync_states_and_measurements(installer: Path, control_plane: ControlPlane, agents: list[Agent],
                                              tmp_path: Path) -> None:
    cp = control_plane
    # 40 Mbps (5 MB/s): the initial sync of 24 MiB of data takes seconds, long enough to watch.
    template = cp.mgn.describe_replication_configuration_templates()["items"][0]
    cp.mgn.update_replication_configuration_template(
        replicationConfigurationTemplateID=template["replicationConfigurationTemplateID"], bandwidthThrottling=40)
    image = make_image(tmp_path / "disk.img", 48 * MiB, [(0, 8 * MiB), (20 * MiB, 16 * MiB)])
    with Watcher(cp) as watcher:
        agent = Agent(installer, cp, str(image), tmp_path / "a")
        agents.append(agent)
        wait_for(lambda: cp.server(agent.sid)["lifeCycle"]["state"] == "READY_FOR_TEST", timeout=90,
                 what="READY_FOR_TEST")
        info = cp.wait_state(agent.sid, "CONTINUOUS")
    states = watcher.states()
    assert states[0] == "INITIATING", states
    assert "INITIAL_SYNC" in states and "CONTINUOUS" in states, states
    assert states.index("INITIATING") < states.index("INITIAL_SYNC") < states.index("CONTINUOUS"), states
    assert "STALLED" not in states, states

    # During the initial sync: replicated bytes grow, and an ETA in the future is given.
    during = [i for i in watcher.seen if i.get("dataReplicationState") == "INITIAL_SYNC" and i.get("replicatedDisks")]
    progress = [i["replicatedDisks"][0]["replicatedStorageBytes"] for i in during]
    assert any(0 < p < 48 * MiB for p in progress), progress
    assert progress == sorted(progress)
    etas = [(i["etaDateTime"], i) for i in during if i.get("etaDateTime")]
    assert etas, during
    assert all(_parse(eta) > _parse(cp.server(agent.sid)["lifeCycle"]["addedToServiceDateTime"]) for eta, _ in etas)

    # Once continuous: every byte replicated, no backlog, no ETA, a lag and the first snapshot's time.
    assert info["replicatedDisks"] == [{"deviceName": str(image), "totalStorageBytes": 48 * MiB,
                                        "replicatedStorageBytes": 48 * MiB, "rescannedStorageBytes": 0,
                                        "backloggedStorageBytes": 0}]
    assert "etaDateTime" not in info
    assert _seconds(info["lagDuration"]) < 3600
    snaps = rehost_cli("snapshot", "list", agent.sid, "--output", "json", data_dir=cp.data_dir).stdout
    taken = [_parse(s["takenAt"]) for s in json.loads(snaps)["snapshots"]]
    assert _parse(info["lastSnapshotDateTime"]) in taken  # the store's time, not the agent's (to the ms)
    lifecycle = cp.server(agent.sid)["lifeCycle"]
    assert _parse(lifecycle["firstByteDateTime"]) <= datetime.now(UTC)
    # The first snapshot holds the source's bytes.
    out = tmp_path / "snap.img"
    rehost_cli("snapshot", "export", agent.sid, "--disk", str(image), "--output", str(out), data_dir=cp.data_dir)
    assert sha_file(out) == sha_file(image)


def _sessions_ended(cp: ControlPlane, rs_id: str, sid: str) -> int:
    return cp.rs_log(rs_id).count(f"{sid} disconnected")


def _write(image: Path, offset: int, length: int) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(length))


@pytest.mark.slow
def test_pause_resume_stop_start_act_on_replication(installer: Path, control_plane: ControlPlane,
                                                    agents: list[Agent], tmp_path: Path) -> None:
    cp = control_plane
    image = make_image(tmp_path / "disk.img", 16 * MiB, [(0, 4 * MiB)])
    agent = Agent(installer, cp, str(image), tmp_path / "a")
    agents.append(agent)
    wait_for(lambda: staging_matches(cp, agent.sid, image), what="initial sync")
    info = cp.wait_state(agent.sid, "CONTINUOUS")
    rs = info["replicatorId"]

    # Paused: the agent ends its session, and a write on the source does not reach the staging volume.
    ended = _sessions_ended(cp, rs, agent.sid)
    assert cp.mgn.pause_replication(sourceServerID=agent.sid)["dataReplicationInfo"]["dataReplicationState"] == "PAUSED"
    wait_for(lambda: _sessions_ended(cp, rs, agent.sid) > ended, what="the agent to end its session")
    _write(image, 9 * MiB, 200_000)
    wait_quiet(8)  # an image file is rescanned every 2 s: four chances to send it
    assert not staging_matches(cp, agent.sid, image)
    assert cp.state(agent.sid) == "PAUSED"
    with pytest.raises(ClientError) as err:
        cp.mgn.pause_replication(sourceServerID=agent.sid)
    assert err.value.response["Error"]["Code"] == "ConflictException"
    # Resumed: the write arrives, and replication is continuous again.
    cp.mgn.resume_replication(sourceServerID=agent.sid)
    wait_for(lambda: staging_matches(cp, agent.sid, image), what="the write after resume")
    cp.wait_state(agent.sid, "CONTINUOUS")

    # Stopped: the same, until StartReplication.
    ended = _sessions_ended(cp, rs, agent.sid)
    assert cp.mgn.stop_replication(sourceServerID=agent.sid)["dataReplicationInfo"]["dataReplicationState"] == "STOPPED"
    wait_for(lambda: _sessions_ended(cp, rs, agent.sid) > ended, what="the agent to end its session")
    _write(image, 12 * MiB, 100_000)
    wait_quiet(8)
    assert not staging_matches(cp, agent.sid, image)
    assert cp.state(agent.sid) == "STOPPED"
    for refused in (cp.mgn.resume_replication, cp.mgn.stop_replication, cp.mgn.pause_replication):
        with pytest.raises(ClientError) as err:
            refused(sourceServerID=agent.sid)
        assert err.value.response["Error"]["Code"] == "ConflictException"
    assert cp.mgn.start_replication(sourceServerID=agent.sid)["dataReplicationInfo"]["dataReplicationState"] \
        == "INITIATING"
    wait_for(lambda: staging_matches(cp, agent.sid, image), what="the write after start")
    info = cp.wait_state(agent.sid, "CONTINUOUS")
    assert "dataReplicationError" not in info
    # The data is in a snapshot as well.
    snap = rehost_cli("snapshot", "create", agent.sid, "--sync", data_dir=cp.data_dir).stdout.split()[-1]
    out = tmp_path / "snap.img"
    rehost_cli("snapshot", "export", agent.sid, "--disk", str(image), "--snapshot", snap, "--output", str(out),
               data_dir=cp.data_dir)
    assert sha_file(out) == sha_file(image)


@pytest.mark.slow
def test_silent_agent_stalls_and_recovers(installer: Path, control_plane: ControlPlane, agents: list[Agent],
                                          tmp_path: Path) -> None:
    cp = control_plane
    image = make_image(tmp_path / "disk.img", 16 * MiB, [(0, 4 * MiB)])
    agent = Agent(installer, cp, str(image), tmp_path / "a")
    agents.append(agent)
    wait_for(lambda: staging_matches(cp, agent.sid, image), what="initial sync")
    cp.wait_state(agent.sid, "CONTINUOUS")
    with pytest.raises(ClientError) as err:  # only a stalled server can be retried
        cp.mgn.retry_data_replication(sourceServerID=agent.sid)
    assert err.value.response["Error"]["Code"] == "ValidationException"

    # kill -9: the agent goes silent; after the silence period replication is STALLED, AGENT_NOT_SEEN.
    agent.kill()
    _write(image, 10 * MiB, 150_000)
    info = cp.wait_state(agent.sid, "STALLED", timeout=30)
    assert info["dataReplicationError"]["error"] == "AGENT_NOT_SEEN"
    # Restarted, it catches up (the write made while it was down) and is continuous again, without error.
    agent.restart()
    wait_for(lambda: staging_matches(cp, agent.sid, image), what="catch-up after the restart")
    info = cp.wait_state(agent.sid, "CONTINUOUS")
    assert "dataReplicationError" not in info

    # A hung agent (SIGSTOP) stalls too; RetryDataReplication re-initiates replication, and once the agent
    # runs again it carries on.
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        info = cp.wait_state(agent.sid, "STALLED", timeout=30)
        assert info["dataReplicationError"]["error"] == "AGENT_NOT_SEEN"
        retried = cp.mgn.retry_data_replication(sourceServerID=agent.sid)["dataReplicationInfo"]
        assert retried["dataReplicationState"] == "INITIATING"
        assert "dataReplicationError" not in retried
        _write(image, 2 * MiB, 50_000)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: staging_matches(cp, agent.sid, image), what="catch-up after the retry")
    info = cp.wait_state(agent.sid, "CONTINUOUS")
    assert "dataReplicationError" not in info


def test_periodic_snapshots_advance_last_snapshot(installer: Path, tmp_path: Path) -> None:
    """The replication server snapshots on its own while data changes (every 3 s here, MGN's 10 minutes by
    default); DescribeSourceServers shows the newest one as lastSnapshotDateTime, and it holds the change."""
    from .conftest import _start_control_plane, _stop_control_plane

    cp = _start_control_plane(tmp_path, "--snapshot-interval", "3")
    agent = None
    try:
        image = make_image(tmp_path / "disk.img", 8 * MiB, [(0, 2 * MiB)])
        agent = Agent(installer, cp, str(image), tmp_path / "a")
        wait_for(lambda: cp.server(agent.sid)["lifeCycle"]["state"] == "READY_FOR_TEST", timeout=90,
                 what="READY_FOR_TEST")
        first = _parse(cp.replication(agent.sid)["lastSnapshotDateTime"])
        _write(image, 5 * MiB, 8192)  # the agent's periodic rescan sends it; no one asks for a snapshot
        later = wait_for(lambda: (t := _parse(cp.replication(agent.sid)["lastSnapshotDateTime"])) > first and t,
                         timeout=60, what="a newer lastSnapshotDateTime")
        listed = json.loads(rehost_cli("snapshot", "list", agent.sid, "--output", "json", data_dir=cp.data_dir).stdout)
        newest = max(listed["snapshots"], key=lambda s: s["takenAt"])
        assert abs((_parse(newest["takenAt"]) - later).total_seconds()) < 0.001
        out = tmp_path / "snap.img"
        rehost_cli("snapshot", "export", agent.sid, "--disk", str(image), "--snapshot", newest["snapshotID"],
                   "--output", str(out), data_dir=cp.data_dir)
        assert sha_file(out) == sha_file(image)
        assert cp.server(agent.sid)["lifeCycle"]["state"] == "READY_FOR_TEST"
    finally:
        if agent is not None:
            agent.stop()
        _stop_control_plane(cp)
