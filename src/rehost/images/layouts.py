"""Source servers laid out the way installers lay them out, as disk images, for the conversion tests.

Each layout is built from the cached minimal tree (`rehost.images.builder`), with the packages its
storage needs installed into a derived tree (cached too), and real tools for every structure: LVM's own
``pvcreate``/``vgcreate``/``lvcreate``/``lvextend`` (activation disabled: there is no device-mapper here;
file systems are written into logical volumes through `rehost.conversion.storage`'s own mapping),
``mkfs.xfs``, ``mkfs.btrfs`` and ``btrfs subvolume``, GRUB's BIOS boot image and core image written into
the MBR gap as ``grub-install`` does, GRUB EFI in an ESP built with mtools.

- ``lvm``: Ubuntu's default: BIOS, MBR, GRUB at ``/boot/grub`` on a separate ext4 ``/boot``, the root an
  ext4 logical volume in two segments (it was extended), swap on a logical volume.
- ``rhel``: RHEL's default on UEFI: GPT, ESP with GRUB only under ``/EFI/redhat``, XFS ``/boot`` with
  ``/boot/grub2`` whose kernel options come from ``grubenv``'s ``kernelopts``, the root an XFS logical
  volume spanning two disks (the second a whole-disk physical volume), dracut's initramfs.
- ``btrfs``: BIOS, MBR, GRUB, the root in btrfs subvolume ``@`` named ``/dev/sda1`` on the kernel command
  line and in fstab, ``/home`` in subvolume ``@home``, swap by LABEL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from rehost.conversion import lvm, storage
from rehost.conversion.blockdev import chroot, chroot_mounts, loop_device, mounted, read_partitions, run
from rehost.images.builder import (
    INITRAMFS_MODULES,
    ImageBuildError,
    _personalise,
    _write,
    cached_tree,
    kernel_version,
)

log = logging.getLogger(__name__)

Layout = Literal["lvm", "rhel", "btrfs"]
LAYOUTS: tuple[Layout, ...] = ("lvm", "rhel", "btrfs")
#: Packages each derived tree adds to the minimal tree.
TREE_PACKAGES = {"storage": ("lvm2", "xfsprogs", "btrfs-progs"), "dracut": ("lvm2", "xfsprogs", "dracut")}
LAYOUT_TREE = {"lvm": "storage", "btrfs": "storage", "rhel": "dracut"}
TREE_RECIPE = "1"
SERIAL = "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n"
CONSOLE = "console=tty0 console=ttyS0,115200"
_LVM_CONFIG = ["--config", lvm.LVM_CONFIG.replace("backup { backup = 0 archive = 0 }", "")]


def derived_tree(cache_dir: Path, name: str) -> Path:
    """The minimal tree plus ``TREE_PACKAGES[name]`` (installed with apt in a chroot), as a cached tarball."""
    base = cached_tree(cache_dir, "minimal")
    key = hashlib.sha256(json.dumps([base.name, TREE_PACKAGES[name], TREE_RECIPE]).encode()).hexdigest()[:16]
    tarball = cache_dir / f"derived-{name}-{key}.tar"
    if tarball.exists():
        return tarball
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="build-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        run(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "-xf", str(base)], timeout=900)
        resolv = (tree / "etc/resolv.conf").read_text()
        shutil.copyfile("/etc/resolv.conf", tree / "etc/resolv.conf")
        try:
            with chroot_mounts(tree):
                chroot(tree, ["apt-get", "update", "-qq"], timeout=600)
                chroot(tree, ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                              *TREE_PACKAGES[name]], timeout=1200)
                # The source's initramfs: its own disk controllers and file systems, no virtio.
                _write(tree / "etc/initramfs-tools/modules",
                       "".join(m + "\n" for m in (*INITRAMFS_MODULES, "xfs", "btrfs", "dm_mod")))
                if name == "dracut":
                    _write(tree / "etc/dracut.conf.d/10-source.conf",
                           'hostonly="no"\nadd_dracutmodules+=" lvm "\n')
                    ver = kernel_version(tree)
                    chroot(tree, ["dracut", "-f", "--kver", ver, f"/boot/initrd.img-{ver}"], timeout=900)
                else:
                    chroot(tree, ["update-initramfs", "-u", "-k", "all"], timeout=900)
                chroot(tree, ["apt-get", "clean"])
        finally:
            (tree / "etc/resolv.conf").write_text(resolv)
        shutil.rmtree(tree / "var/lib/apt/lists", ignore_errors=True)
        (tree / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "-cf", str(partial), "."], timeout=900)
        partial.rename(tarball)
    for old in cache_dir.glob(f"derived-{name}-*.tar"):
        if old != tarball:
            old.unlink(missing_ok=True)
    log.info("derived tree %s in %.0f s", tarball, time.monotonic() - started)
    return tarball


def build_layout_image(cache_dir: Path, out_dir: Path, layout: Layout, *, marker: str,
                       hostname: str = "rehost-source") -> dict[str, Path]:
    """Build ``layout``'s disks in ``out_dir``; return them by the source's device names, boot disk first."""
    if layout not in LAYOUTS:
        raise ImageBuildError(f"unknown layout {layout!r} ({', '.join(LAYOUTS)})")
    tarball = derived_tree(Path(cache_dir), LAYOUT_TREE[layout])
    out_dir.mkdir(parents=True, exist_ok=True)
    disks = {"/dev/sda": out_dir / f"{layout}-sda.img"}
    if layout == "rhel":
        disks["/dev/sdb"] = out_dir / f"{layout}-sdb.img"
    for path, size in zip(disks.values(), (2 * 1024**3, 512 * 1024**2), strict=False):
        with open(path, "wb") as f:
            f.truncate(size)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="rehost-layout-") as tmp:
            build = {"lvm": _build_lvm, "rhel": _build_rhel, "btrfs": _build_btrfs}[layout]
            build(list(disks.values()), Path(tmp), tarball, hostname, marker)
    except BaseException:
        for path in disks.values():
            path.unlink(missing_ok=True)
        raise
    log.info("built layout %s in %.1f s", layout, time.monotonic() - started)
    return disks


def _extract(tarball: Path, root: Path, hostname: str, marker: str) -> None:
    run(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "-xf", str(tarball)], timeout=900)
    _personalise(root, hostname, None, marker)


def _uuid(dev: Path) -> str:
    return run(["blkid", "-s", "UUID", "-o", "value", str(dev)]).strip()


@contextlib.contextmanager
def _logical_volumes(pvs: list[lvm.PhysicalVolume], vg: str, lvs: list[tuple[str, str]],
                     work: Path) -> Iterator[dict[str, Path]]:
    """Create volume group ``vg`` on ``pvs`` and its logical volumes in order ((name, lvcreate/lvextend
    size argument); a name seen twice is extended), and yield each LV as a loop device."""
    run(["pvcreate", *_LVM_CONFIG, "-ff", "-y", *(str(p.device) for p in pvs)])
    run(["vgcreate", *_LVM_CONFIG, vg, *(str(p.device) for p in pvs)])
    made: set[str] = set()
    for name, size in lvs:
        if name in made:
            run(["lvextend", *_LVM_CONFIG, size, f"{vg}/{name}"])
        else:
            run(["lvcreate", *_LVM_CONFIG, "-an", "-Zn", "-y", size, "-n", name, vg])
            made.add(name)
    with contextlib.ExitStack() as stack:
        devs = {lv.name: dev for lv, dev in storage.attach_logical_volumes(stack, lvm.scan(pvs), work)}
        yield devs


def _grub_bios(disk: Path, prefix: str, modules: str) -> None:
    """GRUB's BIOS boot code in the MBR and its core image in the gap after it, as grub-install embeds them
    (core image at sector 1, where the boot image's default points, the rest found by its block list)."""
    with tempfile.TemporaryDirectory(prefix="rehost-grub-") as tmp:
        core = Path(tmp) / "core.img"
        run(["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-p", prefix, "biosdisk", "part_msdos", "serial",
             *modules.split()], timeout=120)
        data = core.read_bytes()
        if len(data) > 2047 * 512:
            raise ImageBuildError("GRUB's core image does not fit in the MBR gap")
        boot = Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()
        with open(disk, "r+b") as f:
            f.write(boot[:440])
            f.seek(512)
            f.write(data)


def _grub_modules(grub_dir: Path) -> None:
    """GRUB's modules beside its configuration, as grub-install copies them: the core image loads
    ``normal`` and the rest from there (the same GRUB build as the core image's, the host's)."""
    dest = grub_dir / "i386-pc"
    dest.mkdir(parents=True, exist_ok=True)
    for f in Path("/usr/lib/grub/i386-pc").iterdir():
        if f.suffix in (".mod", ".lst"):
            shutil.copyfile(f, dest / f.name)


def _grub_cfg(kernel_dir: str, ver: str, args: str) -> str:
    return (f"{SERIAL}set timeout=1\nset default=0\n\nmenuentry 'Linux {ver}' {{\n"
            f"  linux {kernel_dir}/vmlinuz-{ver} {args}\n  initrd {kernel_dir}/initrd.img-{ver}\n}}\n")


@contextlib.contextmanager
def _separate_boot(root: Path, boot_dev: Path, tmp: Path) -> Iterator[Path]:
    """Move the extracted tree's /boot onto ``boot_dev`` and yield it mounted at the root's /boot, as an
    installer lays out a separate /boot partition."""
    staged = tmp / "boot-staged"
    shutil.move(root / "boot", staged)
    (root / "boot").mkdir()
    with mounted(boot_dev, root / "boot") as boot:
        for item in staged.iterdir():
            shutil.move(item, boot / item.name)
        yield boot


def _build_lvm(disks: list[Path], tmp: Path, tarball: Path, hostname: str, marker: str) -> None:
    (disk,) = disks
    run(["sfdisk", "--quiet", str(disk)],
        input=b"label: dos\nstart=2048, size=524288, type=83, bootable\ntype=8e\n")
    boot_part, pv_part = read_partitions(disk)[1]
    with loop_device(disk, offset=boot_part.offset, size=boot_part.size) as boot_dev, \
            loop_device(disk, offset=pv_part.offset, size=pv_part.size) as pv_dev, \
            _logical_volumes([lvm.PhysicalVolume(pv_dev, disk, pv_part.offset)], "ubuntu-vg",
                             [("ubuntu-lv", "-L900M"), ("swap_1", "-L64M"), ("ubuntu-lv", "-L+500M")],
                             tmp) as lvs:
        run(["mkfs.ext4", "-q", str(boot_dev)])
        run(["mkfs.ext4", "-q", str(lvs["ubuntu-lv"])])
        run(["mkswap", str(lvs["swap_1"])])
        with mounted(lvs["ubuntu-lv"], tmp / "root") as root:
            _extract(tarball, root, hostname, marker)
            with _separate_boot(root, boot_dev, tmp) as boot:
                ver = kernel_version(root)
                _write(boot / "grub/grub.cfg",
                       _grub_cfg("", ver, f"root=/dev/mapper/ubuntu--vg-ubuntu--lv ro {CONSOLE}"))
                _grub_modules(boot / "grub")
            _write(root / "etc/fstab", "/dev/mapper/ubuntu--vg-ubuntu--lv / ext4 errors=remount-ro 0 1\n"
                   "/dev/sda1 /boot ext4 defaults 0 2\n/dev/ubuntu-vg/swap_1 none swap sw 0 0\n")
    _grub_bios(disk, "(hd0,msdos1)/grub", "ext2")


def _build_rhel(disks: list[Path], tmp: Path, tarball: Path, hostname: str, marker: str) -> None:
    disk, second = disks
    run(["sfdisk", "--quiet", str(disk)],
        input=(b"label: gpt\nstart=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
               b"size=614400, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
               b"type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n"))
    esp_part, boot_part, pv_part = read_partitions(disk)[1]
    with loop_device(disk, offset=boot_part.offset, size=boot_part.size) as boot_dev, \
            loop_device(disk, offset=pv_part.offset, size=pv_part.size) as pv_dev, \
            loop_device(second) as pv2_dev, \
            _logical_volumes([lvm.PhysicalVolume(pv_dev, disk, pv_part.offset), lvm.PhysicalVolume(pv2_dev, second, 0)],
                             "rhel", [("root", "-L1700M"), ("swap", "-L64M")], tmp) as lvs:
        run(["mkfs.xfs", "-q", str(boot_dev)])
        run(["mkfs.xfs", "-q", str(lvs["root"])])
        run(["mkswap", str(lvs["swap"])])
        boot_uuid = _uuid(boot_dev)
        with mounted(lvs["root"], tmp / "root") as root:
            _extract(tarball, root, hostname, marker)
            with _separate_boot(root, boot_dev, tmp) as boot:
                ver = kernel_version(root)
                _write(boot / "grub2/grub.cfg",
                       f"{SERIAL}set timeout=1\nset default=0\n"
                       # RHEL's own grub.cfg reads grubenv beside itself
                       "if [ -f ${config_directory}/grubenv ]; then\n  load_env -f ${config_directory}/grubenv\n"
                       "elif [ -s $prefix/grubenv ]; then\n  load_env\nfi\n\n"
                       f"menuentry 'Linux {ver}' {{\n"
                       f"  linux /vmlinuz-{ver} $kernelopts\n  initrd /initrd.img-{ver}\n}}\n")
                env = ("# GRUB Environment Block\nkernelopts=root=/dev/mapper/rhel-root ro rd.lvm.lv=rhel/root "
                       f"rd.lvm.lv=rhel/swap {CONSOLE}\n")
                _write(boot / "grub2/grubenv", env + "#" * (1024 - len(env)))
            esp_uuid = _esp(disk, esp_part.offset, esp_part.size, tmp, boot_uuid)
            _write(root / "etc/fstab", f"/dev/mapper/rhel-root / xfs defaults 0 0\nUUID={boot_uuid} /boot xfs "
                   f"defaults 0 0\nUUID={esp_uuid} /boot/efi vfat umask=0077 0 2\n"
                   "/dev/mapper/rhel-swap none swap defaults 0 0\n")
            (root / "boot/efi").mkdir(exist_ok=True)


def _esp(disk: Path, offset: int, size: int, tmp: Path, boot_uuid: str) -> str:
    """An ESP holding GRUB only under the vendor's directory (``/EFI/redhat``), as RHEL installs it."""
    stub, efi, esp = tmp / "stub.cfg", tmp / "grubx64.efi", tmp / "esp.img"
    # The modules stay in the binary's memdisk ($prefix); the configuration and grubenv are on /boot.
    stub.write_text(f"search --no-floppy --fs-uuid --set=root {boot_uuid}\nconfigfile ($root)/grub2/grub.cfg\n")
    run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(efi), "--modules=part_gpt xfs serial loadenv",
         f"boot/grub/grub.cfg={stub}"], timeout=300)
    run(["mkfs.vfat", "-F", "32", "-n", "EFI", "-C", str(esp), str(size // 1024)])
    run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/redhat"])
    run(["mcopy", "-i", str(esp), str(efi), "::/EFI/redhat/grubx64.efi"])
    uuid = _uuid(esp)
    run(["dd", f"if={esp}", f"of={disk}", "bs=1M", f"seek={offset}", "oflag=seek_bytes", "conv=notrunc,sparse",
         "status=none"])
    return uuid


def _build_btrfs(disks: list[Path], tmp: Path, tarball: Path, hostname: str, marker: str) -> None:
    (disk,) = disks
    run(["sfdisk", "--quiet", str(disk)],
        input=b"label: dos\nstart=2048, size=3989504, type=83, bootable\ntype=82\n")
    root_part, swap_part = read_partitions(disk)[1]
    with loop_device(disk, offset=root_part.offset, size=root_part.size) as dev, \
            loop_device(disk, offset=swap_part.offset, size=swap_part.size) as swap_dev:
        run(["mkfs.btrfs", "-q", str(dev)])
        run(["mkswap", "-L", "swap", str(swap_dev)])
        uuid = _uuid(dev)
        with mounted(dev, tmp / "top") as top:
            for sub in ("@", "@home"):
                run(["btrfs", "subvolume", "create", str(top / sub)])
            _extract(tarball, top / "@", hostname, marker)
            ver = kernel_version(top / "@")
            _write(top / "@/boot/grub/grub.cfg",
                   _grub_cfg("/@/boot", ver, f"root=/dev/sda1 rootflags=subvol=@ ro {CONSOLE}"))
            _grub_modules(top / "@/boot/grub")
            _write(top / "@/etc/fstab", "/dev/sda1 / btrfs subvol=@ 0 0\n"
                   f"UUID={uuid} /home btrfs subvol=@home 0 0\nLABEL=swap none swap sw 0 0\n")
    _grub_bios(disk, "(hd0,msdos1)/@/boot/grub", "btrfs")
