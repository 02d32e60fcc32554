"""Initramfs fixers: dracut rebuilds a real Debian tree's image with the virtio drivers (in a chroot);
the tool is chosen by what the guest has; no rebuild when the drivers are there already."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conversion.dracut_tree import cached_dracut_tree
from images.fixtures import CACHE_DIR, need_root
from rehost.conversion.blockdev import chroot
from rehost.conversion.initramfs import add_virtio_drivers, fixer_for, plan_initramfs
from rehost.conversion.initramfs.base import modules_in
from rehost.conversion.initramfs.dracut import Dracut
from rehost.conversion.initramfs.initramfs_tools import InitramfsTools
from rehost.errors import ConversionError

VER = "6.1.0-99-amd64"


def guest(root: Path, tool: str, builtin: str = "") -> Path:
    """A tree with a kernel, its modules directory and ``tool``'s executable (never run here)."""
    for rel, text in ((f"boot/vmlinuz-{VER}", "kernel"), (f"lib/modules/{VER}/modules.builtin", builtin),
                      (tool, "#!/bin/sh\nexit 1\n")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_tool_is_what_the_guest_has(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="neither initramfs-tools nor dracut"):
        fixer_for(tmp_path)
    assert isinstance(fixer_for(guest(tmp_path / "deb", "usr/sbin/update-initramfs")), InitramfsTools)
    rhel = guest(tmp_path / "rhel", "usr/bin/dracut")
    assert isinstance(fixer_for(rhel), Dracut)
    assert Dracut().image(rhel, VER) == rhel / f"boot/initramfs-{VER}.img"  # RHEL naming, no debian_version
    both = guest(guest(tmp_path / "both", "usr/bin/dracut"), "usr/sbin/update-initramfs")
    assert isinstance(fixer_for(both), InitramfsTools)
    (both / f"boot/initramfs-{VER}.img").write_bytes(b"")  # dracut made its images
    assert isinstance(fixer_for(both), Dracut)


def test_no_rebuild_when_the_kernel_has_the_drivers_built_in(tmp_path: Path) -> None:
    builtin = "".join(f"kernel/drivers/{d}.ko\n" for d in ("virtio/virtio_pci", "block/virtio_blk", "scsi/virtio_scsi"))
    root = guest(tmp_path, "usr/bin/dracut", builtin)
    assert plan_initramfs(root) == ["initramfs: dracut: every kernel's image already has virtio_pci, virtio_blk, "
                                    "virtio_scsi: no rebuild"]
    assert add_virtio_drivers(root) == plan_initramfs(root)  # nothing run, nothing written
    assert not (root / "etc/dracut.conf.d").exists()


def test_module_list_reads_paths_not_recorded_arguments() -> None:
    listing = ("Arguments:  -f --omit-drivers 'virtio_blk virtio_pci'\n"
               "-rw-r--r--   1 root root 1 Jul  2 13:50 usr/lib/modules/6.1/kernel/drivers/virtio/virtio_ring.ko\n"
               "-rw-r--r--   1 root root 1 Jul  2 13:50 usr/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko.xz\n")
    assert modules_in(listing) == {"virtio_ring", "virtio_blk"}


@pytest.fixture
def dracut_root(tmp_path: Path) -> Path:
    """A Debian tree with dracut and a kernel whose image lacks the virtio drivers (extracted from cache)."""
    need_root()
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(cached_dracut_tree(CACHE_DIR))], check=True)
    # The guest's own dracut configuration, which the rebuild honours: uncompressed images (gzip -9 of a
    # generic image takes minutes on a loaded 2-core machine; this keeps the test near a minute).
    (root / "etc/dracut.conf.d/10-source.conf").write_text('compress="cat"\n')
    return root


@pytest.mark.root
@pytest.mark.slow
def test_dracut_rebuild_adds_virtio_and_fails_with_the_tools_words(dracut_root: Path) -> None:
    root = dracut_root
    ver = next(root.glob("boot/vmlinuz-*")).name.removeprefix("vmlinuz-")
    image = root / f"boot/initrd.img-{ver}"  # Debian's naming, kept
    assert isinstance(fixer_for(root), Dracut)
    planned = plan_initramfs(root)
    assert planned == [f"initramfs: dracut: rebuild /boot/initrd.img-{ver} for kernel {ver} "
                       "(missing virtio_pci, virtio_blk, virtio_scsi)"]
    # A guest configuration dracut cannot honour: the job fails with dracut's own words.
    broken = root / "etc/dracut.conf.d/50-broken.conf"
    broken.write_text('add_dracutmodules+=" no-such-module "\n')
    with pytest.raises(ConversionError, match="rebuilding the initramfs.*no-such-module"):
        add_virtio_drivers(root)
    broken.unlink()
    notes = add_virtio_drivers(root)
    assert notes[-1] == (f"initramfs: dracut: rebuilt /boot/initrd.img-{ver} for kernel {ver} "
                         "with virtio_pci, virtio_blk, virtio_scsi")
    assert 'add_drivers+=" virtio_blk virtio_pci virtio_scsi virtio_net "' in \
        (root / "etc/dracut.conf.d/rehost-virtio.conf").read_text()
    listing = chroot(root, ["lsinitrd", f"/boot/initrd.img-{ver}"])
    assert {"virtio_blk", "virtio_pci", "virtio_scsi", "virtio_net"} <= modules_in(listing)
    assert not list(root.glob("boot/initramfs-*"))
    # Idempotent: the image has the drivers now, so a second pass rebuilds nothing.
    built = image.stat().st_mtime_ns
    assert add_virtio_drivers(root) == ["initramfs: dracut: every kernel's image already has virtio_pci, "
                                        "virtio_blk, virtio_scsi: no rebuild"]
    assert image.stat().st_mtime_ns == built
