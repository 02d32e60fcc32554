"""The measurement: launch-and-terminate cycles leave the data directory as it was, plus the snapshots.

A real `rehost server` (QEMU target under TCG), a source server registered over the agent API whose
snapshot of the minimal Debian image is taken for real in the server's chunk store. Each cycle is a
StartTest job through MGN's API: its snapshot request times out (no agent is connected; 1 s), so it uses
that snapshot, converts it (export, loop mounts, initramfs rebuild, qcow2) and launches a VM; then the
instance is terminated. With ``REHOST_TERMINATED_INSTANCE_RETENTION`` 0 the monitor forgets a terminated
instance at its next pruning pass (every 2.4 s here) instead of after EC2's hour.

The first cycles wait for the guest to boot (LAUNCHED) and end with EC2's TerminateInstances; the rest run with a 1 s boot bound, so the job terminates the instance it launched itself
(LAUNCH_FAILED, the failed-launch path): a Linux boot under TCG takes about a minute, twenty of them would
take twenty. At the end the source server is disconnected and deleted.

Size = the sum of allocated blocks (st_blocks * 512) of every file under the data directory but the chunk
store's packs and manifests, measured with the server stopped (so SQLite's WAL is checkpointed away). The
control-plane database keeps MGN's job history (jobs and their log items, as MGN does), which is allowed
to grow by a few KiB per job; nothing else may grow. Measured here (2 vCPUs shared with other test runs):
20 cycles in 572 s (the booted one 118 s, the others 20-35 s), the data directory without snapshots
1,425,408 -> 1,503,232 bytes, all of it the database's job history (+76 KiB for 20 jobs), snapshots
142,704,640 bytes before and after.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.agentapi import AgentClient
from api.waiting import wait_job
from helpers import RunningServer, free_port
from images.fixtures import minimal_image  # noqa: F401  (session fixture)
from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource
from rehost.targets.qemu import QemuTarget

from .test_data_dir_modes import leaks

BOOTED_CYCLES = int(os.environ.get("REHOST_TEST_BOOTED_CYCLES", "1"))
CYCLES = int(os.environ.get("REHOST_TEST_LAUNCH_CYCLES", "20"))
JOB_RECORD_ALLOWANCE = 16 * 1024  # bytes of database per job (its document and log items)


def data_size(data_dir: Path) -> tuple[int, dict[str, int]]:
    """Allocated bytes under ``data_dir`` but the chunk store's packs and manifests; and per top entry."""
    total, parts = 0, {}
    for root, _dirs, files in os.walk(data_dir):
        rel = Path(root).relative_to(data_dir)
        if rel.parts[:2] in (("chunks", "packs"), ("chunks", "manifests")):
            continue
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            top = (rel / name).parts[0]
            parts[top] = parts.get(top, 0) + st.st_blocks * 512
            total += st.st_blocks * 512
    return total, parts


def snapshots_size(data_dir: Path) -> int:
    return sum(p.stat().st_blocks * 512 for sub in ("packs", "manifests")
               for p in (data_dir / "chunks" / sub).rglob("*") if p.is_file())


def wait_for(predicate: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)
    return value


def start(data: Path, port: int, boot_timeout: float) -> tuple[RunningServer, Any, Any, AgentClient]:
    server = RunningServer(data, port, extra_args=("--monitor-interval", "0.2", "--job-snapshot-timeout", "1"), env={
        "REHOST_ACCEL": "tcg", "REHOST_TERMINATED_INSTANCE_RETENTION": "0",
        "REHOST_LAUNCH_BOOT_TIMEOUT": str(boot_timeout)}).start()
    if not (data.parent / "key").exists():
        (data.parent / "key").write_text("\n".join(server.access_key()))
    key = tuple((data.parent / "key").read_text().split("\n"))
    assert len(key) == 2
    return server, server.client(key), server.client(key, service="ec2"), AgentClient(server.endpoint, *key,
                                                                                      data_dir=data)


@pytest.fixture
def vms_stopped(tmp_path: Path) -> Iterator[None]:
    """Whatever happens, no VM of the test's data directory is left running (QEMU runs daemonized)."""
    yield
    if (tmp_path / "data" / "instances").is_dir():
        target = QemuTarget(tmp_path / "data" / "instances", accel="tcg")
        for inst in target.list():
            target.terminate(inst.instance_id)


def events(mgn: Any, job_id: str) -> list[str]:
    return [i["event"] for i in mgn.describe_job_log_items(jobID=job_id)["items"]]


@pytest.mark.root
@pytest.mark.slow
def test_launch_and_terminate_cycles_leave_only_snapshots(minimal_image: Path, tmp_path: Path,  # noqa: F811
                                                           vms_stopped: None) -> None:
    data, port = tmp_path / "data", free_port()
    server, mgn, ec2, agent = start(data, port, boot_timeout=300)
    try:
        mgn.initialize_service()
        sid = agent.register("legacy-web-01")["sourceServerID"]
        with SnapshotStore.open(data) as store:
            snap = store.create(sid, {"/dev/sda": VolumeSource(minimal_image, minimal_image.stat().st_size, None)})
        agent.report_synced(sid, snapshot_id=snap.snapshot_id)
        assert mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]["lifeCycle"]["state"] \
            == "READY_FOR_TEST"
    finally:
        server.stop()
    before, before_parts = data_size(data)
    snapshots_before = snapshots_size(data)

    timings = []
    jobs = 0
    phases = [(n, boot_timeout) for n, boot_timeout in ((BOOTED_CYCLES, 300.0), (CYCLES - BOOTED_CYCLES, 1.0)) if n > 0]
    for phase, (phase_cycles, boot_timeout) in enumerate(phases, start=1):
        server, mgn, ec2, agent = start(data, port, boot_timeout)
        try:
            for _ in range(phase_cycles):
                started = time.monotonic()
                job = wait_job(mgn, mgn.start_test(sourceServerIDs=[sid])["job"]["jobID"], timeout=600)
                jobs += 1
                log = events(mgn, job["jobID"])
                assert "CONVERSION_END" in log and "LAUNCH_START" in log, log
                assert "CLEANUP_FAIL" not in log, log  # the previous instance, if any, is gone already
                (part,) = job["participatingServers"]
                instance_id = part["launchedEc2InstanceID"]
                if boot_timeout > 1:
                    assert part["launchStatus"] == "LAUNCHED", log
                    assert (data / "instances" / instance_id / "console.log").exists()
                    assert leaks(data) == []  # the running instance's files too
                    ec2.terminate_instances(InstanceIds=[instance_id])
                else:
                    assert part["launchStatus"] == "FAILED" and log[-2] == "LAUNCH_FAILED", log
                # the disk went at termination, the record at the next pruning pass
                idir = data / "instances" / instance_id
                wait_for(lambda idir=idir: not idir.exists(), f"{instance_id} forgotten")
                assert not list((data / "work").iterdir()), "a job's work files are left"
                assert ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": [instance_id]}]) \
                    ["Reservations"] == []
                timings.append(time.monotonic() - started)
            if phase == len(phases):
                mgn.disconnect_from_service(sourceServerID=sid)
                mgn.delete_source_server(sourceServerID=sid)
        finally:
            server.stop()

    after, after_parts = data_size(data)
    grown = after - before
    print(f"\n{len(timings)} cycles in {sum(timings):.0f} s ({', '.join(f'{t:.0f}' for t in timings)} s); "
          f"data directory without snapshots {before} -> {after} bytes ({grown:+d}); "
          f"snapshots {snapshots_before} -> {snapshots_size(data)} bytes; "
          f"by entry before {before_parts}, after {after_parts}")
    assert len(timings) == CYCLES
    assert snapshots_size(data) == snapshots_before  # no job took a snapshot (no agent)
    assert {k: v for k, v in after_parts.items() if k != "rehost.db"} == \
        {k: v for k, v in before_parts.items() if k != "rehost.db"}
    assert after_parts.get("rehost.db", 0) - before_parts.get("rehost.db", 0) <= jobs * JOB_RECORD_ALLOWANCE
    assert leaks(data) == []
