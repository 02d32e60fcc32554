"""LVM on a host without device-mapper: read a guest's volume groups and map each logical volume to the
byte ranges of the disk files that hold it.

LVM's own tools read the metadata (``pvs``/``lvs`` with activation disabled, restricted to the devices of
this conversion with ``--devices``, so the host's own or another conversion's volume groups of the same
name are never seen). Nothing is activated: a linear logical volume is a list of extents, which
`rehost.conversion.storage` attaches as one loop device (one extent) or through a FUSE file that
concatenates them (several segments, or several physical volumes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rehost.conversion.blockdev import CommandFailed, run
from rehost.conversion.edits import SUFFIX, keep_original
from rehost.errors import ConversionError

#: Read-only LVM: no activation (there is no device-mapper), no devices file, no metadata backups.
LVM_CONFIG = ("global { activation = 0 } devices { use_devicesfile = 0 write_cache_state = 0 } "
              "backup { backup = 0 archive = 0 }")


@dataclass(frozen=True)
class Extent:
    """``length`` bytes at ``offset`` in the disk file ``path``."""

    path: Path
    offset: int
    length: int


@dataclass(frozen=True)
class LogicalVolume:
    vg: str
    name: str
    size: int
    segtype: str
    #: The LV's bytes in order; empty when its segment type is not linear (see `unsupported`).
    extents: tuple[Extent, ...]
    unsupported: str = ""

    @property
    def mapper_name(self) -> str:
        """``/dev/mapper`` name: dashes in either part doubled, joined by one dash."""
        return f"{self.vg.replace('-', '--')}-{self.name.replace('-', '--')}"

    @property
    def device_names(self) -> tuple[str, ...]:
        """Every path the guest may name this LV by."""
        return (f"/dev/mapper/{self.mapper_name}", f"/dev/{self.vg}/{self.name}",
                f"/dev/disk/by-id/dm-name-{self.mapper_name}")

    @property
    def label(self) -> str:
        return f"{self.vg}/{self.name}"


@dataclass(frozen=True)
class PhysicalVolume:
    """A PV as conversion attached it: its loop device, and where its bytes lie in a disk file."""

    device: Path
    path: Path
    offset: int


def _report(tool: str, devices: Sequence[Path], fields: str) -> list[dict[str, str]]:
    argv = [tool, "--config", LVM_CONFIG, "--devices", ",".join(str(d) for d in devices),
            "--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields]
    try:
        out = run(argv, timeout=120)
    except CommandFailed as exc:
        raise ConversionError(f"reading the LVM metadata failed: {exc.stderr.strip()[-300:]}") from exc
    report = json.loads(out)["report"][0]
    return list(report.get(tool[:-1], report.get(tool, [])))


def scan(pvs: Sequence[PhysicalVolume]) -> list[LogicalVolume]:
    """Every logical volume of the volume groups on ``pvs``; raise `ConversionError` if a volume group
    misses one of its physical volumes (a disk that was not replicated)."""
    if not pvs:
        return []
    by_dev = {str(pv.device): pv for pv in pvs}
    devices = [pv.device for pv in pvs]
    pv_rows = _report("pvs", devices, "pv_name,vg_name,pe_start,vg_extent_size,pv_missing")
    pe_start = {r["pv_name"]: int(r["pe_start"]) for r in pv_rows}
    extent_size = {r["vg_name"]: int(r["vg_extent_size"]) for r in pv_rows if r["vg_name"]}
    lv_rows = _report("lvs", devices, "vg_name,lv_name,lv_size,segtype,seg_pe_ranges,vg_missing_pv_count")
    segments: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in lv_rows:
        if int(row.get("vg_missing_pv_count") or 0):
            raise ConversionError(f"volume group {row['vg_name']} misses {row['vg_missing_pv_count']} of its "
                                  "physical volumes: every disk it spans must be replicated")
        segments.setdefault((row["vg_name"], row["lv_name"]), []).append(row)
    lvs = []
    for (vg, name), rows in segments.items():
        size = int(rows[0]["lv_size"])
        odd = sorted({r["segtype"] for r in rows if r["segtype"] not in ("linear", "striped")})
        extents: list[Extent] = []
        for r in rows:
            ranges = r["seg_pe_ranges"].split()
            if r["segtype"] == "striped" and len(ranges) > 1:
                odd.append(f"striped over {len(ranges)} devices")
                continue
            for item in ranges:
                m = re.fullmatch(r"(.+):(\d+)-(\d+)", item)
                if not m or m.group(1) not in by_dev:
                    odd.append(f"extent {item} on an unknown device")
                    continue
                pv = by_dev[m.group(1)]
                first, last = int(m.group(2)), int(m.group(3))
                extents.append(Extent(pv.path, pv.offset + pe_start[m.group(1)] + first * extent_size[vg],
                                      (last - first + 1) * extent_size[vg]))
        unsupported = ", ".join(odd)
        lvs.append(LogicalVolume(vg, name, size, "/".join(sorted({r["segtype"] for r in rows})),
                                 () if unsupported else tuple(extents), unsupported))
    return lvs


def by_device_name(lvs: Sequence[LogicalVolume]) -> Mapping[str, LogicalVolume]:
    return {name: lv for lv in lvs for name in lv.device_names}


_FILTER_RE = re.compile(r"^(\s*)((?:global_)?filter\s*=.*)$", re.M)
_HW_IN_FILTER = re.compile(r"/dev/(?:[shv]d|xvd|nvme|disk/by-(?:id|path))")


def fix_guest_lvm(root: Path, *, dry_run: bool = False) -> list[str]:
    """Let the guest's LVM find its physical volumes on the target's disks.

    The devices file (``/etc/lvm/devices/system.devices``, RHEL 9's default) lists PVs by the source's
    device IDs, which no virtio disk has, so it is moved aside (LVM then scans every disk); a ``filter`` or
    ``global_filter`` in lvm.conf that names the source's disks (``/dev/sda``...) is commented out.
    ``dry_run`` only says so.
    """
    notes = []
    devices = root / "etc/lvm/devices/system.devices"
    if devices.is_file():
        if not dry_run:
            devices.rename(devices.with_name(devices.name + SUFFIX))
        notes.append("lvm: moved aside /etc/lvm/devices/system.devices (it names the source's disks by their "
                     "hardware IDs)")
    conf = root / "etc/lvm/lvm.conf"
    if conf.is_file():
        text = conf.read_text(errors="replace")
        new = _FILTER_RE.sub(lambda m: m.group(0) if not _HW_IN_FILTER.search(m.group(2))
                             else f"{m.group(1)}# rehost: the source's disks: {m.group(2)}", text)
        if new != text:
            if not dry_run:
                keep_original(conf)
                conf.write_text(new)
            notes.append("lvm: /etc/lvm/lvm.conf device filter naming the source's disks commented out")
    return notes
