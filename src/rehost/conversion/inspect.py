"""Pre-flight: inspect a server's disks read-only the way conversion will, and say what a launch would do.

Nothing is written: every volume is attached read-only, file systems are mounted read-only without
replaying a journal (`rehost.conversion.storage`), and each fixer is asked for its ``plan``. A snapshot is
read in place from the chunk store through a read-only FUSE file per disk (`SnapshotFiles`), so an
inspection copies nothing, whatever the size of the disks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rehost.conversion import bootloaders, fstab, initramfs, lvm, network
from rehost.conversion.convert import open_guest
from rehost.conversion.fusemap import MappedFiles
from rehost.errors import ConversionError, RehostError


@dataclass
class Inspection:
    """What a launch of these disks would do, or why it would fail."""

    convertible: bool
    reason: str = ""
    os_name: str = ""
    root: str = ""
    boot_modes: list[str] = field(default_factory=list)
    boot_loaders: list[str] = field(default_factory=list)
    initramfs: str = ""
    network: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_disks(disks: Sequence[Path], boot_device: str, other_devices: Sequence[str], work: Path) -> Inspection:
    """Inspect ``disks`` (boot disk first; raw files or read-only FUSE files), never writing them."""
    try:
        return _inspect(disks, boot_device, other_devices, work)
    except ConversionError as exc:
        return Inspection(convertible=False, reason=exc.message)


def _inspect(disks: Sequence[Path], boot_device: str, other_devices: Sequence[str], work: Path) -> Inspection:
    with open_guest(disks, boot_device, other_devices, work, read_only=True) as guest:
        root = guest.root
        loaders = [f.name for f in bootloaders.detected(root)]
        if not loaders:
            raise ConversionError("no boot loader found: no GRUB, BootLoaderSpec, extlinux or syslinux "
                                  "configuration on the root")
        plan = list(guest.notes)
        plan += fstab.plan_fstab(root, guest.rename)
        plan += bootloaders.plan_boot_loaders(root, guest.rename)
        lvm_plan = lvm.fix_guest_lvm(root, dry_run=True)
        plan += lvm_plan
        plan += network.plan_network(root)
        tool = initramfs.fixer_for(root)
        plan += tool.plan(root, force=bool(lvm_plan))
        return Inspection(convertible=True, os_name=guest.os_name,
                          root=guest.notes[0].removeprefix("root file system on "),
                          boot_modes=sorted(guest.boot_modes), boot_loaders=loaders, initramfs=tool.name,
                          network=[f.name for f in network.detected(root)], plan=plan)


class _ReaderSource:
    """One snapshot disk as a `rehost.conversion.fusemap.ReadSource`."""

    def __init__(self, reader: Any) -> None:
        self.reader, self.size = reader, reader.raw.size

    def pread(self, offset: int, length: int) -> bytes:
        self.reader.seek(offset)
        return bytes(self.reader.read(length))

    def close(self) -> None:
        self.reader.close()


@contextlib.contextmanager
def snapshot_files(data_dir: Path, source_server_id: str, snapshot_id: str, devices: Sequence[str],
                   work: Path) -> Iterator[list[Path]]:
    """Each of ``devices`` of a snapshot as a read-only file (FUSE over the chunk store), in order."""
    from rehost.chunkstore.snapshots import SnapshotStore

    with contextlib.ExitStack() as stack:
        store = stack.enter_context(SnapshotStore.open(data_dir, create=False))
        sources = {}
        try:
            for n, device in enumerate(devices):
                sources[f"disk{n}"] = _ReaderSource(store.open_reader(source_server_id, snapshot_id, device))
        except RehostError as exc:
            for s in sources.values():
                s.close()
            raise ConversionError(f"cannot read the snapshot {snapshot_id}: {exc.message}") from exc
        fuse = MappedFiles(work / "snapshot", sources, read_only=True)
        stack.callback(fuse.close)
        yield [fuse.path(f"disk{n}") for n in range(len(devices))]


def inspect_snapshot(data_dir: Path, source_server_id: str, snapshot_id: str, devices: Sequence[str],
                     boot_device: str, work: Path) -> Inspection:
    """Inspect a snapshot in place (nothing copied, nothing written); ``devices`` in the source's order."""
    work.mkdir(parents=True, exist_ok=True)
    order = [boot_device, *(d for d in devices if d != boot_device)]
    try:
        with snapshot_files(data_dir, source_server_id, snapshot_id, order, work) as files:
            return inspect_disks(files, boot_device, order[1:], work)
    except ConversionError as exc:
        return Inspection(convertible=False, reason=exc.message)
