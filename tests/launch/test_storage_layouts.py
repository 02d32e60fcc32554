"""Storage layouts as installers leave them, each launched by a real job and checked by its page: root on
LVM in two segments with GRUB on BIOS (Ubuntu's default), an XFS root on LVM spanning two disks with
/boot/grub2, grubenv and dracut on UEFI (RHEL's), a btrfs root in a subvolume named /dev/sda1 (openSUSE's
and Ubuntu's btrfs installs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rehost.db import repo
from rehost.images.layouts import build_layout_image

from .conftest import LaunchEnv
from .test_layouts import _boot_mode, _launch_and_check

_fixtures = pytest.importorskip("images.fixtures")


def _conversion_notes(env: LaunchEnv, job_id: str) -> str:
    with env.local.store.read() as conn:
        return "\n".join(str(doc) for _, doc in repo.log_items(conn, job_id))


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize(("layout", "boot_mode", "expect"), [
    ("lvm", "LEGACY_BIOS", ["LV ubuntu-vg/ubuntu-lv (ext4", "/boot on disk 1 partition 1 (ext4",
                            "fstab: /dev/sda1 -> UUID="]),
    ("rhel", "UEFI", ["LV rhel/root (xfs", "/boot on disk 1 partition 2 (xfs", "/boot/grub2/grubenv: kernelopts",
                      "EFI/BOOT/BOOTX64.EFI"]),
    ("btrfs", "LEGACY_BIOS", ["disk 1 partition 1 (btrfs", "subvolume @", "fstab: /dev/sda1 -> UUID=",
                              "/boot/grub/grub.cfg: kernel command lines"]),
])
def test_a_storage_layout_launches_and_serves_its_page(launch_env: LaunchEnv, tmp_path: Path, layout: str,
                                                       boot_mode: str, expect: list[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (images and conversion use loop devices)")
    disks = build_layout_image(_fixtures.CACHE_DIR, tmp_path, layout, marker=_fixtures.MARKER,  # type: ignore[arg-type]
                               hostname=f"{layout}-01")
    p, items = _launch_and_check(launch_env, f"{layout}-01", disks)
    assert _boot_mode(items).startswith(boot_mode)
    notes = "\n".join(str(i) for i in items)
    for text in expect:
        assert text in notes, f"{text!r} not in the job log:\n{notes}"
    console = launch_env.ec2.get_console_output(InstanceId=p["launchedEc2InstanceID"])["Output"]
    assert "emergency" not in console.lower()
