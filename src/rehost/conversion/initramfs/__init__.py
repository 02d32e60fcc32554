"""Initramfs fixers: the target's virtio drivers go into every kernel's initramfs.

One module per tool (initramfs-tools, dracut), each with ``detect`` (is the tool the guest's), ``plan``
(what a conversion would rebuild, read-only) and ``fix`` (configure, rebuild in a chroot, check the image;
idempotent: a kernel whose image already has the drivers, or whose kernel has them built in, is not
rebuilt). `FIXERS` is in order of preference: when a guest has both tools, the one that made its images
wins (dracut names them ``initramfs-<version>.img``). A new tool (SUSE's mkinitrd) is a new module.
"""

from __future__ import annotations

from pathlib import Path

from rehost.conversion.initramfs.base import DRIVERS, NEEDED, InitramfsFixer
from rehost.conversion.initramfs.dracut import Dracut
from rehost.conversion.initramfs.initramfs_tools import InitramfsTools
from rehost.errors import ConversionError

__all__ = ["DRIVERS", "FIXERS", "NEEDED", "InitramfsFixer", "add_virtio_drivers", "fixer_for", "plan_initramfs"]

FIXERS: tuple[InitramfsFixer, ...] = (InitramfsTools(), Dracut())


def fixer_for(root: Path) -> InitramfsFixer:
    """The guest's initramfs tool; raises `ConversionError` when it has none rehost knows."""
    found = [f for f in FIXERS if f.detect(root)]
    if not found:
        raise ConversionError("cannot rebuild the initramfs: neither initramfs-tools nor dracut is installed")
    if len(found) > 1 and any((root / "boot").glob("initramfs-*.img")):
        return next(f for f in found if isinstance(f, Dracut))
    return found[0]


def plan_initramfs(root: Path, force: bool = False) -> list[str]:
    """What `add_virtio_drivers` would do (read-only); raises `ConversionError` as it would."""
    return fixer_for(root).plan(root, force)


def add_virtio_drivers(root: Path, force: bool = False) -> list[str]:
    """Put the virtio drivers in every kernel's initramfs (``force``: rebuild every image, as conversion
    changed a file the images carry); return notes; raises `ConversionError`."""
    return fixer_for(root).fix(root, force)
