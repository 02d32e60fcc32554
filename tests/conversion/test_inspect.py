"""Pre-flight: a server's disks inspected read-only the way conversion will, in place in the chunk store."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource
from rehost.conversion import SnapshotConverter
from rehost.conversion.inspect import inspect_disks
from rehost.db import repo
from rehost.db.store import Store
from rehost.jobs import preflight
from rehost.jobs.interfaces import SnapshotRef

pytestmark = pytest.mark.root


def _sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_inspection_says_what_a_launch_would_do_and_writes_nothing(minimal_image: Path, tmp_path: Path) -> None:
    before = _sha(minimal_image)
    result = inspect_disks([minimal_image], "/dev/sda", [], tmp_path)
    assert result.convertible, result.reason
    assert result.os_name.startswith("Debian GNU/Linux 12")
    assert result.root.startswith("disk 1 partition 1 (ext4")
    assert result.boot_modes == ["LEGACY_BIOS"] and result.boot_loaders == ["extlinux"]
    assert result.initramfs == "initramfs-tools"
    plan = "\n".join(result.plan)
    assert "fstab: /dev/sda1 -> UUID=" in plan
    assert "/boot/extlinux/extlinux.conf: kernel command line" in plan
    assert "lan0 inet static -> dhcp" in plan
    assert "missing virtio_pci, virtio_blk" in plan
    assert _sha(minimal_image) == before


def test_an_unconvertible_disk_is_reported_with_its_reason(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    result = inspect_disks([blank], "/dev/sda", [], tmp_path)
    assert not result.convertible and "no partition table" in result.reason


def test_the_worker_inspects_each_newest_snapshot_once_in_place(minimal_image: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with SnapshotStore.open(data_dir) as snapshots:
        snap = snapshots.create("s-1234567890abcdef0", {"/dev/sda": VolumeSource(
            minimal_image, minimal_image.stat().st_size, None)}, datetime.now(UTC))
    ref = SnapshotRef(snap.source_server_id, snap.snapshot_id, snap.taken_at, dict(snap.disks))
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    server = {"sourceServerID": ref.source_server_id, "arn": "arn:aws:mgn:us-east-1:111122223333:source-server/x",
              "isArchived": False, "lifeCycle": {"state": "READY_FOR_TEST"}, "replicationType": "AGENT_BASED"}
    with store.transaction() as conn:
        repo.insert_server(conn, server, store.next_seq(conn, "server"), None)
    worker = preflight.PreflightWorker(store, lambda sid: ref if sid == ref.source_server_id else None,
                                       SnapshotConverter(data_dir).inspect, tmp_path / "work")
    try:
        assert worker.run_once() == [ref.source_server_id]
        doc = preflight.load(store, ref.source_server_id)
        assert doc is not None and doc["convertible"] and doc["snapshotID"] == ref.snapshot_id
        assert any("virtio" in line for line in doc["plan"])
        assert worker.run_once() == []  # the same snapshot is not inspected twice
    finally:
        store.close()
    assert not list((tmp_path / "work").glob("preflight-*"))  # nothing left behind


def test_the_cli_inspects_any_retained_snapshot(minimal_image: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from rehost.cli.main import main
    from rehost.config import load_settings

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = Store(load_settings(data_dir=data_dir).db_url)
    sid = "s-0123456789abcdef0"
    with store.transaction() as conn:
        repo.insert_server(conn, {"sourceServerID": sid, "arn": f"arn:aws:mgn:us-east-1:111122223333:source-server/{sid}",
                                  "isArchived": False, "lifeCycle": {"state": "READY_FOR_TEST"}},
                           store.next_seq(conn, "server"), None)
    store.close()
    with SnapshotStore.open(data_dir) as snapshots:
        older = snapshots.create(sid, {"/dev/sda": VolumeSource(minimal_image, minimal_image.stat().st_size, None)},
                                 datetime(2026, 11, 24, tzinfo=UTC))
        blank = tmp_path / "blank.img"
        blank.write_bytes(bytes(1 << 20))
        snapshots.create(sid, {"/dev/sda": VolumeSource(blank, blank.stat().st_size, None)}, datetime.now(UTC))
    args = ["preflight", sid, "--data-dir", str(data_dir)]
    assert main(args) == 2 and "has not been inspected yet" in capsys.readouterr().err
    assert main([*args, "--now"]) == 1  # the newest snapshot is a blank disk
    assert "a launch would FAIL: the boot disk has no partition table" in capsys.readouterr().out
    assert main([*args, "--snapshot-id", older.snapshot_id, "--output", "json"]) == 0
    out = capsys.readouterr().out
    assert '"convertible": true' in out and older.snapshot_id in out
    assert main(["preflight", "s-fffffffffffffffff", "--data-dir", str(data_dir)]) != 0
    assert "s-fffffffffffffffff" in capsys.readouterr().err
