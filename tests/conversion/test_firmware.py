"""The firmware a launch boots in (MGN's bootMode) and the names a second disk's file systems go by."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rehost.conversion.blockdev import Partition, read_partitions, run
from rehost.conversion.firmware import (
    LEGACY_BIOS,
    UEFI,
    add_removable_boot_path,
    choose_boot_mode,
    disk_boot_modes,
)

ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
CODE = b"\xeb\x63" + bytes(438)  # some boot code in the MBR
NONE = bytes(440)


def parts(*types: str) -> list[Partition]:
    return [Partition(n, n * 2**20, 2**20, t, False) for n, t in enumerate(types, start=1)]


@pytest.mark.parametrize(("label", "types", "mbr", "modes"), [
    ("dos", ("83",), CODE, {LEGACY_BIOS}),                    # the classic layout
    ("dos", ("ef", "83"), NONE, {UEFI}),                      # MBR with an ESP and no boot code
    ("dos", ("ef", "83"), CODE, {LEGACY_BIOS, UEFI}),
    ("gpt", (ESP, LINUX), NONE, {UEFI}),                      # what installers do on UEFI machines
    ("gpt", (ESP, LINUX), CODE, {UEFI}),                      # stale boot code alone boots nothing on GPT
    ("gpt", (BIOS_BOOT, LINUX), CODE, {LEGACY_BIOS}),         # GRUB on GPT for BIOS
    ("gpt", (BIOS_BOOT, ESP, LINUX), CODE, {LEGACY_BIOS, UEFI}),  # hybrid (cloud images)
    ("gpt", (LINUX,), CODE, {LEGACY_BIOS}),                   # extlinux on GPT (gptmbr.bin)
])
def test_what_the_disk_can_boot(label: str, types: tuple[str, ...], mbr: bytes, modes: set[str]) -> None:
    assert disk_boot_modes(label, parts(*types), mbr) == modes


@pytest.mark.parametrize(("configured", "reported", "disk", "expected"), [
    ("LEGACY_BIOS", UEFI, {UEFI}, LEGACY_BIOS),      # the launch configuration wins, even against the disk
    ("UEFI", LEGACY_BIOS, {LEGACY_BIOS}, UEFI),
    ("USE_SOURCE", UEFI, {LEGACY_BIOS, UEFI}, UEFI),  # the source's own firmware
    ("USE_SOURCE", LEGACY_BIOS, {LEGACY_BIOS, UEFI}, LEGACY_BIOS),
    ("USE_SOURCE", None, {UEFI}, UEFI),               # no report: what the disk shows
    (None, LEGACY_BIOS, {UEFI}, UEFI),                # a report the disk cannot honour
    ("USE_SOURCE", None, {LEGACY_BIOS, UEFI}, LEGACY_BIOS),
])
def test_boot_mode_decision(configured: str | None, reported: str | None, disk: set[str], expected: str) -> None:
    mode, why = choose_boot_mode(configured, reported, frozenset(disk))
    assert mode == expected and why


@pytest.mark.root
def test_the_removable_boot_path_is_added_to_the_esp(tmp_path: Path) -> None:
    """GRUB installed without --removable is copied to /EFI/BOOT/BOOTX64.EFI, in the FAT image itself."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the image is built through loop devices)")
    from images.fixtures import CACHE_DIR
    from rehost.images.builder import build_source_image

    disk = build_source_image(CACHE_DIR, tmp_path / "uefi.img", size_gib=1, flavor="minimal", firmware="uefi",
                              efi_removable=False)
    label, parts = read_partitions(disk)
    assert label == "gpt" and disk_boot_modes(label, parts, disk.read_bytes()[:440]) == {UEFI}
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

    def listing() -> list[str]:
        return run(["mdir", "-b", "-/", "-i", f"{disk}@@{parts[0].offset}", "::/EFI"], env=env).split()

    assert "::/EFI/BOOT/BOOTX64.EFI" not in listing()
    assert add_removable_boot_path(disk, parts) == [
        "EFI: /EFI/debian/grubx64.efi copied to the removable path /EFI/BOOT/BOOTX64.EFI"]
    assert "::/EFI/BOOT/BOOTX64.EFI" in listing() and "::/EFI/debian/grubx64.efi" in listing()
    out = tmp_path / "boot.efi"
    run(["mcopy", "-i", f"{disk}@@{parts[0].offset}", "::/EFI/BOOT/BOOTX64.EFI", str(out)], env=env)
    assert out.read_bytes()[:2] == b"MZ"  # a PE image, GRUB itself
    assert add_removable_boot_path(disk, parts) == []  # already there: nothing to do
    assert add_removable_boot_path(disk, [p for p in parts if p.number != 1]) == []  # no ESP, no change
