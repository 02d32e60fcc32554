"""The target driver protocol: where launched instances run (local QEMU, libvirt; OpenStack or EC2 can follow).

A driver owns its instances' lifecycle. States follow EC2's names: ``pending`` (launched, the guest has not
started yet), ``running``, ``stopping``, ``stopped``, ``terminated``. A terminated instance stays
describable (as on EC2) but its disk is gone. Every method raises `TargetError` (or `NotFound` for an
unknown instance ID); none blocks for a guest to finish booting.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable


class InstanceState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"


def new_instance_id() -> str:
    """An EC2-shaped instance ID: "i-" and 17 hex digits."""
    return "i-" + secrets.token_hex(9)[:17]


@dataclass(frozen=True)
class LaunchSpec:
    """What to launch: the instance's ID (chosen by the caller), its type's size, the converted disk.

    ``disk_image`` is the converted qcow2; the driver never writes to it (each instance gets its own
    copy-on-write disk over it). ``ingress_ports`` are the guest TCP ports the launch template opens to
    the world; the driver makes each reachable at ``public_ip:port_map[port]``.
    """

    instance_id: str
    instance_type: str
    vcpus: int
    memory_mib: int
    disk_image: Path
    ingress_ports: tuple[int, ...] = (22, 80)
    user_data: bytes = b""
    tags: Mapping[str, str] = field(default_factory=dict)
    #: The source's other disks (converted images, never written either), attached in order after the boot disk.
    data_disks: tuple[Path, ...] = ()
    #: The firmware, in EC2's words: "legacy-bios" or "uefi".
    boot_mode: str = "legacy-bios"
    #: The target network the instance's NIC joins (one of the driver's `networks`); "" for its default.
    network: str = ""


@dataclass(frozen=True)
class Network:
    """One network of a target, shown as an EC2 subnet: its name on the target, its IPv4 range, and whether
    an address on it is reachable from outside the target host (then it is also the instance's public IP)."""

    name: str
    cidr: str
    public: bool = False


@dataclass(frozen=True)
class TargetInstance:
    """A snapshot of one instance's state as the driver sees it now."""

    instance_id: str
    instance_type: str
    state: InstanceState
    public_ip: str
    port_map: Mapping[int, int]
    launch_time: datetime
    vcpus: int
    memory_mib: int
    private_ip: str = ""
    state_reason: str = ""
    accelerator: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    boot_mode: str = "legacy-bios"

    def url(self, guest_port: int = 80, scheme: str = "http") -> str:
        """The URL at which the guest's ``guest_port`` is reachable from this host."""
        return f"{scheme}://{self.public_ip}:{self.port_map[guest_port]}/"


@runtime_checkable
class TargetDriver(Protocol):
    """The interface the job runner, the EC2 API and the console use to run instances."""

    def launch(self, spec: LaunchSpec) -> TargetInstance:
        """Create and start the instance; returns it pending or running. Raises `TargetError`."""
        ...

    def terminate(self, instance_id: str, reason: str = "Client.UserInitiatedShutdown") -> None:
        """Stop the instance if it runs and delete its disk (its console stays readable); idempotent on a
        terminated instance. ``reason`` becomes its state reason (EC2's StateTransitionReason)."""
        ...

    def describe(self, instance_id: str) -> TargetInstance:
        """The instance's current state. Raises `NotFound` for an ID this driver never launched."""
        ...

    def list(self) -> list[TargetInstance]:
        """Every instance this driver knows, terminated ones included, oldest launch first."""
        ...

    def console_output(self, instance_id: str) -> str:
        """Everything the guest wrote to its serial console so far (EC2 GetConsoleOutput)."""
        ...

    def stop(self, instance_id: str) -> TargetInstance:
        """Shut the guest down (its disk is kept); returns it stopping or stopped."""
        ...

    def start(self, instance_id: str) -> TargetInstance:
        """Boot a stopped instance again on the same disk; returns it pending or running."""
        ...

    def networks(self) -> tuple[Network, ...]:
        """The networks an instance can join (EC2 subnets). Raises `TargetError` if the target is unreachable."""
        ...
