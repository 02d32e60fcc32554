"""Which firmware a converted server boots in: MGN's ``bootMode`` (LEGACY_BIOS, UEFI, USE_SOURCE).

The launch configuration's ``bootMode`` wins when it names a firmware. With USE_SOURCE (the default) the
instance boots in the firmware the agent saw the source boot in (``sourceProperties.bootMode``, from
``/sys/firmware/efi``), provided its boot disk can boot that way; otherwise in the one firmware the disk
shows it can boot: a GPT disk with an EFI System Partition and no BIOS boot partition is UEFI only, an MBR
disk without an EFI System Partition, or a GPT disk with a BIOS boot partition but no ESP, is BIOS only.
A disk that can boot both ways (hybrid layouts) without a reported mode boots BIOS, as MGN's default.
"""

from __future__ import annotations

from collections.abc import Iterable

from rehost.conversion.blockdev import Partition

LEGACY_BIOS = "LEGACY_BIOS"
UEFI = "UEFI"
USE_SOURCE = "USE_SOURCE"
BOOT_MODES = (LEGACY_BIOS, UEFI)

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


def choose_boot_mode(configured: str | None, reported: str | None, disk_modes: frozenset[str]) -> tuple[str, str]:
    """The firmware to boot in and why (a phrase for the job log)."""
    if configured in BOOT_MODES:
        return str(configured), "the launch configuration's bootMode"
    if reported in BOOT_MODES and reported in disk_modes:
        return str(reported), "the source's boot mode"
    if len(disk_modes) == 1:
        (only,) = disk_modes
        why = "the boot disk's layout" + (f" (the source reported {reported})" if reported in BOOT_MODES else "")
        return only, why
    return LEGACY_BIOS, "the default for a disk that boots either way"
