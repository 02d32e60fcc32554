"""What the initramfs fixers share: the drivers the target needs, the guest's kernels, reading an image's
module list in the guest's own tool, and rebuilding in a chroot.

A fixer decides per kernel: nothing to do when every needed driver is in its image or built into the
kernel, else a rebuild with the drivers added to the tool's configuration (kept there, so the guest's
later kernel updates keep them). After a rebuild the image is listed again; a driver still missing, or a
failed rebuild, raises `ConversionError` with the tool's last lines of error output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rehost.conversion.blockdev import CommandFailed, chroot, chroot_mounts
from rehost.conversion.edits import rel
from rehost.errors import ConversionError

#: What the target's disks need to be found at boot (virtio-blk, and virtio-scsi for targets using it).
NEEDED = ("virtio_pci", "virtio_blk", "virtio_scsi")
#: What conversion adds to the initramfs configuration.
DRIVERS = ("virtio_blk", "virtio_pci", "virtio_scsi", "virtio_net")


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path  # the initramfs this kernel boots with (the guest's path, under root)


def kernels(root: Path) -> list[str]:
    """Kernel versions in /boot that have modules (a RHEL rescue kernel's generic image is left alone)."""
    found = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    return [v for v in found if (root / "lib/modules" / v).is_dir() or (root / "usr/lib/modules" / v).is_dir()]


def builtin(root: Path, version: str, module: str) -> bool:
    """True when ``module`` is compiled into kernel ``version`` (then no image needs it)."""
    for base in ("lib/modules", "usr/lib/modules"):
        path = root / base / version / "modules.builtin"
        if path.exists() and re.search(rf"/{re.escape(module)}\.ko\b", path.read_text(errors="replace")):
            return True
    return False


def modules_in(listing: str) -> set[str]:
    """Kernel module names in an image listing (``.../virtio_blk.ko``, ``.ko.xz``, ``.ko.zst``): paths only,
    so a driver named in dracut's recorded arguments does not count."""
    return set(re.findall(r"/([\w-]+)\.ko(?:\.\w+)?$", listing, re.M))


def in_chroot(root: Path, argv: Sequence[str], what: str, timeout: float = 900) -> str:
    """Run ``argv`` in the guest; on failure raise `ConversionError` naming ``what`` with its last lines."""
    try:
        return chroot(root, argv, timeout=timeout)
    except CommandFailed as exc:
        tail = "; ".join(line.strip() for line in exc.stderr.strip().splitlines()[-4:] if line.strip())
        raise ConversionError(f"{what} failed (exit {exc.returncode}): {tail or 'no error output'}") from exc


class InitramfsFixer:
    """One initramfs tool. Subclasses say how to find it, name images, list them, configure and rebuild."""

    name = ""

    def detect(self, root: Path) -> bool:
        raise NotImplementedError

    def image(self, root: Path, version: str) -> Path:
        raise NotImplementedError

    def list_argv(self, image: str) -> list[str]:
        raise NotImplementedError

    def configure(self, root: Path) -> list[str]:
        """Add `DRIVERS` to the tool's configuration (idempotent); return notes."""
        raise NotImplementedError

    def rebuild_argv(self, root: Path, kernel: Kernel) -> list[str]:
        raise NotImplementedError

    def missing(self, root: Path, kernel: Kernel) -> list[str]:
        """The `NEEDED` drivers neither in ``kernel``'s image nor built in (all of them if it has no image)."""
        needed = [m for m in NEEDED if not builtin(root, kernel.version, m)]
        if not needed or not kernel.image.is_file():
            return needed
        listing = in_chroot(root, self.list_argv("/" + str(kernel.image.relative_to(root))),
                            f"listing {kernel.image.name}", timeout=300)
        have = modules_in(listing)
        return [m for m in needed if m not in have]

    def _todo(self, root: Path, force: bool = False) -> list[tuple[Kernel, list[str]]]:
        vers = kernels(root)
        if not vers:
            raise ConversionError("no kernel found in /boot")
        todo = [(k, self.missing(root, k)) for k in (Kernel(v, self.image(root, v)) for v in vers)]
        return [(k, m) for k, m in todo if m or force]

    def plan(self, root: Path, force: bool = False) -> list[str]:
        """What `fix` would do, one line per kernel (read-only: lists images in a chroot without mounts)."""
        try:
            todo = self._todo(root, force)
        except ConversionError as exc:  # e.g. the guest's tool cannot run on a read-only root without /dev
            if not kernels(root):
                raise
            return [f"initramfs: {self.name}: images not listed here ({exc}); conversion checks them and rebuilds "
                    f"any lacking {', '.join(NEEDED)}"]
        if not todo:
            return [f"initramfs: {self.name}: every kernel's image already has {', '.join(NEEDED)}: no rebuild"]
        return [f"initramfs: {self.name}: rebuild {rel(root, k.image)} for kernel {k.version} "
                f"({'missing ' + ', '.join(m) if m else 'the configuration it carries changed'})" for k, m in todo]

    def fix(self, root: Path, force: bool = False) -> list[str]:
        """Rebuild each image lacking a needed driver (every image with ``force``: conversion changed a
        file the images carry, such as lvm.conf), then check it; raises `ConversionError`."""
        with chroot_mounts(root):
            todo = self._todo(root, force)
            if not todo:
                return [f"initramfs: {self.name}: every kernel's image already has {', '.join(NEEDED)}: no rebuild"]
            notes = self.configure(root)
            for kernel, missing in todo:
                in_chroot(root, self.rebuild_argv(root, kernel), f"{self.name}: rebuilding the initramfs of {kernel.version}")
                still = self.missing(root, kernel)
                if still:
                    raise ConversionError(f"the rebuilt initramfs {rel(root, kernel.image)} of kernel {kernel.version} "
                                          f"still lacks {', '.join(still)}")
                notes.append(f"initramfs: {self.name}: rebuilt {rel(root, kernel.image)} for kernel {kernel.version} "
                             f"with {', '.join(missing) or 'the configuration conversion changed'}")
        return notes
