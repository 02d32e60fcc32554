"""Names of disks and file systems that survive the move to the target's hardware.

On the target every disk is virtio (``/dev/vda``...), so any name that follows the source's hardware
(``/dev/sda1``, ``/dev/xvdb``, ``/dev/nvme0n1p2``, ``/dev/disk/by-id/...``, ``/dev/disk/by-path/...``)
must become the UUID of the file system it named. Names of the file systems themselves (UUID=, LABEL=,
PARTUUID=, ``/dev/disk/by-uuid``...) and of logical volumes (``/dev/mapper/...``, ``/dev/VG/LV``) are kept:
they do not depend on hardware. A `Rename` answers "what does this name become" (``UUID=...``, or None
when it names nothing that is launched); conversion builds it from `rehost.conversion.storage`, the unit
tests from a table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Literal, overload

from rehost.conversion.edits import keep_original

#: spec, fstype hint -> "UUID=..." for a hardware-bound name that resolves to a launched file system.
Rename = Callable[[str, str], "str | None"]

HW_NAME_RE = re.compile(r"^/dev/(?:[shv]d[a-z]+\d*|xvd[a-z]+\d*|nvme\d+n\d+(?:p\d+)?|disk/by-(?:id|path)/\S+)$")
_DISK_RE = re.compile(r"^(/dev/(?:[shv]d[a-z]+|xvd[a-z]+|nvme\d+n\d+))p?\d*$")


def hardware_bound(spec: str) -> bool:
    return bool(HW_NAME_RE.match(spec))


def boot_disk_names(root: Path, boot_device: str) -> set[str]:
    """The names the guest knows its boot disk by: ``boot_device`` and the disk of "/" in its fstab."""
    names = {boot_device}
    for spec, mountpoint, _ in entries(root):
        if mountpoint == "/" and hardware_bound(spec) and (m := _DISK_RE.match(spec)):
            names.add(m.group(1))
    return names


def other_disk_names(boot_disks: Collection[str], position: int, device_name: str) -> set[str]:
    """The names the guest knows its ``position``-th other disk by (1 = the disk after the boot disk): its
    reported device name and, for each ``/dev/sdX``-style name of the boot disk, the name ``position``
    letters on (``/dev/sda`` -> ``/dev/sdb``), as the source's kernel named its disks in order."""
    names = {device_name}
    for name in boot_disks:
        if (m := re.fullmatch(r"(/dev/(?:[shv]d|xvd))([a-y])", name)) and ord(m.group(2)) + position <= ord("z"):
            names.add(m.group(1) + chr(ord(m.group(2)) + position))
    return names


def disk_names(root: Path, boot_device: str, other_devices: Sequence[str]) -> dict[str, int]:
    """Every name of every launched disk -> its index (0 = the boot disk)."""
    boot = boot_disk_names(root, boot_device)
    names = {name: 0 for name in boot}
    for n, device in enumerate(other_devices, start=1):
        for name in other_disk_names(boot, n, device):
            names.setdefault(name, n)
    return names


@overload
def entries(root: Path) -> list[tuple[str, str, str]]: ...
@overload
def entries(root: Path, options: Literal[True]) -> list[tuple[str, str, str, str]]: ...
def entries(root: Path, options: bool = False) -> list[Any]:
    """(spec, mount point, type[, options]) of each line of the guest's /etc/fstab."""
    fstab = root / "etc/fstab"
    if not fstab.is_file():
        return []
    out: list[Any] = []
    for line in fstab.read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            row = (fields[0], fields[1], fields[2] if len(fields) > 2 else "", fields[3] if len(fields) > 3 else "")
            out.append(row if options else row[:3])
    return out


def _fstab_changes(root: Path, rename: Rename) -> tuple[list[str], str | None]:
    fstab = root / "etc/fstab"
    if not fstab.exists():
        return ["no /etc/fstab"], None
    notes, out, changed = [], [], False
    for line in fstab.read_text(errors="replace").splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and hardware_bound(fields[0]):
            mountpoint = fields[1] if len(fields) > 1 else ""
            new = rename(fields[0], fields[2] if len(fields) > 2 else "")
            if new:
                notes.append(f"fstab: {fields[0]} -> {new} ({mountpoint})")
                line = line.replace(fields[0], new, 1)
                changed = True
            else:
                notes.append(f"fstab: WARNING {fields[0]} ({mountpoint}) names no disk that is launched; kept as is")
        out.append(line)
    return notes, "\n".join(out) + "\n" if changed else None


def plan_fstab(root: Path, rename: Rename) -> list[str]:
    """What `fix_fstab` would change (read-only)."""
    return _fstab_changes(root, rename)[0]


def fix_fstab(root: Path, rename: Rename) -> list[str]:
    """Name every file system of the launched disks in /etc/fstab by UUID instead of a hardware-bound name;
    a hardware-bound name that names nothing launched is kept and reported."""
    notes, text = _fstab_changes(root, rename)
    if text is not None:
        keep_original(root / "etc/fstab")
        (root / "etc/fstab").write_text(text)
    return notes


def fix_cmdline(args: str, rename: Rename) -> str:
    """A kernel command line for the target: ``root=``/``resume=`` by UUID where they named hardware, the
    first NIC named eth0 whatever its bus address, and the serial console the target captures."""
    def repl(m: re.Match[str]) -> str:
        key, dev = m.group(1), m.group(2)
        new = rename(dev, "") if hardware_bound(dev) else None
        return f"{key}={new or dev}"

    args = re.sub(r"\b(root|resume)=(\S+)", repl, args)
    if "net.ifnames=0" not in args:
        args += " net.ifnames=0"
    if "console=ttyS0" not in args:
        args += " console=tty0 console=ttyS0,115200"
    return args.strip()
