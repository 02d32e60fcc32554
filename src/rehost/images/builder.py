"""Build a real, bootable Debian source server image (root only).

The image is what an on-premises server looks like to MGN: an MBR disk with one ext4 partition, booted by
extlinux, whose fstab and kernel command line name the disk ``/dev/sda1`` (its IDE/SATA hardware), whose
network configuration is static and pinned to its e1000 NIC's MAC address, and whose initramfs carries only
the IDE/SATA drivers. So before conversion it boots on IDE + e1000 and fails on virtio.

The debootstrap tree (plus the customisations every image shares) is cached as a tarball under
``cache_dir`` keyed by suite, mirror, package list and recipe version: the first build takes minutes, the
next ones seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from rehost.conversion.blockdev import (
    CommandFailed,
    Partition,
    chroot,
    chroot_mounts,
    loop_device,
    make_single_partition_mbr,
    mounted,
    read_partitions,
    run,
)
from rehost.errors import RehostError
from rehost.images.wordpress import install_wordpress

log = logging.getLogger(__name__)

Flavor = Literal["web", "minimal", "wordpress"]
Firmware = Literal["bios", "uefi"]
SUITE = "bookworm"
#: The source VM's NIC MAC; its network config is pinned to it (QEMU's default MAC).
SOURCE_MAC = "52:54:00:12:34:56"
#: The name the pinned interface gets (not a name the kernel or udev would choose).
SOURCE_IFNAME = "lan0"
SITE_MARKER = "rehost-demo-site"
#: Bump when the shared customisation below changes, so cached trees are rebuilt.
RECIPE_VERSION = "3"

# dbus lets systemd-logind run, which turns an ACPI power-button press into an orderly shutdown (EC2 stop).
BASE_PACKAGES = ("systemd-sysv", "dbus", "linux-image-amd64", "python3", "openssh-server", "ifupdown",
                 "isc-dhcp-client", "iproute2", "netbase", "wget", "ca-certificates")
#: "wordpress" is the hands-on's own server: Apache, PHP and MariaDB from Debian with Debian's WordPress
#: (php-xml for its XML-RPC endpoint, php-cli to install it at build time).
FLAVOR_PACKAGES: dict[str, tuple[str, ...]] = {
    "web": ("nginx-light",), "minimal": (),
    "wordpress": ("apache2", "libapache2-mod-php", "php-cli", "php-mysql", "php-xml", "mariadb-server",
                  "wordpress", "wordpress-theme-twentytwentythree"),
}
#: Bump a flavor's entry when its own customisation changes (the others' cached trees stay valid).
FLAVOR_RECIPE = {"wordpress": "1"}
#: The image cache's location unless a caller names one: this variable, else a machine-wide directory
#: when running as root (it outlives a clone, so CI on the same machine builds each tree once).
CACHE_ENV = "REHOST_IMAGE_CACHE"
#: IDE/SATA (ata_piix on QEMU pc, ahci), SCSI disk, ext4: no virtio, so the disk vanishes on virtio.
INITRAMFS_MODULES = ("ata_piix", "ata_generic", "ahci", "sd_mod", "ext4")


class ImageBuildError(RehostError):
    """The source image could not be built."""


def default_cache_dir() -> Path:
    """Where debootstrap trees are cached: ``$REHOST_IMAGE_CACHE``, else ``/var/cache/rehost-images`` for
    root (images are built as root), else ``~/.cache/rehost/images``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.geteuid() == 0:
        return Path("/var/cache/rehost-images")
    return Path.home() / ".cache" / "rehost" / "images"


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """Return the Debian mirror URI configured for apt (deb822 ``.sources`` or one-line ``.list``).

    Only the main archive is chosen (not ``-security``); raises `ImageBuildError` when none is configured.
    """
    files = sorted((apt_dir / "sources.list.d").glob("*.sources")) + [apt_dir / "sources.list"]
    files += sorted((apt_dir / "sources.list.d").glob("*.list"))
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        uris = re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
        for uri in uris:
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    raise ImageBuildError("no Debian mirror found in the apt configuration (/etc/apt/sources.list*)")


def _cache_key(flavor: str, mirror: str) -> str:
    pkgs = sorted(BASE_PACKAGES + FLAVOR_PACKAGES[flavor])
    recipe: dict[str, object] = {"suite": SUITE, "mirror": mirror, "packages": pkgs, "recipe": RECIPE_VERSION}
    if flavor in FLAVOR_RECIPE:
        recipe["flavor_recipe"] = FLAVOR_RECIPE[flavor]
    blob = json.dumps(recipe)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_tree(cache_dir: Path, flavor: Flavor = "web") -> Path:
    """Return the tarball of the customised debootstrap tree for ``flavor``, building it if missing."""
    mirror = debian_mirror()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"debian-{SUITE}-{flavor}-{_cache_key(flavor, mirror)}.tar"
    if tarball.exists():
        return tarball
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="build-") as tmp:
        tree = Path(tmp) / "tree"
        started = time.monotonic()
        include = ",".join(BASE_PACKAGES + FLAVOR_PACKAGES[flavor])
        try:
            run(["debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(tree), mirror],
                timeout=1800)
        except CommandFailed as exc:
            raise ImageBuildError(f"debootstrap failed: {exc}") from exc
        log.info("debootstrap %s took %.0f s", flavor, time.monotonic() - started)
        _customise_tree(tree, flavor)
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "-cf", str(partial), "."], timeout=1800)
        partial.rename(tarball)
        for old in cache_dir.glob(f"debian-{SUITE}-{flavor}-*.tar"):
            if old != tarball:  # an older recipe or package list: never used again
                old.unlink(missing_ok=True)
        log.info("cached tree %s after %.0f s", tarball, time.monotonic() - started)
    return tarball


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _enable(tree: Path, unit: str, target: str = "multi-user.target") -> None:
    wants = tree / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    if not link.exists():
        link.symlink_to(f"/etc/systemd/system/{unit}")


def _customise_tree(tree: Path, flavor: str) -> None:
    """Everything every image of ``flavor`` shares: disk naming, pinned static network, site, initramfs."""
    _write(tree / "etc/fstab", "# <file system> <mount point> <type> <options> <dump> <pass>\n"
           "/dev/sda1 / ext4 errors=remount-ro 0 1\n")
    # Hardware-bound networking, as on a physical server: the NIC is renamed by its MAC and configured
    # statically (10.0.2.15/24 via 10.0.2.2 matches QEMU user networking).
    _write(tree / f"etc/systemd/network/10-{SOURCE_IFNAME}.link",
           f"[Match]\nMACAddress={SOURCE_MAC}\n\n[Link]\nName={SOURCE_IFNAME}\n")
    _write(tree / "etc/network/interfaces",
           "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
           f"allow-hotplug {SOURCE_IFNAME}\niface {SOURCE_IFNAME} inet static\n"
           "    address 10.0.2.15/24\n    gateway 10.0.2.2\n")
    _write(tree / "etc/resolv.conf", "nameserver 10.0.2.3\n")
    # The site: nginx (web) or Python's http.server (minimal); both serve /var/www/html on port 80.
    _write(tree / "var/www/html/index.html", f"<html><body><h1>{SITE_MARKER}</h1></body></html>\n")
    if flavor == "minimal":
        _write(tree / "etc/systemd/system/rehost-site.service",
               "[Unit]\nDescription=rehost demo site\nAfter=network.target\n\n[Service]\n"
               "ExecStart=/usr/bin/python3 -m http.server 80 --directory /var/www/html\nRestart=always\n\n"
               "[Install]\nWantedBy=multi-user.target\n")
        _enable(tree, "rehost-site.service")
    # New content keeps arriving after the initial sync, so a launch shows how fresh its snapshot is.
    _write(tree / "usr/local/sbin/rehost-writer",
           "#!/bin/sh\nwhile true; do\n  date -u +%Y-%m-%dT%H:%M:%SZ > /var/www/html/heartbeat.txt.new\n"
           "  mv /var/www/html/heartbeat.txt.new /var/www/html/heartbeat.txt\n"
           "  date -u +%Y-%m-%dT%H:%M:%SZ >> /var/www/html/journal.txt\n  sleep 10\ndone\n", 0o755)
    _write(tree / "etc/systemd/system/rehost-writer.service",
           "[Unit]\nDescription=rehost demo content writer\n\n[Service]\nExecStart=/usr/local/sbin/rehost-writer\n"
           "Restart=always\n\n[Install]\nWantedBy=multi-user.target\n")
    _enable(tree, "rehost-writer.service")
    (tree / "root/.ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
    # Only the IDE/SATA drivers in the initramfs: a disk on virtio is not found until conversion adds them.
    _write(tree / "etc/initramfs-tools/conf.d/rehost-source.conf", "MODULES=list\n")
    _write(tree / "etc/initramfs-tools/modules", "".join(m + "\n" for m in INITRAMFS_MODULES))
    with chroot_mounts(tree):
        if flavor == "wordpress":
            install_wordpress(tree, SITE_MARKER)
        chroot(tree, ["update-initramfs", "-u", "-k", "all"])
        chroot(tree, ["apt-get", "clean"])
    shutil.rmtree(tree / "var/lib/apt/lists", ignore_errors=True)
    (tree / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def kernel_version(root: Path) -> str:
    """Return the newest kernel version installed under ``root``/boot."""
    versions = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if not versions:
        raise ImageBuildError(f"no kernel in {root / 'boot'}")
    return versions[-1]


def build_source_image(cache_dir: Path, output: Path, *, size_gib: float = 2, flavor: Flavor = "web",
                       hostname: str = "rehost-source", authorized_keys: str | None = None,
                       marker: str | None = None, firmware: Firmware = "bios",
                       data_disk: Path | None = None, efi_removable: bool = True) -> Path:
    """Build a bootable raw disk image of a Debian source server at ``output`` and return its path.

    The site on port 80 serves ``index.html`` containing `SITE_MARKER` (and ``marker`` when given);
    ``authorized_keys`` goes to root's ``~/.ssh/authorized_keys``. The image boots on an IDE/SATA disk and
    an e1000 NIC with MAC `SOURCE_MAC` (see `rehost.images.sourcevm`). The file appears atomically.

    ``firmware`` "bios" is the MBR + extlinux layout above; "uefi" is what an installer does on a UEFI
    machine: GPT, an EFI System Partition (FAT, built with mtools: the host mounts no vfat) holding GRUB as
    ``/EFI/BOOT/BOOTX64.EFI`` (``--removable``), the root on ``/dev/sda2`` with ``/boot/grub/grub.cfg``,
    ``/boot/efi`` in fstab (with ``efi_removable=False``, GRUB only at ``/EFI/debian/grubx64.efi``, as
    ``grub-install`` without ``--removable`` leaves it: the source's NVRAM entry does not travel with the
    disk, so conversion must add the removable path). With ``data_disk``, ``/var/www`` (the site) lives on a second disk image
    written there (MBR, ext4), mounted through fstab as ``/dev/sdb1``. Raises `ImageBuildError`.
    """
    if flavor not in FLAVOR_PACKAGES:
        raise ImageBuildError(f"unknown image flavor {flavor!r} ({', '.join(FLAVOR_PACKAGES)})")
    if firmware not in ("bios", "uefi"):
        raise ImageBuildError(f"unknown firmware {firmware!r} (bios, uefi)")
    tarball = cached_tree(Path(cache_dir), flavor)
    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    data_partial = Path(str(data_disk) + ".partial") if data_disk else None
    started = time.monotonic()
    with open(partial, "wb") as f:
        f.truncate(int(size_gib * 1024**3))
    try:
        part = make_single_partition_mbr(partial) if firmware == "bios" else _make_uefi_gpt(partial)[1]
        with tempfile.TemporaryDirectory(prefix="rehost-img-") as tmp, \
                loop_device(partial, offset=part.offset, size=part.size) as dev:
            # ^64bit: extlinux and small disks need no 64-bit ext4; keep the widest boot loader support.
            run(["mkfs.ext4", "-q", "-O", "^64bit", str(dev)])
            with mounted(dev, Path(tmp) / "root") as root:
                # Excluded at extraction, not deleted after: deleted blocks would stay in the raw image.
                excludes = [f"--exclude={p}" for p in _SLIM_EXCLUDES] if flavor in SLIM_FLAVORS else []
                if data_partial:
                    excludes.append("--exclude=./var/www/*")
                run(["tar", "-C", str(root), "--numeric-owner", "--xattrs", *excludes, "-xf", str(tarball)],
                    timeout=1800)
                with contextlib.ExitStack() as stack:
                    www = stack.enter_context(_data_disk(data_partial, tarball, Path(tmp) / "data", root)) \
                        if data_partial else None
                    _personalise(root, hostname, authorized_keys, marker, www)
                if excludes:
                    for ver_dir in (root / "usr/lib/modules").iterdir():
                        chroot(root, ["depmod", "-a", ver_dir.name])
                if firmware == "bios":
                    _install_extlinux(root)
                else:
                    _install_grub_efi(partial, root, run(["blkid", "-s", "UUID", "-o", "value", str(dev)]).strip(),
                                      efi_removable)
        if firmware == "bios":
            # The MBR boot code that chains to the active partition's extlinux.
            mbr = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()
            with open(partial, "r+b") as f:
                f.write(mbr[:440])
        if data_disk and data_partial:
            os.replace(data_partial, data_disk)
        os.replace(partial, output)
    except CommandFailed as exc:
        partial.unlink(missing_ok=True)
        if data_partial:
            data_partial.unlink(missing_ok=True)
        raise ImageBuildError(f"building {output} failed: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        if data_partial:
            data_partial.unlink(missing_ok=True)
        raise
    log.info("built %s (%s, %s%s) in %.1f s", output, flavor, firmware, ", data disk" if data_disk else "",
             time.monotonic() - started)
    return output


#: The EFI System Partition of uefi images: 1 MiB on, 64 MiB long; the root follows it.
_ESP_START, _ESP_SIZE = 2048, 64 * 2048


def _make_uefi_gpt(image: Path) -> tuple[Partition, Partition]:
    """GPT with an EFI System Partition and a Linux root partition (as Debian's installer lays out)."""
    run(["sfdisk", "--quiet", str(image)],
        input=(f"label: gpt\nstart={_ESP_START}, size={_ESP_SIZE}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
               "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n").encode())
    esp, root = read_partitions(image)[1]
    return esp, root


def _install_grub_efi(image: Path, root: Path, root_uuid: str, removable: bool = True) -> None:
    """GRUB for x86_64 EFI as ``--removable`` installs it, written into the image's ESP with mtools.

    The EFI binary (``grub-mkstandalone``, its modules in a memdisk) finds the root by UUID and reads
    ``/boot/grub/grub.cfg`` there, as Debian's signed GRUB does through the ESP's stub configuration."""
    ver = kernel_version(root)
    _write(root / "boot/grub/grub.cfg",
           "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n"
           "set timeout=1\nset default=0\n\nmenuentry 'Debian GNU/Linux' {\n"
           f"  linux /boot/vmlinuz-{ver} root=/dev/sda2 ro console=tty0 console=ttyS0,115200\n"
           f"  initrd /boot/initrd.img-{ver}\n}}\n")
    esp_part = read_partitions(image)[1][0]
    with tempfile.TemporaryDirectory(prefix="rehost-esp-") as tmp:
        stub, efi, esp = Path(tmp) / "stub.cfg", Path(tmp) / "BOOTX64.EFI", Path(tmp) / "esp.img"
        # The prefix stays in the binary's memdisk, where grub-mkstandalone put every module.
        stub.write_text(f"search --no-floppy --fs-uuid --set=root {root_uuid}\nconfigfile ($root)/boot/grub/grub.cfg\n")
        run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(efi), "--modules=part_gpt ext2 serial",
             f"boot/grub/grub.cfg={stub}"], timeout=300)
        run(["mkfs.vfat", "-F", "32", "-n", "EFI", "-C", str(esp), str(esp_part.size // 1024)])
        target = "::/EFI/BOOT/BOOTX64.EFI" if removable else "::/EFI/debian/grubx64.efi"
        run(["mmd", "-i", str(esp), "::/EFI", target.rsplit("/", 1)[0]])
        run(["mcopy", "-i", str(esp), str(efi), target])
        esp_uuid = run(["blkid", "-s", "UUID", "-o", "value", str(esp)]).strip()
        run(["dd", f"if={esp}", f"of={image}", "bs=1M", f"seek={esp_part.offset}", "oflag=seek_bytes",
             "conv=notrunc,sparse", "status=none"])
    (root / "boot/efi").mkdir(parents=True, exist_ok=True)
    fstab = root / "etc/fstab"
    fstab.write_text(fstab.read_text().replace("/dev/sda1 / ", "/dev/sda2 / ")
                     + f"UUID={esp_uuid} /boot/efi vfat umask=0077 0 1\n")


#: The data disk of a two-disk source: 256 MiB, MBR, one ext4 partition holding /var/www.
_DATA_DISK_BYTES = 256 * 1024**2


@contextlib.contextmanager
def _data_disk(image: Path, tarball: Path, mnt: Path, root: Path) -> Iterator[Path]:
    """Write the second disk with the tree's /var/www on it and yield it mounted; the root's fstab mounts
    it as ``/dev/sdb1``."""
    with open(image, "wb") as f:
        f.truncate(_DATA_DISK_BYTES)
    part = make_single_partition_mbr(image)
    with loop_device(image, offset=part.offset, size=part.size) as dev:
        run(["mkfs.ext4", "-q", "-L", "www", str(dev)])
        with mounted(dev, mnt) as data:
            run(["tar", "-C", str(data), "--numeric-owner", "--xattrs", "--strip-components=3", "-xf", str(tarball),
                 "./var/www/"], timeout=600)
            fstab = root / "etc/fstab"
            fstab.write_text(fstab.read_text() + "/dev/sdb1 /var/www ext4 defaults 0 2\n")
            yield data


def _personalise(root: Path, hostname: str, authorized_keys: str | None, marker: str | None,
                 www: Path | None = None) -> None:
    """Hostname, root's key, the site's page (in ``www``, the root's /var/www unless another disk holds it)."""
    _write(root / "etc/hostname", hostname + "\n")
    _write(root / "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")
    if authorized_keys:
        _write(root / "root/.ssh/authorized_keys", authorized_keys.rstrip("\n") + "\n", 0o600)
    if marker:
        _write((www or root / "var/www") / "html/index.html",
               f"<html><body><h1>{SITE_MARKER}</h1><p id=\"marker\">{marker}</p></body></html>\n")
    # A fresh machine-id per image, as two installed servers would have.
    _write(root / "etc/machine-id", hashlib.sha256(os.urandom(16)).hexdigest()[:32] + "\n", 0o444)


#: The flavors built without `_SLIM_EXCLUDES` (fewer blocks to replicate and convert).
SLIM_FLAVORS = ("minimal", "wordpress")
#: What the minimal flavor leaves out: hardware no VM has, documentation, translations (about 200 MB), so
#: the end-to-end tests replicate and convert less.
_SLIM_EXCLUDES = tuple(f"./usr/lib/modules/*/kernel/{rel}" for rel in (
    "sound", "drivers/gpu", "drivers/media", "drivers/infiniband", "drivers/iio", "drivers/hwmon",
    "drivers/staging", "drivers/bluetooth", "drivers/isdn", "drivers/net/wireless",
    "drivers/net/ethernet/mellanox", "drivers/net/ethernet/intel/ice", "net/wireless", "net/mac80211",
    "net/bluetooth")) + ("./usr/share/doc/*", "./usr/share/man/*", "./usr/share/locale/*", "./usr/share/info/*")


def _install_extlinux(root: Path) -> None:
    ver = kernel_version(root)
    bootdir = root / "boot/extlinux"
    bootdir.mkdir(parents=True, exist_ok=True)
    _write(bootdir / "extlinux.conf",
           "SERIAL 0 115200\nDEFAULT linux\nTIMEOUT 1\nPROMPT 0\n\nLABEL linux\n"
           f"  KERNEL /boot/vmlinuz-{ver}\n  INITRD /boot/initrd.img-{ver}\n"
           "  APPEND root=/dev/sda1 ro console=tty0 console=ttyS0,115200\n")
    run(["extlinux", "--install", str(bootdir)])
