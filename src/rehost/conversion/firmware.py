"""What firmware a boot disk can boot in, read from its layout, and the EFI System Partition's removable
boot path. The choice among the configured, reported and possible modes is `rehost.domain.boot`'s.

A GPT disk with an EFI System Partition and no BIOS boot partition is UEFI only; an MBR disk without an
EFI System Partition, or a GPT disk with a BIOS boot partition but no ESP, is BIOS only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from rehost.conversion.blockdev import CommandFailed, Partition, run
from rehost.domain.boot import BOOT_MODES, LEGACY_BIOS, UEFI, USE_SOURCE, choose_boot_mode

__all__ = ["BOOT_MODES", "LEGACY_BIOS", "UEFI", "USE_SOURCE", "add_removable_boot_path", "choose_boot_mode",
           "disk_boot_modes"]

ESP_TYPES = {"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "ef"}
BIOS_BOOT_TYPES = {"21686148-6449-6e6f-744e-656564454649"}


def disk_boot_modes(label: str, parts: Iterable[Partition], mbr_boot_code: bytes) -> frozenset[str]:
    """The firmware the boot disk's layout can boot in (``label`` "dos" or "gpt", partitions, the MBR's
    first 440 bytes)."""
    types = {p.type.lower() for p in parts}
    esp = bool(types & ESP_TYPES)
    if label == "gpt":
        bios = bool(types & BIOS_BOOT_TYPES) or (not esp and any(mbr_boot_code))
    else:
        bios = any(mbr_boot_code) or not esp
    modes = ({UEFI} if esp else set()) | ({LEGACY_BIOS} if bios else set())
    return frozenset(modes or {LEGACY_BIOS})


#: Where UEFI firmware looks for a boot loader on a disk it has no boot entry for (a fresh NVRAM).
REMOVABLE_PATH = "::/EFI/BOOT/BOOTX64.EFI"


def add_removable_boot_path(raw: Path, parts: Iterable[Partition]) -> list[str]:
    """Give the ESP the removable-media boot path when the source's boot loader sits only under its vendor
    directory (``/EFI/debian/shimx64.efi``, ``grubx64.efi``): the source's NVRAM entry pointing there does not
    travel with the disk, and OVMF's fresh variables hold none. The vendor directory's files (shim's
    ``grubx64.efi``, GRUB's ``grub.cfg``) are copied beside it. The FAT file system is edited in user space
    with mtools (the host mounts no vfat). Returns notes; nothing is done without an ESP."""
    esp = next((p for p in parts if p.type.lower() in ESP_TYPES), None)
    if esp is None:
        return []
    image = f"{raw}@@{esp.offset}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    try:
        listing = run(["mdir", "-b", "-/", "-i", image, "::/EFI"], env=env)
    except CommandFailed as exc:
        return [f"EFI System Partition {esp.number}: unreadable ({exc}); boot path left as it is"]
    files = [line.strip() for line in listing.splitlines() if line.strip() and not line.strip().endswith("/")]
    if any(f.lower() == REMOVABLE_PATH.lower() for f in files):
        return []
    loader = next((f for name in ("shimx64.efi", "grubx64.efi") for f in sorted(files)
                   if f.lower().endswith("/" + name) and f.count("/") == 3), None)
    if loader is None:
        return [f"EFI System Partition {esp.number}: no boot loader under /EFI (no {REMOVABLE_PATH[2:]}, "
                "shimx64.efi or grubx64.efi)"]
    vendor = loader.rsplit("/", 1)[0]
    with tempfile.TemporaryDirectory(prefix="rehost-esp-") as tmp:
        wanted = [f for f in files if f.rsplit("/", 1)[0] == vendor]
        for f in wanted:
            run(["mcopy", "-n", "-i", image, f, str(Path(tmp) / f.rsplit("/", 1)[1])], env=env)
        if not any(f.lower().startswith("::/efi/boot/") for f in files):
            run(["mmd", "-i", image, "::/EFI/BOOT"], env=env)
        for f in wanted:
            target = REMOVABLE_PATH if f == loader else "::/EFI/BOOT/" + f.rsplit("/", 1)[1]
            run(["mcopy", "-n", "-o", "-i", image, str(Path(tmp) / f.rsplit("/", 1)[1]), target], env=env)
    others = [f[2:] for f in wanted if f != loader]
    return [f"EFI: {loader[2:]} copied to the removable path {REMOVABLE_PATH[2:]}"
            + (f", with {', '.join(others)}" if others else "")]
