"""Replication and launch configuration templates: their defaults and the per-server copies."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

# What InitializeService creates, as MGN's console does (mgn-reference.md §8, hands-on Step 2):
# t3.small replication servers, GP3 large staging disks, no throttling, private IP data plane routing.
DEFAULT_REPLICATION_TEMPLATE: dict[str, Any] = {
    "stagingAreaSubnetId": "subnet-0a1b2c3d4e5f60718",
    "associateDefaultSecurityGroup": True,
    "replicationServersSecurityGroupsIDs": [],
    "replicationServerInstanceType": "t3.small",
    "useDedicatedReplicationServer": False,
    "defaultLargeStagingDiskType": "GP3",
    "ebsEncryption": "DEFAULT",
    "bandwidthThrottling": 0,
    "dataPlaneRouting": "PRIVATE_IP",
    "createPublicIP": False,
    "stagingAreaTags": {},
    "useFipsEndpoint": False,
    "internetProtocol": "IPV4",
    "storeSnapshotOnLocalZone": False,
}

DEFAULT_LAUNCH_TEMPLATE: dict[str, Any] = {
    "launchDisposition": "STARTED",
    "targetInstanceTypeRightSizingMethod": "BASIC",
    "copyPrivateIp": False,
    "associatePublicIpAddress": False,
    "copyTags": False,
    "licensing": {"osByol": True},
    "bootMode": "USE_SOURCE",
    "enableMapAutoTagging": False,
    "smallVolumeMaxSize": 0,
    "enableParametersEncryption": False,
    "postLaunchActions": {"deployment": "TEST_AND_CUTOVER", "ssmDocuments": []},
}

REPLICATION_FIELDS = tuple(DEFAULT_REPLICATION_TEMPLATE) + (
    "ebsEncryptionKeyArn", "outpostSnapshotLocation", "storageConfiguration",
)
LAUNCH_TEMPLATE_FIELDS = tuple(DEFAULT_LAUNCH_TEMPLATE) + (
    "mapAutoTaggingMpeID", "mapAutoTaggingKey", "smallVolumeConf", "largeVolumeConf", "parametersEncryptionKey",
)
LAUNCH_CONFIGURATION_FIELDS = (
    "name", "launchDisposition", "targetInstanceTypeRightSizingMethod", "copyPrivateIp", "copyTags", "licensing",
    "bootMode", "postLaunchActions", "enableMapAutoTagging", "mapAutoTaggingMpeID", "mapAutoTaggingKey",
)


def pick(source: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {k: copy.deepcopy(source[k]) for k in fields if k in source and source[k] is not None}


def replication_configuration_for(server_id: str, template: dict[str, Any], devices: list[dict[str, Any]]) -> dict[str, Any]:
    """A new server's replication configuration: the template's settings and one entry per disk."""
    config = pick(template, REPLICATION_FIELDS)
    config["sourceServerID"] = server_id
    config["name"] = server_id
    config["replicatedDisks"] = [
        {"deviceName": d["deviceName"], "isBootDisk": bool(d.get("isBoot")), "stagingDiskType": "AUTO"} for d in devices
    ]
    return config


def launch_configuration_for(server_id: str, hostname: str, template: dict[str, Any], ec2_template_id: str) -> dict[str, Any]:
    config = pick(template, LAUNCH_CONFIGURATION_FIELDS)
    config["sourceServerID"] = server_id
    config["name"] = hostname or server_id
    config["ec2LaunchTemplateID"] = ec2_template_id
    return config


def replication_server_key(config: dict[str, Any]) -> str:
    """Replication servers are shared between servers whose settings that shape the server are identical."""
    relevant = (
        config.get("stagingAreaSubnetId"), config.get("replicationServerInstanceType"),
        tuple(sorted(config.get("replicationServersSecurityGroupsIDs") or [])), config.get("dataPlaneRouting"),
        config.get("createPublicIP"), config.get("ebsEncryption"),
    )
    return hashlib.sha256(repr(relevant).encode()).hexdigest()[:32]
