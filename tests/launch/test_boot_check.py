"""A launch that does not boot is a failed launch: the boot signals, and a real job whose guest cannot boot."""

from __future__ import annotations

import html
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from console.httpclient import ConsoleClient
from rehost import ids
from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource
from rehost.conversion import SnapshotConverter
from rehost.conversion.blockdev import loop_device, mounted, read_partitions
from rehost.db import repo
from rehost.domain.jobs import InitiatedBy, JobStatus, JobType, LaunchStatus
from rehost.images.builder import build_source_image
from rehost.jobs.interfaces import SnapshotRef
from rehost.jobs.runner import JobRunner
from rehost.launch.bootcheck import console_signal, console_tail, port_answers, wait_until_booted
from rehost.targets.base import LaunchSpec

from .conftest import GUEST_BANNER, LaunchEnv, step5, wait_state

_fixtures = pytest.importorskip("images.fixtures")
minimal_image = _fixtures.minimal_image  # session fixture shared with the image suite

BOOTED_DEBIAN = ("[  OK  ] Started \x1b[0;1;39mrehost-site.service\x1b[0m - rehost demo site.\r\n"
                 "[  OK  ] Reached target \x1b[0;1;39mmulti-user.target\x1b[0m - Multi-User System.\r\n")
GETTY = "\r\nDebian GNU/Linux 12 legacy-web-01 ttyS0\r\n\r\nlegacy-web-01 login: "
EMERGENCY = ("[  OK  ] Reached target emergency.target - Emergency Mode.\r\n"
             "You are in emergency mode. After logging in, type \"journalctl -xb\" to view\r\n"
             "Give root password for maintenance\r\n(or press Control-D to continue): ")
INITRAMFS = "Gave up waiting for root file system device.\r\nALERT!  /dev/sda1 does not exist.  Dropping to a shell!\r\n(initramfs) "


def test_console_signals() -> None:
    assert console_signal(BOOTED_DEBIAN) == "systemd reached the multi-user target"
    assert console_signal(GETTY) == "login prompt"
    assert console_signal(EMERGENCY) is None
    assert console_signal(INITRAMFS) is None
    assert console_signal("") is None
    assert console_tail(INITRAMFS + "\r\n\r\n", 2) == ("ALERT!  /dev/sda1 does not exist.  Dropping to a shell!",
                                                     "(initramfs)")


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, list[bytes]]]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    yield srv, []
    srv.close()


def _serve_once(srv: socket.socket, reply: bytes | None, greet: bytes | None = None) -> threading.Thread:
    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            if greet:
                conn.sendall(greet)
            elif reply is not None:
                conn.recv(100)
                conn.sendall(reply)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_port_answers_only_when_a_service_replies(listener: tuple[socket.socket, list[bytes]]) -> None:
    srv, _ = listener
    port = srv.getsockname()[1]
    _serve_once(srv, None, greet=b"SSH-2.0-OpenSSH_9.2\r\n")  # greets first, as sshd does
    assert port_answers("127.0.0.1", port)
    _serve_once(srv, b"HTTP/1.0 200 OK\r\n\r\n")  # answers the HEAD
    assert port_answers("127.0.0.1", port)
    _serve_once(srv, None)  # accepts and closes, as QEMU's hostfwd does while nothing listens in the guest
    assert not port_answers("127.0.0.1", port)
    srv.close()
    assert not port_answers("127.0.0.1", port)


def test_a_guest_that_never_reaches_user_space_is_not_booted(launch_env: LaunchEnv, tiny_disk: Path) -> None:
    """The tiny guest prints a line and halts: it runs, but it never boots an OS."""
    target = launch_env.local.target
    target.launch(LaunchSpec(instance_id="i-0123456789abcdef0", instance_type="t3.micro", vcpus=1,
                             memory_mib=128, disk_image=tiny_disk, ingress_ports=(80,)))
    result = wait_until_booted(target, "i-0123456789abcdef0", 4, poll=0.5)
    assert not result.booted and result.seconds >= 4
    assert "within 4 s" in result.signal
    assert result.console_tail[-1] == GUEST_BANNER.decode()
    assert GUEST_BANNER.decode() in result.failure_text()


class ImageSnapshots:
    """The job's `SnapshotProvider` over disk image files: a real chunk-store snapshot of them."""

    def __init__(self, data_dir: Path, disks: dict[str, Path]) -> None:
        self.data_dir = data_dir
        self.disks = disks

    def take_snapshot(self, source_server_id: str, timeout: float) -> SnapshotRef:
        with SnapshotStore.open(self.data_dir) as store:
            snap = store.create(source_server_id, {name: VolumeSource(p, p.stat().st_size, None)
                                                   for name, p in self.disks.items()}, datetime.now(UTC))
        return SnapshotRef(snap.source_server_id, snap.snapshot_id, snap.taken_at, dict(snap.disks))

    def latest_snapshot(self, source_server_id: str) -> SnapshotRef | None:
        return None


def run_test_job(env: LaunchEnv, server_id: str, disks: dict[str, Path], boot_timeout: float) -> dict[str, Any]:
    """Run a START_TEST job for ``server_id`` through a real `JobRunner` (snapshot, conversion, launch,
    boot wait) on the environment's data directory; return the job as the MGN API describes it."""
    data_dir = env.server.data_dir
    store = env.local.store
    job_id = ids.new_id("mgnjob")
    now = ids.utcnow()
    runner = JobRunner(store, data_dir / "work", snapshots=ImageSnapshots(data_dir, disks),
                       converter=SnapshotConverter(data_dir), launcher=env.launcher, boot_timeout=boot_timeout)
    # Created and claimed by this runner in one transaction: the running server's job poller never sees
    # it PENDING, so it cannot run it instead.
    with store.transaction() as conn:
        repo.insert_job(conn, {
            "jobID": job_id, "arn": env.local.account.arn(f"job/{job_id}"), "type": JobType.LAUNCH.value,
            "initiatedBy": InitiatedBy.START_TEST.value, "creationDateTime": ids.iso(now),
            "status": JobStatus.PENDING.value,
            "participatingServers": [{"sourceServerID": server_id, "launchStatus": LaunchStatus.PENDING.value}],
        }, store.next_seq(conn, "job"), now)
        job = repo.claim_job(conn, job_id, runner.owner)
    try:
        runner.run(job_id, job)
    finally:
        runner.shutdown()
    (job,) = env.mgn.describe_jobs(filters={"jobIDs": [job_id]})["items"]
    return dict(job)


@pytest.mark.slow
@pytest.mark.root
def test_a_launch_that_does_not_boot_fails_with_its_console(launch_env: LaunchEnv, minimal_image: Path,
                                                            tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (conversion mounts the image through loop devices)")
    env = launch_env
    # A source whose kernel is damaged: extlinux loads it, refuses it, and never starts Linux.
    disk = tmp_path / "broken.img"
    shutil.copyfile(minimal_image, disk)
    part = read_partitions(disk)[1][0]
    with loop_device(disk, offset=part.offset, size=part.size) as dev, mounted(dev, tmp_path / "mnt") as root:
        for kernel in (root / "boot").glob("vmlinuz-*"):
            kernel.write_bytes(b"\0" * 4096)
    server_id = env.agent.register("broken-kernel-01")["sourceServerID"]
    step5(env, server_id)

    job = run_test_job(env, server_id, {"/dev/sda": disk}, boot_timeout=40)
    (p,) = job["participatingServers"]
    assert p["launchStatus"] == "FAILED"
    items = env.mgn.describe_job_log_items(jobID=job["jobID"])["items"]
    events = [i["event"] for i in items]
    assert events[-3:] == ["LAUNCH_START", "LAUNCH_FAILED", "JOB_END"], events
    failure = items[-2]["eventData"]["rawError"]
    assert "did not reach user space within 40 s" in failure, failure
    assert "Last console lines:" in failure and "boot:" in failure, failure  # extlinux's prompt, from the console
    instance_id = items[-3]["eventData"]["targetInstanceID"]

    # The instance is terminated with the reason; its console stays readable.
    inst = wait_state(env.ec2, instance_id, "terminated", timeout=5)
    assert inst["State"]["Name"] == "terminated"
    assert "did not reach user space" in inst["StateTransitionReason"]
    assert "boot:" in env.ec2.get_console_output(InstanceId=instance_id).get("Output", "")
    launched = env.mgn.describe_source_servers(filters={"sourceServerIDs": [server_id]})["items"][0]["launchedInstance"]
    assert launched == {"ec2InstanceID": instance_id, "jobID": job["jobID"], "firstBoot": "STOPPED"}

    # The console's job page shows the failure with the firmware and the console lines.
    console = ConsoleClient(env.server.endpoint)
    console.sign_in(*env.key)
    page = html.unescape(console.get(f"/console/jobs/{job['jobID']}").body)
    assert "Boot mode LEGACY_BIOS (the boot disk's layout). The guest did not reach user space" in page
    assert "Last console lines:" in page and failure.splitlines()[-1] in page


@pytest.mark.slow
@pytest.mark.root
def test_a_uefi_disk_forced_to_legacy_bios_fails(launch_env: LaunchEnv, tmp_path: Path) -> None:
    """The launch configuration's bootMode wins over the disk: a UEFI-only disk on SeaBIOS never boots."""
    if os.geteuid() != 0:
        pytest.skip("needs root (images and conversion use loop devices)")
    env = launch_env
    disk = tmp_path / "uefi.img"
    build_source_image(_fixtures.CACHE_DIR, disk, size_gib=1, flavor="minimal", hostname="uefi-web-02",
                       firmware="uefi")
    server_id = env.agent.register("uefi-web-02")["sourceServerID"]
    step5(env, server_id)
    env.mgn.update_launch_configuration(sourceServerID=server_id, bootMode="LEGACY_BIOS")
    job = run_test_job(env, server_id, {"/dev/sda": disk}, boot_timeout=30)
    assert job["participatingServers"][0]["launchStatus"] == "FAILED"
    with env.local.store.read() as conn:
        items = [doc for _, doc in repo.log_items(conn, job["jobID"])]
    start = next(i for i in items if i["event"] == "LAUNCH_START")
    assert start["eventData"]["bootMode"] == "LEGACY_BIOS (the launch configuration's bootMode)"
    failed = next(i for i in items if i["event"] == "LAUNCH_FAILED")
    assert failed["eventData"]["rawError"].startswith(
        "Boot mode LEGACY_BIOS (the launch configuration's bootMode). The guest did not reach user space within 30 s")
    inst = wait_state(env.ec2, start["eventData"]["targetInstanceID"], "terminated", timeout=5)
    assert inst["BootMode"] == "legacy-bios" and "did not reach user space" in inst["StateTransitionReason"]


def test_the_boot_timeout_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rehost.config import load_settings
    from rehost.errors import InvalidInput

    assert load_settings(data_dir=tmp_path).launch_boot_timeout == 300
    monkeypatch.setenv("REHOST_LAUNCH_BOOT_TIMEOUT", "45")
    assert load_settings(data_dir=tmp_path).launch_boot_timeout == 45
    assert load_settings(data_dir=tmp_path, launch_boot_timeout=20).launch_boot_timeout == 20
    with pytest.raises(InvalidInput, match="launch boot timeout"):
        load_settings(data_dir=tmp_path, launch_boot_timeout=0)
