"""A mounted ext4 on a loop device replicated by the real agent with tracefs change tracking, against a
real `rehost server` (root only): writes reach the staging volume, and after the agent is killed and
restarted it resumes with a rescan that sends only what changed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import RunningServer
from rehost.agent.bundle import build_installer

from .conftest import MiB
from .test_install_e2e import PY, control_plane, flags, read_install, staging_matches, wait_for  # noqa: F401 - fixture

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def mounted(loop_device: tuple[str, Path], tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    device, image = loop_device
    subprocess.run(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", device], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "noatime", device, str(mnt)], check=True)
    try:
        yield device, image, mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def start_agent(cmd: list[str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True)


def test_tracked_block_device_follows_writes_and_resumes(
    control_plane: RunningServer, mounted: tuple[str, Path, Path], tmp_path: Path  # noqa: F811
) -> None:
    device, image, mnt = mounted
    installer = build_installer(tmp_path / "rehost-replication-installer-init")
    key = control_plane.access_key()
    state = tmp_path / "state"
    log = tmp_path / "agent.log"
    agent = start_agent([PY, "-I", str(installer), *flags(control_plane, key, "--no-prompt", "--devices", device,
                                                          "--state-dir", str(state), "--foreground")], log)
    try:
        sid, _ = read_install(agent)

        def synced() -> bool:
            subprocess.run(["sync"], check=True)
            # The loop device's backing file is coherent with what the loop device wrote.
            return staging_matches(control_plane, sid, image, device)

        wait_for(synced, what="initial sync of the loop device")
        (mnt / "a.bin").write_bytes(os.urandom(3 * MiB))
        wait_for(synced, what="tracked writes")
        assert "tracking writes on" in log.read_text()
    finally:
        agent.send_signal(signal.SIGKILL)  # a crash: no clean shutdown
        agent.wait(timeout=30)
    # While the agent is down, more data is written; the restarted agent resumes from its digests.
    (mnt / "b.bin").write_bytes(os.urandom(2 * MiB))
    subprocess.run(["sync"], check=True)
    before = log.read_text()
    agent = start_agent([PY, "-I", str(installer), "agent", "--state-dir", str(state)], log)
    try:
        wait_for(lambda: staging_matches(control_plane, sid, image, device), what="resume after restart")
        resumed = wait_for(lambda: re.findall(r"scanned /dev/loop\d+ .*: (\d+) bytes sent", log.read_text()[len(before):]),
                           what="the resume scan's log line")
        assert int(resumed[0]) < 8 * MiB  # the changes (2 MiB + metadata), not the 64 MiB disk
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
