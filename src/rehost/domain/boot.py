"""Which firmware a launched server boots in: MGN's ``bootMode`` (LEGACY_BIOS, UEFI, USE_SOURCE). Pure.

The launch configuration's ``bootMode`` wins when it names a firmware. With USE_SOURCE (the default) the
instance boots in the firmware the agent saw the source boot in (its registration hint, from
``/sys/firmware/efi``), provided its boot disk can boot that way; otherwise in the one firmware the disk
shows it can boot (`rehost.conversion.firmware.disk_boot_modes`). A disk that can boot both ways (hybrid
layouts) without a reported mode boots BIOS, as MGN's default.
"""

from __future__ import annotations

LEGACY_BIOS = "LEGACY_BIOS"
UEFI = "UEFI"
USE_SOURCE = "USE_SOURCE"
BOOT_MODES = (LEGACY_BIOS, UEFI)


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
