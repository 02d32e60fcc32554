"""The small interfaces a launch job runs through (docs/contracts.md "Job runner interfaces").

The replication issue implements `SnapshotProvider`, the launch issue `Converter` and `TargetDriver`.
Each method may block for as long as its step takes; it raises the matching `RehostError` subclass
(SnapshotError, ConversionError, TargetError) with a reason a person can act on, which the job log records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class SnapshotRef:
    source_server_id: str
    snapshot_id: str
    taken_at: datetime
    disks: dict[str, int] = field(default_factory=dict)  # device name -> bytes


@dataclass(frozen=True)
class ConvertedDisk:
    path: Path  # qcow2 image that boots on the target's virtual hardware
    notes: tuple[str, ...] = ()
    data_disks: tuple[Path, ...] = ()  # the source's other disks, in its order, attached after the boot disk
    boot_modes: frozenset[str] = frozenset()  # firmware the boot disk can boot in (LEGACY_BIOS, UEFI)


@dataclass(frozen=True)
class LaunchRequest:
    """What a launch job asks of a target for one source server."""

    source_server_id: str
    job_id: str
    instance_type: str
    vcpus: int
    memory_mib: int
    disk: ConvertedDisk
    ingress_ports: tuple[int, ...] = (22, 80)
    associate_public_ip: bool = True
    user_data: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    boot_mode: str = "LEGACY_BIOS"  # the firmware to boot in (MGN's BootMode: LEGACY_BIOS or UEFI)


@dataclass(frozen=True)
class BootResult:
    """Whether a launched guest reached user space (``signal``: what showed it, or why not)."""

    booted: bool
    signal: str
    seconds: float
    console_tail: tuple[str, ...] = ()

    def failure_text(self) -> str:
        tail = "\n".join(self.console_tail) if self.console_tail else "(the console is empty)"
        return f"{self.signal}. Last console lines:\n{tail}"


class SnapshotProvider(Protocol):
    def take_snapshot(self, source_server_id: str, timeout: float) -> SnapshotRef: ...

    def latest_snapshot(self, source_server_id: str) -> SnapshotRef | None: ...


class Converter(Protocol):
    def convert(self, snapshot: SnapshotRef, boot_device: str, work_dir: Path) -> ConvertedDisk: ...


class Launcher(Protocol):
    """Launches and terminates target instances for jobs (the EC2-style layer over a target driver)."""

    def launch(self, request: LaunchRequest) -> dict[str, Any]: ...  # -> {"instanceId", "publicIp", ...}

    def terminate(self, instance_id: str) -> None: ...

    def wait_until_booted(self, instance_id: str, timeout: float) -> BootResult: ...

    def fail(self, instance_id: str, reason: str) -> None: ...  # terminate a launch that did not boot
