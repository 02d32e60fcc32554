"""What the agent learns about its machine: disks, the root disk, and MGN's ``sourceProperties``.

Everything comes from /proc, /sys and a few ioctls, so it works with the standard library alone on any
Linux. A "disk" is a whole block device or, for tests and for replicating a file-backed volume, a regular
image file given by path.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import platform
import socket
import stat
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from rehost.errors import InvalidInput

SYS_BLOCK = Path("/sys/block")
# Block devices that are never a machine's own disks (CD-ROMs, RAM disks, loop devices unless named).
_VIRTUAL_PREFIXES = ("loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd", "rbd")


class Disk(NamedTuple):
    """One disk to replicate.

    `name` is the device name reported to the control plane (``/dev/vda`` or an image file's absolute
    path); `path` is what the agent opens; `dev` is the block device's (major, minor), None for a file.
    """

    name: str
    path: str
    size: int
    is_boot: bool
    dev: tuple[int, int] | None

    @property
    def is_block(self) -> bool:
        return self.dev is not None

    def as_device(self) -> dict[str, Any]:
        """The ``devices`` entry of RegisterAgentForMgn."""
        return {"deviceName": self.name, "bytes": self.size, "isBoot": self.is_boot}


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _block_name_for_dev(major: int, minor: int) -> str | None:
    """The /sys/block name of the whole disk holding device major:minor (a partition maps to its disk)."""
    link = Path(f"/sys/dev/block/{major}:{minor}")
    try:
        real = link.resolve(strict=True)
    except OSError:
        return None
    if (real / "partition").exists():
        real = real.parent
    return real.name


def _physical_disks(name: str) -> list[str]:
    """The disks beneath a stacked device (dm, md): follows ``slaves/`` down to devices without any."""
    slaves_dir = SYS_BLOCK / name / "slaves"
    try:
        slaves = sorted(os.listdir(slaves_dir))
    except OSError:
        return [name]
    if not slaves:
        return [name]
    out: list[str] = []
    for slave in slaves:
        dev = _read(slaves_dir / slave / "dev")
        base = slave
        if dev:
            major, minor = (int(x) for x in dev.split(":"))
            base = _block_name_for_dev(major, minor) or slave
        out.extend(d for d in _physical_disks(base) if d not in out)
    return out


def root_disks() -> list[str]:
    """The /sys/block names of the disk(s) holding ``/`` (several under LVM or RAID); empty when ``/`` is
    not on a block device (a container's overlay)."""
    st = os.stat("/")
    name = _block_name_for_dev(os.major(st.st_dev), os.minor(st.st_dev))
    if name is None:
        return []
    return _physical_disks(name)


def machine_disks() -> list[str]:
    """Whole disks of this machine as /dev paths, sorted, without loop, RAM, optical or stacked devices."""
    out = []
    try:
        names = sorted(os.listdir(SYS_BLOCK))
    except OSError:
        return []
    for name in names:
        if name.startswith(_VIRTUAL_PREFIXES):
            continue
        if _read(SYS_BLOCK / name / "size", "0") in ("", "0"):
            continue
        out.append("/dev/" + name)
    return out


def resolve_disk(spec: str, boot_names: Sequence[str]) -> Disk:
    """The disk to replicate for a user's `spec`: a block device (a partition means its whole disk) or a
    regular image file. Raises `InvalidInput` naming the spec when it is neither."""
    path = os.path.abspath(spec.strip())
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidInput(f"Unknown device: {spec} ({exc.strerror})") from exc
    if stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            raise InvalidInput(f"Unknown device: {spec} (an empty file)")
        return Disk(path, path, st.st_size, False, None)
    if not stat.S_ISBLK(st.st_mode):
        raise InvalidInput(f"Unknown device: {spec} (neither a block device nor an image file)")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    name = _block_name_for_dev(major, minor)
    if name is None:
        raise InvalidInput(f"Unknown device: {spec} (not in /sys/block)")
    disk_path = "/dev/" + name
    dev_text = _read(SYS_BLOCK / name / "dev")
    if dev_text:
        major, minor = (int(x) for x in dev_text.split(":"))
    # sysfs counts 512-byte sectors whatever the logical block size; it needs no open() of the device.
    size = int(_read(SYS_BLOCK / name / "size", "0") or 0) * 512
    if size == 0:
        raise InvalidInput(f"Unknown device: {spec} (size 0: no medium or not attached)")
    return Disk(disk_path, disk_path, size, name in boot_names, (major, minor))


def select_disks(specs: Sequence[str], force_volumes: bool = False) -> list[Disk]:
    """The disks to replicate for the user's choice.

    An empty `specs` means all of the machine's disks. When any of the machine's own block devices is
    chosen the root disk is added (MGN always replicates it) unless `force_volumes` says the list is exact.
    Duplicates (two partitions of one disk) collapse to one entry; the order is the user's.
    """
    boot = root_disks()
    chosen = list(specs) if specs else machine_disks()
    if not chosen:
        raise InvalidInput("No disks found to replicate: name them with --devices")
    disks: list[Disk] = []
    for spec in chosen:
        disk = resolve_disk(spec, boot)
        if all(d.name != disk.name for d in disks):
            disks.append(disk)
    machine = set(machine_disks())
    if not force_volumes and any(d.name in machine for d in disks):
        for name in boot:
            if all(d.name != "/dev/" + name for d in disks):
                disks.insert(0, resolve_disk("/dev/" + name, boot))
    return disks


# -- source properties -------------------------------------------------------------------------------------


def _cpus() -> list[dict[str, Any]]:
    """MGN's ``cpus``: one entry per socket with its logical CPU count and model name."""
    sockets: dict[str, dict[str, Any]] = {}
    for block in _read(Path("/proc/cpuinfo")).split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "processor" not in fields:
            continue
        entry = sockets.setdefault(fields.get("physical id", "0"), {"cores": 0, "modelName": ""})
        entry["cores"] += 1
        entry["modelName"] = fields.get("model name") or fields.get("cpu model") or platform.machine()
    if not sockets:
        return [{"cores": os.cpu_count() or 1, "modelName": platform.processor() or platform.machine()}]
    return [sockets[k] for k in sorted(sockets)]


def _meminfo() -> dict[str, int]:
    out = {}
    for line in _read(Path("/proc/meminfo")).splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def _ipv4(ifname: str) -> str | None:
    """The interface's IPv4 address through SIOCGIFADDR, None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def _ipv6() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in _read(Path("/proc/net/if_inet6")).splitlines():
        parts = line.split()
        if len(parts) == 6:
            addr = ":".join(parts[0][i : i + 4] for i in range(0, 32, 4))
            out.setdefault(parts[5], []).append(
                socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr))
            )
    return out


def _default_interface() -> str | None:
    for line in _read(Path("/proc/net/route")).splitlines()[1:]:
        parts = line.split()
        if len(parts) > 2 and parts[1] == "00000000":
            return parts[0]
    return None


def network_interfaces() -> list[dict[str, Any]]:
    """MGN's ``networkInterfaces``: every interface with a real MAC, its IPs, the default route's marked
    primary (the first one when there is no default route)."""
    v6 = _ipv6()
    primary = _default_interface()
    out = []
    try:
        names = sorted(os.listdir("/sys/class/net"))
    except OSError:
        names = []
    # Only NICs backed by a device: veth, bridges and tunnels come and go and would make the machine's
    # identity (its MAC addresses) unstable. Without any such NIC, every interface with a MAC counts.
    physical = [n for n in names if os.path.exists(f"/sys/class/net/{n}/device")]
    for name in physical or names:
        mac = _read(Path("/sys/class/net") / name / "address")
        if not mac or mac == "00:00:00:00:00:00":
            continue
        ips = [ip for ip in [_ipv4(name)] if ip] + v6.get(name, [])
        out.append({"macAddress": mac, "ips": ips, "isPrimary": name == primary, "_name": name})
    if out and not any(n["isPrimary"] for n in out):
        out[0]["isPrimary"] = True
    for n in out:
        n.pop("_name")
    return out


def os_string() -> str:
    pretty = ""
    for line in _read(Path("/etc/os-release")).splitlines():
        if line.startswith("PRETTY_NAME="):
            pretty = line.split("=", 1)[1].strip().strip('"')
    uname = platform.uname()
    return f"{pretty or uname.system} (kernel {uname.release}, {uname.machine})"


def boot_mode() -> str:
    """``UEFI`` when the machine booted through EFI, else ``LEGACY_BIOS`` (MGN's BootMode values)."""
    return "UEFI" if os.path.isdir("/sys/firmware/efi") else "LEGACY_BIOS"


def identification_hints(user_provided_id: str | None = None) -> dict[str, Any]:
    """The ``hints`` of RegisterAgentForMgn: how the control plane recognises a machine installed again."""
    hints: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "fqdn": socket.getfqdn(),
        "macAddresses": sorted({n["macAddress"] for n in network_interfaces()}),
        "bootMode": boot_mode(),
    }
    if user_provided_id:
        hints["userProvidedID"] = user_provided_id
    return hints


def source_properties(disks: Sequence[Disk]) -> dict[str, Any]:
    """MGN's ``SourceProperties`` shape for this machine, with the replicated disks."""
    return {
        "lastUpdatedDateTime": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # noqa: UP017 - Python 3.8
        "identificationHints": {"hostname": socket.gethostname(), "fqdn": socket.getfqdn()},
        "networkInterfaces": network_interfaces(),
        "disks": [{"deviceName": d.name, "bytes": d.size} for d in disks],
        "cpus": _cpus(),
        "ramBytes": _meminfo().get("MemTotal", 0),
        "os": {"fullString": os_string()},
    }


class Utilization:
    """CPU and memory utilization between successive `sample()` calls (from /proc/stat, /proc/meminfo)."""

    def __init__(self) -> None:
        self._last = self._cpu_times()

    @staticmethod
    def _cpu_times() -> tuple[int, int]:
        fields = _read(Path("/proc/stat")).splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    def sample(self) -> dict[str, Any]:
        """One metrics entry of SendAgentMetricsForMgn: ``{timestamp, cpuPercent, memoryPercent}``."""
        total, idle = self._cpu_times()
        d_total, d_idle = total - self._last[0], idle - self._last[1]
        self._last = (total, idle)
        cpu = 100.0 * (d_total - d_idle) / d_total if d_total > 0 else 0.0
        mem = _meminfo()
        mem_total = mem.get("MemTotal", 0)
        used = mem_total - mem.get("MemAvailable", mem.get("MemFree", 0))
        return {
            "timestamp": time.time(),
            "cpuPercent": round(cpu, 2),
            "memoryPercent": round(100.0 * used / mem_total, 2) if mem_total else 0.0,
        }
