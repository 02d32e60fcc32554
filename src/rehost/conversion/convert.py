"""Snapshot disk -> qcow2 that boots on the target's virtio hardware (root only: loop devices, chroot).

Flow: copy the source disk to a sparse raw work file (the snapshot itself is only read), find the root
file system among its partitions, mount it (and a separate /boot) through loop devices attached with
``--offset/--sizelimit``, apply `rehost.conversion.linux`'s edits, unmount, and write the result as a
compact qcow2. Loop mounts + chroot were measured faster here than libguestfs under TCG (see DESIGN.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rehost.conversion import bootloaders, fstab, linux, lvm, storage
from rehost.conversion.blockdev import CommandFailed, Partition, read_partitions, run
from rehost.conversion.firmware import UEFI, add_removable_boot_path, disk_boot_modes
from rehost.conversion.initramfs import add_virtio_drivers
from rehost.conversion.network import fix_network
from rehost.errors import ConversionError
from rehost.jobs.interfaces import ConvertedDisk

log = logging.getLogger(__name__)

_BLOCK = 4 * 1024 * 1024
_LINUX_TYPES = {"83", "8e", "fd", "0fc63daf-8483-4772-8e79-3d69d8477de4",
                "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "44479540-f297-41b2-9af7-d131d5f0458a"}


@dataclass(frozen=True)
class ConvertedImage(ConvertedDisk):
    """A `ConvertedDisk` with what conversion learnt: root UUID, OS, the kernel (copied beside the image
    as ``vmlinuz``, which the QEMU target's accelerator probe boots)."""

    root_uuid: str = ""
    os_name: str = ""
    kernel: Path | None = None


def convert(source: Path | BinaryIO, boot_device: str, work_dir: Path, *,
            hostname: str | None = None, consume: bool = False,
            other_disks: Sequence[tuple[str, Path]] = ()) -> ConvertedImage:
    """Make a bootable ``work_dir/disk.qcow2`` from ``source`` (a raw or qcow2 file, or a readable stream).

    ``boot_device`` is the source's boot disk name (e.g. "/dev/sda"), used in notes. The hostname is kept
    unless ``hostname`` is given. ``source`` is never written, except that with ``consume=True`` a raw
    source file (a temporary export) is moved into ``work_dir`` and deleted instead of copied.
    ``other_disks`` are the source's other disks in its order (device name, raw or qcow2 file, consumed
    likewise): each becomes ``work_dir/disk-<n>.qcow2`` unchanged, and the boot disk's fstab names their
    file systems by UUID too (see `linux.other_disk_names`). Raises `ConversionError` naming the reason
    (no partition table, encrypted root, unknown OS, no boot loader, initramfs rebuild failed).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    raw = work_dir / "disk.raw"
    others = [(name, work_dir / f"disk-{n}.raw") for n, (name, _) in enumerate(other_disks, start=1)]
    started = time.monotonic()
    try:
        _take_source(source, raw, work_dir, consume)
        for (_, path), (_, other_raw) in zip(other_disks, others, strict=True):
            _take_source(path, other_raw, work_dir, consume)
        copied = time.monotonic()
        notes, root_uuid, os_name, boot_modes = _convert_raw(raw, boot_device, hostname, others)
        kernel = work_dir / "vmlinuz"
        edited = time.monotonic()
        out = work_dir / "disk.qcow2"
        data_disks = tuple(work_dir / f"disk-{n}.qcow2" for n in range(1, len(others) + 1))
        try:
            for src, dst in zip([raw] + [p for _, p in others], (out, *data_disks), strict=True):
                run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(src), str(dst)], timeout=1800)
        except CommandFailed as exc:
            raise ConversionError(f"writing the target disk failed: {exc}") from exc
    finally:
        raw.unlink(missing_ok=True)
        for _, path in others:
            path.unlink(missing_ok=True)
    done = time.monotonic()
    notes.append(f"{boot_device}: converted in {done - started:.1f} s (copy {copied - started:.1f} s, "
                 f"edit {edited - copied:.1f} s, qcow2 {done - edited:.1f} s)")
    notes += [f"{name}: attached after the boot disk as disk {n + 1}" for n, (name, _) in enumerate(others, start=1)]
    log.info("converted %s: %s", boot_device, "; ".join(notes))
    return ConvertedImage(path=out, notes=tuple(notes), root_uuid=root_uuid, os_name=os_name,
                          kernel=kernel if kernel.exists() else None, data_disks=data_disks, boot_modes=boot_modes)


def _take_source(source: Path | BinaryIO, raw: Path, work_dir: Path, consume: bool) -> None:
    """Put the source disk at ``raw``: moved there when it is a consumable raw file, else copied."""
    if consume and isinstance(source, Path) and source.stat().st_dev == work_dir.stat().st_dev:
        with open(source, "rb") as f:
            is_raw = f.read(4) != b"QFI\xfb"
        if is_raw:
            os.replace(source, raw)
    if not raw.exists():
        _copy_source(source, raw)


def _copy_source(source: Path | BinaryIO, raw: Path) -> None:
    """Copy the source to a sparse raw file (zero blocks become holes)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ConversionError(f"source disk {path} does not exist")
        with open(path, "rb") as f:
            is_qcow2 = f.read(4) == b"QFI\xfb"
        try:
            if is_qcow2:
                run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(path), str(raw)], timeout=1800)
            else:
                run(["cp", "--sparse=always", "--reflink=auto", str(path), str(raw)], timeout=1800)
        except CommandFailed as exc:
            raise ConversionError(f"copying the source disk failed: {exc}") from exc
        return
    zero = bytes(_BLOCK)
    buf = bytearray(_BLOCK)
    with open(raw, "wb") as out:
        size = 0
        while n := source.readinto(buf):  # type: ignore[attr-defined]
            if n == _BLOCK and buf == zero:
                out.seek(n, os.SEEK_CUR)
            else:
                out.write(memoryview(buf)[:n])
            size += n
        out.truncate(size)


@dataclass
class Guest:
    """A guest's disks attached and its root mounted, as conversion and pre-flight both start from."""

    label: str
    parts: list[Partition]
    boot_modes: frozenset[str]
    disks: storage.Storage
    root_volume: storage.Volume
    root: Path
    subvolume: str
    names: dict[str, int]
    os_name: str
    #: Where the root and the separate /usr, /var, /boot were found, one line each.
    notes: list[str]

    def rename(self, spec: str, fstype: str) -> str | None:
        """`fstab.Rename`: a hardware-bound name -> ``UUID=`` of the volume it names, if launched."""
        vol = self.disks.resolve(spec, self.names, fstype)
        return f"UUID={vol.uuid}" if vol and vol.uuid else None


@contextlib.contextmanager
def open_guest(disks: Sequence[Path], boot_device: str, other_devices: Sequence[str], work: Path, *,
               read_only: bool = False) -> Iterator[Guest]:
    """Attach ``disks`` (boot disk first), find and mount the root and its system mounts, for the block;
    raise `ConversionError` with the reason a launch of them would fail (no partition table, no boot code,
    no root...)."""
    try:
        label, parts = read_partitions(disks[0])
    except (CommandFailed, KeyError, ValueError) as exc:
        raise ConversionError("the boot disk has no partition table (nothing to boot from)") from exc
    if not parts:
        raise ConversionError("the boot disk's partition table is empty")
    with open(disks[0], "rb") as f:
        mbr = f.read(440)
    boot_modes = disk_boot_modes(label, parts, mbr)
    if label == "dos" and not any(mbr) and boot_modes == {"LEGACY_BIOS"}:
        raise ConversionError("no boot loader: the boot disk's MBR has no boot code")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rehost-guest-")))
        st = stack.enter_context(storage.attached(disks, work, read_only=read_only))
        root_vol, root, subvol = st.find_root(tmp)
        notes = [f"root file system on {root_vol.describe()}" + (f", subvolume {subvol}" if subvol else "")]
        names = fstab.disk_names(root, boot_device, other_devices)
        notes += st.mount_system(root, names)
        release = linux.os_release(root)
        os_name = release.get("PRETTY_NAME") or release.get("NAME", "Linux")
        yield Guest(label, parts, boot_modes, st, root_vol, root, subvol, names, os_name, notes)


def _convert_raw(raw: Path, boot_device: str, hostname: str | None,
                 others: Sequence[tuple[str, Path]]) -> tuple[list[str], str, str, frozenset[str]]:
    with open_guest([raw, *(p for _, p in others)], boot_device, [name for name, _ in others],
                    raw.parent) as guest:
        root = guest.root
        notes = [*guest.notes, f"operating system: {guest.os_name}"]
        notes += fstab.fix_fstab(root, guest.rename)
        notes += bootloaders.fix_boot_loaders(root, guest.rename)
        lvm_notes = lvm.fix_guest_lvm(root)  # the initramfs carries lvm.conf and the devices file
        notes += lvm_notes
        notes += fix_network(root)
        notes += linux.remove_guest_tools(root)
        if hostname:
            notes += linux.set_hostname(root, hostname)
        else:
            with contextlib.suppress(OSError):
                notes.append(f"hostname kept: {(root / 'etc/hostname').read_text().strip()}")
        notes += add_virtio_drivers(root, force=bool(lvm_notes))
        if UEFI in guest.boot_modes:
            notes += add_removable_boot_path(raw, guest.parts)
        _copy_kernel(root, raw.parent / "vmlinuz")
        run(["sync"])
    return notes, guest.root_volume.uuid, guest.os_name, guest.boot_modes


def _copy_kernel(root: Path, dest: Path) -> None:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if kernels:
        shutil.copyfile(kernels[-1], dest)
