"""EC2's network and instance-type reads that launch automation makes: DescribeVpcs, DescribeSubnets,
DescribeAvailabilityZones, DescribeInstanceTypes.

They answer from what rehost has. Each configured target (`rehost.launch.placement`) is an availability
zone, and each of its networks a subnet of one default VPC: the local QEMU target's one network is QEMU's
user-mode network (``10.0.2.0/24``, the guest at ``10.0.2.15``), under the subnet ID launch templates
have always named; a libvirt target's are its active networks, with their own ranges. A target that does
not answer shows as a zone in state ``unavailable`` with the reason, and without subnets. Instance types are the catalog's
(`rehost.instancetypes`): the vCPUs and memory a launched VM gets, x86_64, HVM, EBS root, legacy BIOS
boot (the target's ``pc`` machine), one thread per core.

Every member of the three operations is honoured: the IDs asked for (EC2's NotFound codes for unknown
ones), the filters listed here (any other filter name is EC2's InvalidParameterValue), paging.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from rehost import instancetypes
from rehost.launch import errors as e
from rehost.launch.filters import matches, paginate
from rehost.launch.templates import DEFAULT_SUBNET

#: The VPC every security group of `rehost.launch.service` belongs to.
DEFAULT_VPC = "vpc-0rehost0000000001"
CIDR = "10.0.2.0/24"  # QEMU user-mode networking's

Fields = Mapping[str, Callable[[Any], list[str]]]


def _flag(value: object) -> list[str]:
    return ["true" if value else "false"]


SUBNET_FILTERS: Fields = {
    "subnet-id": lambda s: [s["SubnetId"]], "vpc-id": lambda s: [s["VpcId"]],
    "availability-zone": lambda s: [s["AvailabilityZone"]], "cidr-block": lambda s: [s["CidrBlock"]],
    "default-for-az": lambda s: _flag(s["DefaultForAz"]), "state": lambda s: [s["State"]],
    "owner-id": lambda s: [s["OwnerId"]], "subnet-arn": lambda s: [s["SubnetArn"]],
    "map-public-ip-on-launch": lambda s: _flag(s["MapPublicIpOnLaunch"]),
    "available-ip-address-count": lambda s: [str(s["AvailableIpAddressCount"])],
}
VPC_FILTERS: Fields = {
    "vpc-id": lambda v: [v["VpcId"]], "cidr": lambda v: [v["CidrBlock"]],
    "cidr-block-association.cidr-block": lambda v: [a["CidrBlock"] for a in v["CidrBlockAssociationSet"]],
    "is-default": lambda v: _flag(v["IsDefault"]), "state": lambda v: [v["State"]],
    "owner-id": lambda v: [v["OwnerId"]],
}
INSTANCE_TYPE_FILTERS: Fields = {
    "instance-type": lambda t: [t["InstanceType"]],
    "vcpu-info.default-vcpus": lambda t: [str(t["VCpuInfo"]["DefaultVCpus"])],
    "vcpu-info.default-cores": lambda t: [str(t["VCpuInfo"]["DefaultCores"])],
    "memory-info.size-in-mib": lambda t: [str(t["MemoryInfo"]["SizeInMiB"])],
    "current-generation": lambda t: _flag(t["CurrentGeneration"]),
    "free-tier-eligible": lambda t: _flag(t["FreeTierEligible"]),
    "burstable-performance-supported": lambda t: _flag(t["BurstablePerformanceSupported"]),
    "bare-metal": lambda t: _flag(t["BareMetal"]),
    "processor-info.supported-architecture": lambda t: t["ProcessorInfo"]["SupportedArchitectures"],
    "supported-virtualization-type": lambda t: t["SupportedVirtualizationTypes"],
    "supported-root-device-type": lambda t: t["SupportedRootDeviceTypes"],
    "supported-usage-class": lambda t: t["SupportedUsageClasses"],
    "supported-boot-mode": lambda t: t["SupportedBootModes"],
}
_FREE_TIER = {"t2.micro", "t3.micro"}


ZONE_FILTERS: Fields = {
    "zone-name": lambda z: [z["ZoneName"]], "zone-id": lambda z: [z["ZoneId"]], "state": lambda z: [z["State"]],
    "region-name": lambda z: [z["RegionName"]], "zone-type": lambda z: [z["ZoneType"]],
    "group-name": lambda z: [z["GroupName"]], "opt-in-status": lambda z: [z["OptInStatus"]],
}


class HostFacts:
    """The reads, for one account (``account_id``, ``region``) and its targets (`Targets`; without them,
    the local QEMU target's one subnet)."""

    def __init__(self, account: Any, targets: Any = None) -> None:
        self.account = account
        self.targets = targets

    def _arn(self, resource: str) -> str:
        return f"arn:aws:ec2:{self.account.region}:{self.account.account_id}:{resource}"

    def _subnet(self, subnet_id: str = DEFAULT_SUBNET, cidr: str = CIDR, zone: str = "", default: bool = True,
                public: bool = False, name: str = "rehost local target") -> dict[str, Any]:
        size = ipaddress.ip_network(cidr).num_addresses
        return {
            "SubnetId": subnet_id, "SubnetArn": self._arn(f"subnet/{subnet_id}"), "VpcId": DEFAULT_VPC,
            "State": "available", "CidrBlock": cidr, "AvailableIpAddressCount": max(size - 5, 0),
            "AvailabilityZone": zone or f"{self.account.region}a", "DefaultForAz": default,
            "MapPublicIpOnLaunch": public, "AssignIpv6AddressOnCreation": False, "Ipv6CidrBlockAssociationSet": [],
            "OwnerId": self.account.account_id, "Tags": [{"Key": "Name", "Value": name}],
        }

    def _subnets(self) -> list[dict[str, Any]]:
        if self.targets is None:
            return [self._subnet()]
        return [self._subnet(s.subnet_id, s.network.cidr, s.target.zone,
                             s.network.name == (s.target.network or s.network.name), s.network.public,
                             f"{s.target.name}/{s.network.name}" if not s.subnet_id == DEFAULT_SUBNET
                             else "rehost local target")
                for s in self.targets.subnets()]

    def describe_availability_zones(self, ZoneNames: list[str] | None = None, ZoneIds: list[str] | None = None,
                                    AllAvailabilityZones: bool | None = None, Filters: list[dict[str, Any]] | None = None,
                                    DryRun: bool | None = None) -> dict[str, Any]:
        """One zone per target; a target that does not answer is ``unavailable`` with the reason."""
        prefix = "".join(w[0] for w in self.account.region.split("-")[:2]) + self.account.region.split("-")[-1]
        zones = []
        for n, (target, why) in enumerate(self.targets.zones() if self.targets else [], 1):
            zone = {"ZoneName": target.zone, "ZoneId": f"{prefix}-az{n}", "State": "unavailable" if why else "available",
                    "RegionName": self.account.region, "GroupName": self.account.region,
                    "NetworkBorderGroup": self.account.region, "OptInStatus": "opt-in-not-required",
                    "ZoneType": "availability-zone",
                    "Messages": [{"Message": f"rehost target {target.name} ({target.url})"}]
                    + ([{"Message": why}] if why else [])}
            zones.append(zone)
        for wanted, key in ((ZoneNames, "ZoneName"), (ZoneIds, "ZoneId")):
            for value in wanted or []:
                if value not in {z[key] for z in zones}:
                    raise e.invalid_value(key, value, "Valid zones: " + ", ".join(z["ZoneName"] for z in zones))
        zones = [z for z in zones if (not ZoneNames or z["ZoneName"] in ZoneNames)
                 and (not ZoneIds or z["ZoneId"] in ZoneIds) and matches(z, Filters, ZONE_FILTERS)]
        return {"AvailabilityZones": zones}

    def _vpc(self) -> dict[str, Any]:
        return {
            "VpcId": DEFAULT_VPC, "State": "available", "CidrBlock": CIDR, "IsDefault": True,
            "InstanceTenancy": "default", "OwnerId": self.account.account_id,
            "CidrBlockAssociationSet": [{"AssociationId": "vpc-cidr-assoc-0rehost0000000001", "CidrBlock": CIDR,
                                         "CidrBlockState": {"State": "associated"}}],
            "Tags": [{"Key": "Name", "Value": "rehost local target"}],
        }

    @staticmethod
    def _instance_type(t: instancetypes.InstanceType) -> dict[str, Any]:
        burstable = t.family.startswith("t")
        return {
            "InstanceType": t.name, "CurrentGeneration": True, "FreeTierEligible": t.name in _FREE_TIER,
            "SupportedUsageClasses": ["on-demand"], "SupportedRootDeviceTypes": ["ebs"],
            "SupportedVirtualizationTypes": ["hvm"], "BareMetal": False,
            "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]},
            "VCpuInfo": {"DefaultVCpus": t.vcpus, "DefaultCores": t.vcpus, "DefaultThreadsPerCore": 1,
                         "ValidCores": [t.vcpus], "ValidThreadsPerCore": [1]},
            "MemoryInfo": {"SizeInMiB": t.memory_mib}, "InstanceStorageSupported": False,
            "BurstablePerformanceSupported": burstable, "SupportedBootModes": ["legacy-bios"],
        }

    def describe_subnets(self, SubnetIds: list[str] | None = None, Filters: list[dict[str, Any]] | None = None,
                         MaxResults: int | None = None, NextToken: str | None = None) -> dict[str, Any]:
        subnets = self._subnets()
        for subnet_id in SubnetIds or []:
            if subnet_id not in {s["SubnetId"] for s in subnets}:
                raise e.Ec2NotFound("InvalidSubnetID.NotFound", f"The subnet ID '{subnet_id}' does not exist",
                                    subnet_id, "subnet")
        subnets = [s for s in subnets if not SubnetIds or s["SubnetId"] in SubnetIds]
        page, token = paginate([s for s in subnets if matches(s, Filters, SUBNET_FILTERS)], MaxResults, NextToken)
        return {"Subnets": page, "NextToken": token}

    def describe_vpcs(self, VpcIds: list[str] | None = None, Filters: list[dict[str, Any]] | None = None,
                      MaxResults: int | None = None, NextToken: str | None = None) -> dict[str, Any]:
        vpc = self._vpc()
        for vpc_id in VpcIds or []:
            if vpc_id != vpc["VpcId"]:
                raise e.Ec2NotFound("InvalidVpcID.NotFound", f"The vpc ID '{vpc_id}' does not exist", vpc_id, "vpc")
        page, token = paginate([v for v in [vpc] if matches(v, Filters, VPC_FILTERS)], MaxResults, NextToken)
        return {"Vpcs": page, "NextToken": token}

    def describe_instance_types(self, InstanceTypes: list[str] | None = None,
                                Filters: list[dict[str, Any]] | None = None, MaxResults: int | None = None,
                                NextToken: str | None = None,
                                IncludeUnsupportedInRegion: bool | None = None) -> dict[str, Any]:
        # IncludeUnsupportedInRegion changes nothing: every type of the catalog runs on the local target.
        unknown = [name for name in InstanceTypes or [] if name not in instancetypes.CATALOG]
        if unknown:
            raise e.Ec2InvalidInput("InvalidInstanceType",
                                    f"The following supplied instance types do not exist: [{', '.join(unknown)}]")
        wanted = set(InstanceTypes or instancetypes.CATALOG)
        described = [self._instance_type(t) for name, t in instancetypes.CATALOG.items() if name in wanted]
        page, token = paginate([t for t in described if matches(t, Filters, INSTANCE_TYPE_FILTERS)],
                               MaxResults, NextToken)
        return {"InstanceTypes": page, "NextToken": token}
