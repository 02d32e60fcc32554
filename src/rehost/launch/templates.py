"""Launch template data (EC2's ``LaunchTemplateData`` shape, member names) and what a launch takes from it.

Pure: no database or target. A version's data is kept exactly as a client sent it (request member names,
which the response shape shares), so DescribeLaunchTemplateVersions returns what CreateLaunchTemplateVersion
was given. `LaunchSettings` is the part of it a QEMU launch uses.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rehost import instancetypes
from rehost.launch.errors import invalid_value

#: What MGN's default template offers until the operator edits it (hands-on Step 5 turns the public IP on).
DEFAULT_INSTANCE_TYPE = "t3.small"
DEFAULT_INGRESS_PORTS = (22, 80)
DEFAULT_SUBNET = "subnet-0a1b2c3d4e5f60718"
VOLUME_TYPES = ("standard", "io1", "io2", "gp2", "sc1", "st1", "gp3")

TEMPLATE_ID = re.compile(r"^lt-[0-9a-f]{17}$")
INSTANCE_ID = re.compile(r"^i-([0-9a-f]{8}|[0-9a-f]{17})$")


@dataclass(frozen=True)
class LaunchSettings:
    """What one launch template version asks of a launch."""

    instance_type: str
    associate_public_ip: bool
    ingress_ports: tuple[int, ...]
    security_group_ids: tuple[str, ...]
    volume_type: str
    user_data: bytes = b""
    tags: Mapping[str, str] = field(default_factory=dict)
    #: Where to run (`rehost.launch.placement`): the primary interface's subnet, the placement's zone.
    subnet_id: str = ""
    availability_zone: str = ""


def default_data(hostname: str, security_group_id: str, instance_type: str = DEFAULT_INSTANCE_TYPE,
                 subnet_id: str = DEFAULT_SUBNET) -> dict[str, Any]:
    """Version 1 of a new server's template: no public IP, the server's security group, a gp3 boot volume,
    ``subnet_id`` (the default target's network)."""
    data: dict[str, Any] = {
        "InstanceType": instance_type,
        "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": False, "DeleteOnTermination": True,
                               "Groups": [security_group_id], "SubnetId": subnet_id}],
        "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeType": "gp3", "DeleteOnTermination": True}}],
        "DisableApiTermination": False,
    }
    if hostname:
        data["TagSpecifications"] = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": hostname}]}]
    return data


def merge(source: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    """A new version's data: ``source`` (a SourceVersion's data) with each top-level member in ``changes``
    replacing the source's, as EC2 does; without a source the version holds only ``changes``."""
    out = copy.deepcopy(dict(source or {}))
    out.update(copy.deepcopy(dict(changes)))
    return out


def validate(data: Mapping[str, Any]) -> None:
    """Reject what a QEMU launch could not honour, with EC2's InvalidParameterValue."""
    itype = data.get("InstanceType")
    if itype is not None and itype not in instancetypes.CATALOG:
        raise invalid_value("InstanceType", itype, "rehost knows the types " + ", ".join(sorted(instancetypes.CATALOG)))
    for i, nic in enumerate(data.get("NetworkInterfaces") or [], 1):
        if nic.get("DeviceIndex", 0) not in (0, 1):
            raise invalid_value(f"LaunchTemplateData.NetworkInterface.{i}.DeviceIndex", nic.get("DeviceIndex"))
    for i, bdm in enumerate(data.get("BlockDeviceMappings") or [], 1):
        vtype = (bdm.get("Ebs") or {}).get("VolumeType")
        if vtype is not None and vtype not in VOLUME_TYPES:
            raise invalid_value(f"LaunchTemplateData.BlockDeviceMapping.{i}.Ebs.VolumeType", vtype)
    user_data = data.get("UserData")
    if user_data is not None:
        try:
            base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_value("LaunchTemplateData.UserData", "...", "User data must be base64 encoded.") from None


def security_groups(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The security groups a version names: its primary interface's Groups, else the top-level ones."""
    for nic in data.get("NetworkInterfaces") or []:
        if nic.get("DeviceIndex", 0) == 0 and nic.get("Groups"):
            return tuple(nic["Groups"])
    return tuple(data.get("SecurityGroupIds") or ())


def placement(data: Mapping[str, Any]) -> tuple[str, str]:
    """(subnet ID, availability zone) a version's data names: its primary interface's subnet, its placement."""
    primary: Mapping[str, Any] = next((n for n in data.get("NetworkInterfaces") or [] if n.get("DeviceIndex", 0) == 0), {})
    return str(primary.get("SubnetId") or ""), str((data.get("Placement") or {}).get("AvailabilityZone") or "")


def settings(data: Mapping[str, Any], ports_of_group: Mapping[str, Sequence[int]],
             default_group: str | None) -> LaunchSettings:
    """The launch settings of a version's data; ``ports_of_group`` gives each security group's TCP ports.

    A version naming no security group gets the server's own group (``default_group``), as an EC2 instance
    without one gets its VPC's default group.
    """
    groups = security_groups(data) or ((default_group,) if default_group else ())
    ports = sorted({p for g in groups for p in ports_of_group.get(g, ())})
    primary: Mapping[str, Any] = next((n for n in data.get("NetworkInterfaces") or [] if n.get("DeviceIndex", 0) == 0), {})
    bdm: Mapping[str, Any] = next(iter(data.get("BlockDeviceMappings") or []), {})
    tags: dict[str, str] = {}
    for spec in data.get("TagSpecifications") or []:
        if spec.get("ResourceType", "instance") == "instance":
            tags.update({t["Key"]: t.get("Value", "") for t in spec.get("Tags") or []})
    user_data = base64.b64decode(data["UserData"]) if data.get("UserData") else b""
    return LaunchSettings(
        instance_type=data.get("InstanceType") or DEFAULT_INSTANCE_TYPE,
        associate_public_ip=bool(primary.get("AssociatePublicIpAddress", False)),
        ingress_ports=tuple(ports), security_group_ids=groups,
        volume_type=(bdm.get("Ebs") or {}).get("VolumeType", "gp3"), user_data=user_data, tags=tags,
        subnet_id=placement(data)[0], availability_zone=placement(data)[1])


def ingress_rules(ports: Sequence[int]) -> list[dict[str, Any]]:
    """A security group's IpPermissions opening each TCP port to everyone."""
    for port in ports:
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise invalid_value("IpPermissions.FromPort", port)
    return [{"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            for p in sorted(set(ports))]


def rule_ports(rules: Sequence[Mapping[str, Any]]) -> tuple[int, ...]:
    """The TCP ports a security group's IpPermissions open (ranges expanded, capped at 64 ports)."""
    ports: set[int] = set()
    for rule in rules:
        if rule.get("IpProtocol") in ("tcp", "-1", "6"):
            low, high = int(rule.get("FromPort", 0)), int(rule.get("ToPort", rule.get("FromPort", 0)))
            ports.update(range(low, min(high, low + 63) + 1))
    return tuple(sorted(ports))
