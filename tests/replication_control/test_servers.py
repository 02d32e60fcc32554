"""Replication servers as the replication configuration asks: source servers with identical settings share
one `rehost replication-server` process, `useDedicatedReplicationServer` gives a server its own; every
initiation step has SUCCEEDED once the agent replicates; DisconnectFromService stops a replication server
no source server uses any more and deletes the staging volumes."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from .conftest import Agent, ControlPlane, MiB, make_image, staging_matches, wait_for

STEPS = ("LAUNCH_REPLICATION_SERVER", "BOOT_REPLICATION_SERVER", "AUTHENTICATE_WITH_SERVICE", "CREATE_STAGING_DISKS",
         "PAIR_REPLICATION_SERVER_WITH_AGENT", "CONNECT_AGENT_TO_REPLICATION_SERVER", "START_DATA_TRANSFER")


def _replicating(cp: ControlPlane, agent: Agent, image: Path) -> dict:
    wait_for(lambda: staging_matches(cp, agent.sid, image), what=f"{agent.sid}'s staging volume")
    return cp.wait_state(agent.sid, "CONTINUOUS")


def _agents_on_images(installer: Path, cp: ControlPlane, agents: list[Agent], tmp_path: Path,
                      count: int) -> tuple[list[Path], list[Agent]]:
    """`count` 8 MiB images with 2 MiB of data each, an agent installed on each."""
    images = [make_image(tmp_path / f"disk{i}.img", 8 * MiB, [(i * MiB, 2 * MiB)], seed=i) for i in range(count)]
    started = [Agent(installer, cp, str(image), tmp_path / name) for image, name in zip(images[:2], "ab"[:count], strict=True)]
    agents.extend(started)
    return images, started


def test_shared_and_dedicated_replication_servers(installer: Path, control_plane: ControlPlane, agents: list[Agent],
                                                  tmp_path: Path) -> None:
    cp = control_plane
    images, (a, b) = _agents_on_images(installer, cp, agents, tmp_path, 3)
    assert a.sid != b.sid
    info_a, info_b = _replicating(cp, a, images[0]), _replicating(cp, b, images[1])
    # Identical settings: one replication server for both.
    assert info_a["replicatorId"] == info_b["replicatorId"]
    shared = info_a["replicatorId"]
    assert list(cp.replication_servers()) == [shared]
    for info in (info_a, info_b):
        steps = {s["name"]: s["status"] for s in info["dataReplicationInitiation"]["steps"]}
        assert all(steps[name] == "SUCCEEDED" for name in STEPS), steps
        assert "dataReplicationError" not in info

    # A server added with the dedicated flag gets a replication server of its own.
    template = cp.mgn.describe_replication_configuration_templates()["items"][0]
    cp.mgn.update_replication_configuration_template(
        replicationConfigurationTemplateID=template["replicationConfigurationTemplateID"],
        useDedicatedReplicationServer=True)
    c = Agent(installer, cp, str(images[2]), tmp_path / "c")
    agents.append(c)
    assert c.sid not in (a.sid, b.sid)
    assert cp.mgn.get_replication_configuration(sourceServerID=c.sid)["useDedicatedReplicationServer"] is True
    info_c = _replicating(cp, c, images[2])
    dedicated = info_c["replicatorId"]
    assert dedicated != shared
    assert sorted(cp.replication_servers()) == sorted([shared, dedicated])
    assert f"{c.sid} connected" in cp.rs_log(dedicated) and f"{c.sid} connected" not in cp.rs_log(shared)
    assert f"{a.sid} connected" in cp.rs_log(shared) and f"{b.sid} connected" in cp.rs_log(shared)

    # Disconnecting the dedicated server's only user stops it and deletes that server's staging.
    disconnected = cp.mgn.disconnect_from_service(sourceServerID=c.sid)
    assert disconnected["dataReplicationInfo"]["dataReplicationState"] == "DISCONNECTED"
    assert disconnected["lifeCycle"]["state"] == "DISCONNECTED"
    wait_for(lambda: dedicated not in cp.replication_servers(), what="the dedicated replication server to stop")
    assert c.proc.wait(timeout=30) == 0  # the agent was told to disconnect and shut down cleanly
    assert not (cp.data_dir / "staging" / c.sid).exists()
    assert cp.state(c.sid) == "DISCONNECTED"

    # The shared one keeps running while one of its servers still replicates, and its data still flows.
    cp.mgn.disconnect_from_service(sourceServerID=a.sid)
    assert a.proc.wait(timeout=30) == 0
    assert not (cp.data_dir / "staging" / a.sid).exists()
    assert list(cp.replication_servers()) == [shared]
    with open(images[1], "r+b") as f:
        f.seek(6 * MiB)
        f.write(b"\x5a" * 100_000)
    wait_for(lambda: staging_matches(cp, b.sid, images[1]), what="a write after the other server left")
    cp.mgn.disconnect_from_service(sourceServerID=b.sid)
    wait_for(lambda: not cp.replication_servers(), what="the shared replication server to stop")
    assert b.proc.wait(timeout=30) == 0
    assert not (cp.data_dir / "staging" / b.sid).exists()
    assert cp.state(a.sid) == cp.state(b.sid) == "DISCONNECTED"


def test_killed_replication_server_restarts_on_its_port(installer: Path, control_plane: ControlPlane,
                                                         agents: list[Agent], tmp_path: Path) -> None:
    """kill -9 of a replication server: the control plane starts it again on the same port (agents and
    port forwards keep reaching it where they did), and replication carries on each time."""
    cp = control_plane
    image = make_image(tmp_path / "disk.img", 8 * MiB, [(0, 2 * MiB)])
    agent = Agent(installer, cp, str(image), tmp_path / "a")
    agents.append(agent)
    rs = _replicating(cp, agent, image)["replicatorId"]
    for round_ in range(3):
        pid = cp.replication_servers()[rs]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda old=pid: cp.replication_servers().get(rs, old) != old, what="the replication server's restart")
        with open(image, "r+b") as f:
            f.seek((3 + round_) * MiB)
            f.write(os.urandom(70_000))
        wait_for(lambda: staging_matches(cp, agent.sid, image), what=f"replication after restart {round_ + 1}")
    ports = re.findall(r"^listening on 127\.0\.0\.1:(\d+)$", cp.rs_log(rs), re.M)
    assert len(ports) == 4 and len(set(ports)) == 1, ports
    assert cp.state(agent.sid) != "STALLED"


def test_changing_to_a_dedicated_replication_server_moves_a_replicating_server(
        installer: Path, control_plane: ControlPlane, agents: list[Agent], tmp_path: Path) -> None:
    """UpdateReplicationConfiguration(useDedicatedReplicationServer) on a server that replicates: its agent
    reconnects to a replication server of its own, which opens the same staging volumes (no resync), the
    other server stays where it was, and changing back stops the dedicated one again."""
    cp = control_plane
    images, (a, b) = _agents_on_images(installer, cp, agents, tmp_path, 2)
    shared = _replicating(cp, a, images[0])["replicatorId"]
    assert _replicating(cp, b, images[1])["replicatorId"] == shared

    cp.mgn.update_replication_configuration(sourceServerID=a.sid, useDedicatedReplicationServer=True)
    moved = wait_for(lambda: (rid := cp.replication(a.sid).get("replicatorId")) != shared and rid,
                     timeout=60, what=f"{a.sid} on a dedicated replication server")
    wait_for(lambda: sorted(cp.replication_servers()) == sorted([shared, moved]), what="two replication servers")
    for i, agent in enumerate((a, b)):
        with open(images[i], "r+b") as f:
            f.seek(6 * MiB)
            f.write(os.urandom(100_000))
        wait_for(lambda agent=agent, i=i: staging_matches(cp, agent.sid, images[i]), what=f"a write of {agent.sid}")
    assert f"{a.sid} connected" in cp.rs_log(moved) and f"{b.sid} connected" not in cp.rs_log(moved)
    # the dedicated server resumed from the staging volume the shared one had written: nothing resent whole
    assert re.search(rf"{a.sid} connected, disks .*resume \[\(\d+, False\)\]", cp.rs_log(moved)), cp.rs_log(moved)
    assert cp.replication(b.sid)["replicatorId"] == shared

    cp.mgn.update_replication_configuration(sourceServerID=a.sid, useDedicatedReplicationServer=False)
    wait_for(lambda: cp.replication(a.sid).get("replicatorId") == shared, timeout=60, what=f"{a.sid} back on {shared}")
    wait_for(lambda: list(cp.replication_servers()) == [shared], what="the dedicated replication server to stop")
    with open(images[0], "r+b") as f:
        f.seek(7 * MiB)
        f.write(os.urandom(50_000))
    wait_for(lambda: staging_matches(cp, a.sid, images[0]), what="a write after moving back")
    assert cp.state(a.sid) != "STALLED" and cp.state(b.sid) != "STALLED"


def test_stopping_the_control_plane_stops_its_replication_servers(
        installer: Path, control_plane: ControlPlane, agents: list[Agent], tmp_path: Path) -> None:
    """SIGTERM to `rehost server` (what systemd and the tests send): it shuts down cleanly and takes the
    replication servers it started with it, rather than leaving them running with nobody to manage them."""
    cp = control_plane
    _, (a,) = _agents_on_images(installer, cp, agents, tmp_path, 1)
    rs = _replicating(cp, a, tmp_path / "disk0.img")["replicatorId"]
    pid = cp.replication_servers()[rs]
    a.stop()
    assert cp.proc is not None
    cp.proc.terminate()
    assert cp.proc.wait(timeout=60) == 0
    wait_for(lambda: not cp.replication_servers(), timeout=30, what=f"replication server {rs} (pid {pid}) to stop")
