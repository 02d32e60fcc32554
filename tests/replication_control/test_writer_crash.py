"""The issue's end-to-end check (root): a real ext4 on a loop device, replicated while a writer process keeps
changing files, by way of the loop device (tracefs change tracking) or of its backing image file (periodic
rescans). Mid-sync the agent is killed with SIGKILL and restarted, then the replication server is killed
with SIGKILL (the control plane restarts it). Once the writer has stopped and the file system is synced,
the newest snapshot's export is byte-identical (sha256) to the source, and the bytes the agent sent over the
whole run (counted on the wire by a relay) exceed what had to be sent by no more than what was not yet
acknowledged at each crash, plus a small fraction of the disk: a crash costs a resend of what was in flight,
not a new initial sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import rehost_cli

from .conftest import Agent, ControlPlane, MiB, Relay, sha_file, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

DISK = 128 * MiB
DATA = 60 * MiB  # random files written before replication starts
WRITTEN = 6 * MiB  # what the writer writes while replication runs (whole 64 KiB chunks)
WRITER = r"""
import os, random, sys, time
mnt, stop, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(7)
written = 0
while not os.path.exists(stop):
    if written < budget:
        name = os.path.join(mnt, "w%02d.bin" % rng.randrange(12))
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = rng.choice((65536, 131072))
            os.pwrite(fd, os.urandom(size), rng.randrange(0, 2 << 20, 65536))
            os.fsync(fd)
        finally:
            os.close(fd)
        if rng.random() < 0.1:  # files come and go too
            victim = os.path.join(mnt, "w%02d.bin" % rng.randrange(12))
            if os.path.exists(victim):
                os.unlink(victim)
        written += size
    time.sleep(0.05)
print(written)
"""


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A 128 MiB ext4 holding 60 MiB of random files, mounted from a loop device: (device, image, mount)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices and mount")
    image = tmp_path / "ext4.img"
    with open(image, "wb") as f:
        f.truncate(DISK)
    subprocess.run(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                            text=True).stdout.strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-o", "noatime", device, str(mnt)], check=True)
        try:
            for i in range(6):
                (mnt / f"data{i}.bin").write_bytes(os.urandom(DATA // 6))
            subprocess.run(["sync"], check=True)
            yield device, image, mnt
        finally:
            subprocess.run(["fsfreeze", "--unfreeze", str(mnt)], capture_output=True)  # if a test left it frozen
            subprocess.run(["umount", str(mnt)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


class AckWatch:
    """Samples the bytes on the wire each time the agent records a new acknowledged FLUSH (its
    replication.json ``seq``, written only after the replication server's FLUSH_ACK)."""

    def __init__(self, relay: Relay, state_dir: Path) -> None:
        self.relay, self.path = relay, state_dir / "replication.json"
        self.acks: list[int] = []  # relay.sent when each new seq was first seen
        self._seq: int | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            sent = self.relay.sent
            try:
                seq = int(json.loads(self.path.read_text()).get("seq", 0))
            except (OSError, ValueError):
                continue
            if self._seq is not None and seq != self._seq:
                self.acks.append(sent)
            self._seq = seq

    def stop(self) -> None:
        self._stop.set()

    def wait_acks(self, count: int, agent: Agent) -> int:
        """Wait for `count` more acknowledged flushes; returns how many bytes may be sent again after a
        crash now: everything sent after the flush before the last one seen (data sent before that flush
        was issued is covered by the last one)."""
        start = len(self.acks)
        wait_for(lambda: len(self.acks) >= start + count or agent.proc.poll() is not None, timeout=60,
                 what=f"{count} acknowledged flushes")
        assert agent.proc.poll() is None, agent.log_text()[-3000:]
        return self.relay.sent - self.acks[-2]


@pytest.mark.parametrize("through", ["loop-device", "image-file"])
def test_writer_and_kill_9_mid_sync(through: str, installer: Path, relayed_control_plane: tuple[ControlPlane, Relay],
                                    ext4: tuple[str, Path, Path], tmp_path: Path) -> None:
    cp, relay = relayed_control_plane
    device, image, mnt = ext4
    source = device if through == "loop-device" else str(image)
    # 48 Mbps: the initial sync takes several seconds, so there is a "mid-sync" to crash in.
    template = cp.mgn.describe_replication_configuration_templates()["items"][0]
    cp.mgn.update_replication_configuration_template(
        replicationConfigurationTemplateID=template["replicationConfigurationTemplateID"], bandwidthThrottling=48)
    stop = tmp_path / "stop-writer"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt), str(stop), str(WRITTEN)],
                              stdout=subprocess.PIPE, text=True)
    agent: Agent | None = None
    try:
        agent = Agent(installer, cp, source, tmp_path / "state")
        if through == "loop-device":
            wait_for(lambda: "tracking writes on" in agent.log_text(), what="the tracker")  # type: ignore[union-attr]
        # kill -9 the agent once it has had two flushes acknowledged, and start it again.
        acks = AckWatch(relay, agent.state_dir)
        unacked = [acks.wait_acks(2, agent)]
        agent.kill()
        at_agent_kill = relay.sent
        agent.restart()
        # kill -9 the replication server at its next flush; the control plane starts it again.
        unacked.append(acks.wait_acks(1, agent))
        (rs_id, pid), = cp.replication_servers().items()
        os.kill(pid, 9)
        at_server_kill = relay.sent
        acks.stop()
        wait_for(lambda: cp.replication_servers().get(rs_id, pid) != pid, what="the replication server's restart")
        wait_for(lambda: all(d["replicatedStorageBytes"] == d["totalStorageBytes"]
                             for d in cp.replication(agent.sid).get("replicatedDisks") or [{"totalStorageBytes": 1}])  # type: ignore[union-attr]
                 and cp.state(agent.sid) == "CONTINUOUS", timeout=90, what="the initial sync to finish")
        # The writer stops; its last writes reach the disk; the file system is frozen so the source is still.
        stop.touch()
        out, _ = writer.communicate(timeout=30)
        written = int(out)
        subprocess.run(["sync"], check=True)
        subprocess.run(["fsfreeze", "--freeze", str(mnt)], check=True)
        try:
            snap = rehost_cli("snapshot", "create", agent.sid, "--sync", data_dir=cp.data_dir).stdout.split()[-1]
            want = sha_file(image)
        finally:
            subprocess.run(["fsfreeze", "--unfreeze", str(mnt)], check=True)
        exported = tmp_path / "export.img"
        rehost_cli("snapshot", "export", agent.sid, "--disk", source, "--snapshot", snap, "--output", str(exported),
                   data_dir=cp.data_dir)
        assert sha_file(exported) == want
        assert "replication session ended" in agent.log_text()  # the agent did see the server go away
        # What crossed the wire: the data, the writer's changes, what was not acknowledged at each crash,
        # and a small fraction of the disk (file-system metadata and journal, protocol, TLS).
        sent = relay.sent
        print(f"\n{through}: {sent / MiB:.1f} MiB sent for {DATA / MiB:.0f} MiB of data and {written / MiB:.1f} MiB "
              f"written during replication; agent killed at {at_agent_kill / MiB:.1f} MiB with "
              f"{unacked[0] / MiB:.1f} MiB unacknowledged, replication server at {at_server_kill / MiB:.1f} MiB "
              f"with {unacked[1] / MiB:.1f} MiB; {(sent - DATA - written) / MiB:.1f} MiB beyond the data")
        assert sent <= DATA + written + sum(unacked) + DISK // 16, sent
        # The yardstick: what was sent again is a small fraction of the disk.
        assert sent - DATA - written <= DISK // 8, sent
    finally:
        stop.touch()
        if writer.poll() is None:
            writer.kill()
        writer.wait()
        if agent is not None:
            agent.stop()
