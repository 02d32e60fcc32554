"""The job runner's Converter over the chunk store: a snapshot in, a converted qcow2 out (contents checked)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource
from rehost.conversion import SnapshotConverter
from rehost.conversion.blockdev import chroot, loop_device, mounted, read_partitions, run
from rehost.jobs.interfaces import Converter, SnapshotRef


def fake_deb(tmp_path: Path, name: str) -> Path:
    """An empty Debian package called ``name`` (stands in for a hypervisor's guest tools)."""
    pkg = tmp_path / name
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 2:12.1.5-1\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test stand-in\n")
    (pkg / "usr/bin").mkdir(parents=True)
    (pkg / "usr/bin" / "vmtoolsd").write_text("#!/bin/sh\n")
    for folder in (pkg, pkg / "DEBIAN", pkg / "usr", pkg / "usr/bin"):
        folder.chmod(0o755)  # dpkg-deb refuses a control directory of another mode, whatever the umask
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(tmp_path / f"{name}.deb")],
                   check=True, capture_output=True)
    return tmp_path / f"{name}.deb"


@pytest.mark.root
@pytest.mark.slow
def test_snapshot_converter_produces_a_converted_disk(minimal_image: Path, tmp_path: Path) -> None:
    # The source server, as it would be replicated: with VMware's guest tools installed.
    disk = tmp_path / "staging.img"
    shutil.copyfile(minimal_image, disk)
    deb = fake_deb(tmp_path, "open-vm-tools")
    part = read_partitions(disk)[1][0]
    with loop_device(disk, offset=part.offset, size=part.size) as dev, mounted(dev, tmp_path / "src") as root:
        shutil.copy(deb, root / "tmp/t.deb")
        chroot(root, ["dpkg", "-i", "/tmp/t.deb"])
        (root / "tmp/t.deb").unlink()

    data_dir = tmp_path / "data"
    store = SnapshotStore.open(data_dir)
    snap = store.create("s-0123456789abcdef0", {"/dev/sda": VolumeSource(disk, disk.stat().st_size, None)},
                        datetime.now(UTC))
    ref = SnapshotRef(snap.source_server_id, snap.snapshot_id, snap.taken_at, dict(snap.disks))
    converter = SnapshotConverter(data_dir)
    _: Converter = converter  # it is the job runner's Converter
    converted = converter.convert(ref, "/dev/sda", tmp_path / "work")
    assert "guest tools: removed open-vm-tools" in converted.notes
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["disk.qcow2", "vmlinuz"]

    # Look inside the result.
    out = tmp_path / "out.raw"
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(converted.path), str(out)])
    part = read_partitions(out)[1][0]
    with loop_device(out, offset=part.offset, size=part.size) as dev, mounted(dev, tmp_path / "dst") as root:
        uuid = run(["blkid", "-s", "UUID", "-o", "value", str(dev)]).strip()
        assert uuid == converted.root_uuid
        assert (root / "etc/fstab").read_text().splitlines()[-1] == f"UUID={uuid} / ext4 errors=remount-ro 0 1"
        assert f"root=UUID={uuid}" in (root / "boot/extlinux/extlinux.conf").read_text()
        assert not (root / "usr/bin/vmtoolsd").exists()
        assert "Package: open-vm-tools\n" not in (root / "var/lib/dpkg/status").read_text()
        assert (root / "etc/hostname").read_text().strip() == "legacy-web-01"
        initrd = next((root / "boot").glob("initrd.img-*")).name
        listing = chroot(root, ["lsinitramfs", f"/boot/{initrd}"])
        assert "virtio_blk.ko" in listing and "virtio_net.ko" in listing
    # The snapshot itself is untouched: exporting it again gives the original bytes.
    again = tmp_path / "again.raw"
    store.export(snap.source_server_id, snap.snapshot_id, "/dev/sda", again)
    assert run(["cmp", str(again), str(disk)]) == ""
