"""Replication and launch configuration templates: their defaults, the per-server copies, and their
operations (`TemplateOps`, a mixin of `MgnService`)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from sqlalchemy import Connection

from rehost import ids
from rehost.api.mgn.base import MgnBase, page
from rehost.db import repo

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


class TemplateOps(MgnBase):
    """Mixin of `MgnService`: InitializeService and the template operations, named after them."""

    def is_initialized(self) -> bool:
        return self.store.get_meta("initialized") == "1"

    def initialize_service(self) -> dict[str, Any]:
        with self.store.transaction() as conn:
            if not repo.list_templates(conn, "replication"):
                self._create_template(conn, "replication", "rct", "replication-configuration-template",
                                      copy.deepcopy(DEFAULT_REPLICATION_TEMPLATE), {})
            if not repo.list_templates(conn, "launch"):
                self._create_launch_template(conn, copy.deepcopy(DEFAULT_LAUNCH_TEMPLATE), {})
            self.store.set_meta(conn, "initialized", "1")
        return {}

    def _create_template(self, conn: Connection, kind: str, prefix: str, arn_type: str, doc: dict[str, Any],
                         tags: dict[str, str]) -> dict[str, Any]:
        template_id = ids.new_id(prefix)
        id_key = "replicationConfigurationTemplateID" if kind == "replication" else "launchConfigurationTemplateID"
        doc[id_key] = template_id
        doc["arn"] = self.account.arn(f"{arn_type}/{template_id}")
        repo.save_template(conn, kind, template_id, doc, seq=self.store.next_seq(conn, f"template:{kind}"))
        repo.put_tags(conn, doc["arn"], tags)
        return self._with_tags(conn, doc)

    def _create_launch_template(self, conn: Connection, doc: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
        doc["ec2LaunchTemplateID"] = ids.new_id("lt")
        return self._create_template(conn, "launch", "lct", "launch-configuration-template", doc, tags)

    def _with_tags(self, conn: Connection, doc: dict[str, Any]) -> dict[str, Any]:
        doc = dict(doc)
        doc["tags"] = repo.get_tags(conn, doc["arn"])
        return doc

    def _describe_templates(self, kind: str, template_ids: list[str] | None, max_results: int | None,
                            token: str | None) -> dict[str, Any]:
        limit = max_results or 1000
        with self.store.read() as conn:
            rows = repo.list_templates(conn, kind, ids=template_ids, after_seq=repo.decode_token(token), limit=limit + 1)
            items = [self._with_tags(conn, doc) for _, doc in rows[:limit]]
        return page(items, rows, limit)

    def _update_template(self, kind: str, template_id: str, params: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_template(conn, kind, template_id)
            doc.update(pick(params, fields))
            repo.save_template(conn, kind, template_id, doc)
            return self._with_tags(conn, doc)

    def _delete_template(self, kind: str, template_id: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_template(conn, kind, template_id)
            repo.delete_template(conn, template_id)
            repo.remove_tags(conn, doc["arn"])
        return {}

    def create_replication_configuration_template(self, **params: Any) -> dict[str, Any]:
        tags = params.pop("tags", None) or {}
        doc = pick(params, REPLICATION_FIELDS)
        with self.store.transaction() as conn:
            return self._create_template(conn, "replication", "rct", "replication-configuration-template", doc, tags)

    def describe_replication_configuration_templates(self, replicationConfigurationTemplateIDs: list[str] | None = None,
                                                     maxResults: int | None = None, nextToken: str | None = None) -> dict[str, Any]:
        return self._describe_templates("replication", replicationConfigurationTemplateIDs, maxResults, nextToken)

    def update_replication_configuration_template(self, replicationConfigurationTemplateID: str, **params: Any) -> dict[str, Any]:
        return self._update_template("replication", replicationConfigurationTemplateID, params, REPLICATION_FIELDS)

    def delete_replication_configuration_template(self, replicationConfigurationTemplateID: str) -> dict[str, Any]:
        return self._delete_template("replication", replicationConfigurationTemplateID)

    def create_launch_configuration_template(self, **params: Any) -> dict[str, Any]:
        tags = params.pop("tags", None) or {}
        doc = {**copy.deepcopy(DEFAULT_LAUNCH_TEMPLATE), **pick(params, LAUNCH_TEMPLATE_FIELDS)}
        with self.store.transaction() as conn:
            return self._create_launch_template(conn, doc, tags)

    def describe_launch_configuration_templates(self, launchConfigurationTemplateIDs: list[str] | None = None,
                                                maxResults: int | None = None, nextToken: str | None = None) -> dict[str, Any]:
        return self._describe_templates("launch", launchConfigurationTemplateIDs, maxResults, nextToken)

    def update_launch_configuration_template(self, launchConfigurationTemplateID: str, **params: Any) -> dict[str, Any]:
        return self._update_template("launch", launchConfigurationTemplateID, params, LAUNCH_TEMPLATE_FIELDS)

    def delete_launch_configuration_template(self, launchConfigurationTemplateID: str) -> dict[str, Any]:
        return self._delete_template("launch", launchConfigurationTemplateID)
