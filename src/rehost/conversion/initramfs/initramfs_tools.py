"""initramfs-tools (Debian, Ubuntu): the drivers go to ``/etc/initramfs-tools/modules`` (kept for later
kernel updates, original kept as ``modules.rehost-source``), images are ``/boot/initrd.img-<version>``,
rebuilt with ``update-initramfs`` and listed with ``lsinitramfs``."""

from __future__ import annotations

from pathlib import Path

from rehost.conversion.edits import keep_original
from rehost.conversion.initramfs.base import DRIVERS, InitramfsFixer, Kernel

MODULES = "etc/initramfs-tools/modules"


class InitramfsTools(InitramfsFixer):
    name = "initramfs-tools"

    def detect(self, root: Path) -> bool:
        return any((root / d / "update-initramfs").exists() for d in ("usr/sbin", "sbin"))

    def image(self, root: Path, version: str) -> Path:
        return root / "boot" / f"initrd.img-{version}"

    def list_argv(self, image: str) -> list[str]:
        return ["lsinitramfs", image]

    def configure(self, root: Path) -> list[str]:
        modules = root / MODULES
        have = modules.read_text().split() if modules.exists() else []
        missing = [m for m in DRIVERS if m not in have]
        if not missing:
            return []
        keep_original(modules)
        modules.parent.mkdir(parents=True, exist_ok=True)
        with open(modules, "a") as f:
            f.write("# added by rehost conversion: the target's virtual hardware\n")
            f.write("".join(m + "\n" for m in missing))
        return [f"initramfs: {MODULES.removeprefix('etc/')}: added {', '.join(missing)}"]

    def rebuild_argv(self, root: Path, kernel: Kernel) -> list[str]:
        return ["update-initramfs", "-u" if kernel.image.exists() else "-c", "-k", kernel.version]
