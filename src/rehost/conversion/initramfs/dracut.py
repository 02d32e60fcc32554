"""dracut (RHEL, Fedora, SUSE; Debian's ``dracut`` package): the drivers go to
``/etc/dracut.conf.d/rehost-virtio.conf`` (``add_drivers+=``, kept for later kernel updates), images are
``/boot/initramfs-<version>.img`` (RHEL) or ``/boot/initrd.img-<version>`` (Debian), whichever the guest
has, rebuilt with ``dracut -f --no-hostonly --kver`` and listed with ``lsinitrd``.

``--no-hostonly``: in a chroot, dracut's host-only detection would inspect the conversion host's devices
and mounts, not the guest's, so the image is made generic (every storage and file system driver), like a
rescue image; the guest's own later rebuilds follow its configuration again.
"""

from __future__ import annotations

from pathlib import Path

from rehost.conversion.initramfs.base import DRIVERS, InitramfsFixer, Kernel

CONF = "etc/dracut.conf.d/rehost-virtio.conf"


class Dracut(InitramfsFixer):
    name = "dracut"

    def detect(self, root: Path) -> bool:
        return any((root / d / "dracut").exists() for d in ("usr/bin", "usr/sbin", "sbin"))

    def image(self, root: Path, version: str) -> Path:
        rhel, debian = root / "boot" / f"initramfs-{version}.img", root / "boot" / f"initrd.img-{version}"
        if rhel.exists() or not debian.exists() and not (root / "etc/debian_version").exists():
            return rhel
        return debian

    def list_argv(self, image: str) -> list[str]:
        return ["lsinitrd", image]

    def configure(self, root: Path) -> list[str]:
        conf = root / CONF
        text = f'# added by rehost conversion: the target\'s virtual hardware\nadd_drivers+=" {" ".join(DRIVERS)} "\n'
        if conf.exists() and conf.read_text() == text:
            return []
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(text)
        return [f"initramfs: /{CONF}: add_drivers {', '.join(DRIVERS)}"]

    def rebuild_argv(self, root: Path, kernel: Kernel) -> list[str]:
        return ["dracut", "-f", "--no-hostonly", "--kver", kernel.version, "/" + str(kernel.image.relative_to(root))]
