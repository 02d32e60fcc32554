"""A guest's storage as conversion sees it: every volume of every disk attached, identified, mountable.

`attached(disks)` attaches each partition (or a file system on a whole disk) with ``losetup --offset
--sizelimit`` (``losetup -P`` makes no partition devices here), reads LVM metadata without activating
anything (`rehost.conversion.lvm`) and attaches each linear logical volume as a loop device over its one
extent or over a FUSE file that concatenates its extents (`rehost.conversion.fusemap`), then identifies
every volume with ``blkid``. `Storage.find_root` mounts candidates until one holds the operating system
(in a btrfs subvolume too), `Storage.resolve` finds the volume an fstab line or kernel argument names
(UUID=, LABEL=, PARTUUID=, /dev/disk/by-*, /dev/mapper, /dev/VG/LV, /dev/sdXN), and `Storage.mount`
mounts with what each file system needs on a host that also mounts other copies of it (XFS ``nouuid``;
read-only mounts never replay a journal, so inspecting a snapshot never writes it).
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rehost.conversion import fstab, lvm
from rehost.conversion.blockdev import CommandFailed, Partition, loop_device, mounted, read_partitions
from rehost.conversion.fusemap import MappedFiles
from rehost.errors import ConversionError

log = logging.getLogger(__name__)

LUKS_MAGIC = b"LUKS\xba\xbe"
#: Mount points conversion needs besides the root: the packages and their database, the kernels.
SYSTEM_MOUNTS = ("/usr", "/var", "/boot")
#: The file systems a Linux root can be converted on.
ROOT_FS = ("ext4", "ext3", "ext2", "xfs", "btrfs")
#: Device names that follow the source's hardware (its bus, its disk order, its serial numbers).
HW_DEV_RE = re.compile(r"^/dev/(?:(?:[shv]d[a-z]+|xvd[a-z]+)(\d*)|nvme\d+n\d+(?:p(\d+))?)$")
_BY_HW_RE = re.compile(r"^/dev/disk/by-(?:id|path)/\S+?(?:-part(\d+))?$")
_PART_RE = re.compile(r"^(/dev/(?:[shv]d[a-z]+|xvd[a-z]+|nvme\d+n\d+p))(\d+)$")


@dataclass
class Volume:
    """One block device of the guest: a partition, a whole disk, or a logical volume."""

    name: str
    device: Path
    info: Mapping[str, str]
    disk: int | None = None  # index among the disks; None for a logical volume
    number: int = 0  # partition number; 0 for a whole disk
    partuuid: str = ""
    lv: lvm.LogicalVolume | None = None

    @property
    def fstype(self) -> str:
        return self.info.get("TYPE", "")

    @property
    def uuid(self) -> str:
        return self.info.get("UUID", "")

    @property
    def label(self) -> str:
        return self.info.get("LABEL", "")

    def describe(self) -> str:
        return f"{self.name} ({self.fstype or 'no file system'}{', UUID ' + self.uuid if self.uuid else ''})"


@dataclass
class Storage:
    disks: Sequence[Path]
    read_only: bool
    stack: contextlib.ExitStack
    labels: list[str] = field(default_factory=list)
    partitions: list[list[Partition]] = field(default_factory=list)
    volumes: list[Volume] = field(default_factory=list)
    lvs: list[lvm.LogicalVolume] = field(default_factory=list)

    # -- finding volumes -------------------------------------------------------------------------------
    def resolve(self, spec: str, disk_names: Mapping[str, int], fstype: str = "") -> Volume | None:
        """The volume ``spec`` names, or None. ``disk_names`` maps the guest's names of its disks
        (``/dev/sda``) to their index; ``fstype`` (fstab's third field) picks among partitions when a
        ``/dev/disk/by-id`` or ``by-path`` name is all there is."""
        key, _, value = spec.partition("=")
        for prefix, attr in (("/dev/disk/by-uuid/", "uuid"), ("/dev/disk/by-label/", "label"),
                             ("/dev/disk/by-partuuid/", "partuuid")):
            if spec.startswith(prefix):
                key, value = attr.upper(), spec.removeprefix(prefix)
        value = value.strip('"')
        if key in ("UUID", "LABEL", "PARTUUID") and value:
            for v in self.volumes:
                have = {"UUID": v.uuid, "LABEL": v.label, "PARTUUID": v.partuuid}[key]
                if have and (have == value if key == "LABEL" else have.lower() == value.lower()):
                    return v
            return None
        for v in self.volumes:
            if v.lv and spec in v.lv.device_names:
                return v
        if m := _PART_RE.match(spec):
            disk = m.group(1)[:-1] if m.group(1).startswith("/dev/nvme") else m.group(1)
            return self._part(disk_names.get(disk), int(m.group(2)))
        if spec in disk_names:
            return self._part(disk_names[spec], 0)
        if m := _BY_HW_RE.match(spec):
            number = int(m.group(1) or 0)
            hits = [v for v in self.volumes if v.disk is not None and v.number == number
                    and (not fstype or fstype == "auto" or v.fstype == fstype)]
            return hits[0] if len(hits) == 1 else None
        return None

    def _part(self, disk: int | None, number: int) -> Volume | None:
        return next((v for v in self.volumes if disk is not None and v.disk == disk and v.number == number), None)

    # -- mounting --------------------------------------------------------------------------------------
    def mount(self, volume: Volume, mountpoint: Path, *, subvol: str | None = None) -> Path:
        """Mount ``volume`` for the rest of the `attached` block; read-only storage never replays a log."""
        opts = []
        if volume.fstype == "xfs":
            opts.append("nouuid")  # another copy of the same file system may be mounted on this host
        if self.read_only:
            opts += {"xfs": ["ro", "norecovery"], "btrfs": ["ro", "rescue=nologreplay"],
                     "ext4": ["ro", "noload"], "ext3": ["ro", "noload"]}.get(volume.fstype, ["ro"])
        if volume.fstype == "btrfs":
            opts.append(f"subvol={subvol}" if subvol else "subvolid=5")
        return self.stack.enter_context(mounted(volume.device, mountpoint, fstype=volume.fstype or None,
                                                options=",".join(opts)))

    def mount_system(self, root: Path, names: Mapping[str, int]) -> list[str]:
        """Mount the guest's separate /usr, /var and /boot named in its fstab under ``root``, so the boot
        loader, the initramfs and the package database are read (and edited) where they live."""
        notes = []
        wanted = {mp: (spec, fstype, opts) for spec, mp, fstype, opts in fstab.entries(root, options=True)
                  if mp in SYSTEM_MOUNTS}
        for mp in SYSTEM_MOUNTS:
            if mp not in wanted:
                continue
            spec, fstype, opts = wanted[mp]
            vol = self.resolve(spec, names, fstype)
            if vol is None:
                raise ConversionError(f"{mp} is on {spec} (fstab), which is on no replicated disk")
            subvol = next((o.removeprefix("subvol=") for o in opts.split(",") if o.startswith("subvol=")), None)
            self.mount(vol, root / mp.lstrip("/"), subvol=subvol)
            notes.append(f"{mp} on {vol.describe()}")
        return notes

    def find_root(self, tmp: Path) -> tuple[Volume, Path, str]:
        """Mount the volume holding the operating system (``/etc`` with an os-release) and return it, the
        mounted root, and its btrfs subvolume ("" if none); explain why none does when none does."""
        encrypted, unsupported, unmountable = [], [], []
        lvm_pvs = [v for v in self.volumes if v.fstype == "LVM2_member"]
        for v in self.volumes:
            if v.fstype == "crypto_LUKS":
                encrypted.append(v.name)
        for lv in self.lvs:
            if lv.unsupported:
                unsupported.append(f"{lv.label} ({lv.unsupported})")
        candidates = sorted((v for v in self.volumes if v.fstype in ROOT_FS),
                            key=lambda v: (not (v.lv and "root" in v.lv.name), v.fstype == "btrfs"))
        for i, v in enumerate(candidates):
            mnt = tmp / f"v{i}"
            try:
                top = self.mount(v, mnt)
            except CommandFailed as exc:
                unmountable.append(f"{v.describe()}: {exc.stderr.strip()[-200:]}")
                continue
            if _is_root(top):
                return v, top, ""
            if v.fstype == "btrfs":
                for sub in _btrfs_root_candidates(top):
                    return v, top / sub, sub
        if encrypted:
            raise ConversionError(f"the root file system is encrypted (LUKS on {encrypted[0]}); rehost "
                                  "cannot convert encrypted disks")
        if unsupported:
            raise ConversionError("the root file system may be on a logical volume rehost cannot map without "
                                  "device-mapper: " + "; ".join(unsupported))
        if unmountable:
            raise ConversionError("no root file system could be mounted: " + "; ".join(unmountable))
        if lvm_pvs and not self.lvs:
            raise ConversionError("the disks hold LVM physical volumes but no logical volume")
        raise ConversionError("unknown operating system: no volume holds a Linux root file system (/etc)")


def _is_root(path: Path) -> bool:
    return (path / "etc").is_dir() and any((path / p).exists() or (path / p).is_symlink()
                                           for p in ("etc/os-release", "usr/lib/os-release"))


def _btrfs_root_candidates(top: Path) -> list[str]:
    """Subvolumes (directories, to one level of nesting) of a btrfs top level that hold a root."""
    found = []
    for d in sorted(top.iterdir()):
        if d.is_dir() and not d.is_symlink():
            if _is_root(d):
                found.append(d.name)
            elif d.name in ("@", "root", "@rootfs") or d.name.startswith("@"):
                found += [f"{d.name}/{s.name}" for s in sorted(d.iterdir()) if s.is_dir() and _is_root(s)]
    return found


def blkid(dev: Path) -> dict[str, str]:
    proc = subprocess.run(["blkid", "-p", "-o", "export", str(dev)], capture_output=True, text=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def attach_logical_volumes(stack: contextlib.ExitStack, lvs: Sequence[lvm.LogicalVolume], work: Path, *,
                           read_only: bool = False) -> list[tuple[lvm.LogicalVolume, Path]]:
    """Attach each linear logical volume of ``lvs`` for the life of ``stack``: a loop device over its one
    extent, or over a FUSE file (under ``work``) that concatenates its extents; unsupported ones are
    skipped. Returns (volume, loop device) pairs."""
    mapped = {lv.mapper_name: lv.extents for lv in lvs if len(lv.extents) > 1}
    fuse = None
    if mapped:
        fuse = MappedFiles(work / "lvm-map", mapped, read_only=read_only)
        stack.callback(fuse.close)  # after the loop devices over its files are detached
    attached = []
    for lv in lvs:
        if len(lv.extents) == 1:
            e = lv.extents[0]
            dev = stack.enter_context(loop_device(e.path, offset=e.offset, size=e.length, read_only=read_only))
        elif lv.extents:
            assert fuse is not None
            dev = stack.enter_context(loop_device(fuse.path(lv.mapper_name), read_only=read_only))
        else:
            continue
        attached.append((lv, dev))
    return attached


@contextlib.contextmanager
def attached(disks: Sequence[Path], work: Path, *, read_only: bool = False) -> Iterator[Storage]:
    """Attach every volume of ``disks`` (raw files, boot disk first) for the duration of the block."""
    with contextlib.ExitStack() as stack:
        storage = Storage(disks, read_only, stack)
        pvs: list[lvm.PhysicalVolume] = []
        for i, disk in enumerate(disks):
            try:
                label, parts = read_partitions(disk)
            except (CommandFailed, KeyError, ValueError):
                label, parts = "", []
            storage.labels.append(label)
            storage.partitions.append(parts)
            ranges: list[tuple[int, int, int | None, str]] = [(p.number, p.offset, p.size, p.uuid) for p in parts]
            ranges = ranges or [(0, 0, None, "")]
            for number, offset, size, partuuid in ranges:
                dev = stack.enter_context(loop_device(disk, offset=offset, size=size, read_only=read_only))
                info = blkid(dev)
                if number == 0 and not info.get("TYPE"):
                    continue  # an empty or unknown whole disk
                with open(dev, "rb") as f:
                    if f.read(6) == LUKS_MAGIC:
                        info["TYPE"] = "crypto_LUKS"
                name = f"disk {i + 1} partition {number}" if number else f"disk {i + 1}"
                storage.volumes.append(Volume(name, dev, info, disk=i, number=number, partuuid=partuuid))
                if info.get("TYPE") == "LVM2_member":
                    pvs.append(lvm.PhysicalVolume(dev, disk, offset))
        storage.lvs = lvm.scan(pvs)
        for lv, dev in attach_logical_volumes(stack, storage.lvs, work, read_only=read_only):
            storage.volumes.append(Volume(f"LV {lv.label}", dev, blkid(dev), lv=lv))
        log.debug("attached %s", [v.describe() for v in storage.volumes])
        yield storage
