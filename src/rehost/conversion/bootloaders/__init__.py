"""Boot loader fixers: one module per boot loader, each pointing its kernel command lines at the target.

Every fixer finds its configuration on the mounted root (`detect`), says what it would change (`plan`,
read-only, for the pre-flight inspection) and changes it (`fix`, idempotent, originals kept with the
``.rehost-source`` suffix). The command line itself is `rehost.conversion.fstab.fix_cmdline`'s: root and
resume by UUID where they named hardware, ``net.ifnames=0``, the serial console. The next boot loader is a
new module added to `FIXERS`.
"""

from __future__ import annotations

from pathlib import Path

from rehost.conversion.bootloaders import bls, extlinux, grub
from rehost.conversion.bootloaders.base import BootLoaderFixer
from rehost.conversion.fstab import Rename
from rehost.errors import ConversionError

FIXERS: tuple[BootLoaderFixer, ...] = (grub.GrubDebian(), grub.GrubRedHat(), bls.BootLoaderSpec(),
                                       extlinux.Extlinux())


def detected(root: Path) -> list[BootLoaderFixer]:
    return [f for f in FIXERS if f.detect(root)]


def plan_boot_loaders(root: Path, rename: Rename) -> list[str]:
    found = detected(root)
    if not found:
        return ["no boot loader found: no GRUB, BootLoaderSpec, extlinux or syslinux configuration"]
    return [f"boot loader: {', '.join(f.name for f in found)}"] + [n for f in found for n in f.plan(root, rename)]


def fix_boot_loaders(root: Path, rename: Rename) -> list[str]:
    """Fix every boot loader configured on the root; raise `ConversionError` when there is none."""
    found = detected(root)
    if not found:
        raise ConversionError("no boot loader found: no GRUB, BootLoaderSpec, extlinux or syslinux "
                              "configuration on the root")
    return [n for f in found for n in f.fix(root, rename)]
