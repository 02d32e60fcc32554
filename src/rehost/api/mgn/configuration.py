"""Per-server configuration: Get/UpdateReplicationConfiguration, Get/UpdateLaunchConfiguration,
Get/UpdateLaunchConfigurationDefaults (copies of the templates' settings kept in the server's document)."""

from __future__ import annotations

import copy
from typing import Any

from rehost.api.mgn.base import MgnBase
from rehost.api.mgn.templates import LAUNCH_CONFIGURATION_FIELDS, REPLICATION_FIELDS, pick
from rehost.db import repo
from rehost.errors import InvalidInput


class ConfigurationOps(MgnBase):
    """Mixin of `MgnService`: the per-server configuration operations, named after them."""

    def get_replication_configuration(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.read() as conn:
            return dict(repo.load_server(conn, sourceServerID)["_replicationConfiguration"])

    def update_replication_configuration(self, sourceServerID: str, **params: Any) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            self._require_not_archived(doc)
            config = doc["_replicationConfiguration"]
            known = {d["deviceName"] for d in config.get("replicatedDisks", [])}
            for disk in params.get("replicatedDisks") or []:
                if disk.get("deviceName") not in known:  # the model leaves deviceName optional
                    raise InvalidInput(f"Source server {sourceServerID} has no disk {disk.get('deviceName')}.")
            config.update(pick(params, REPLICATION_FIELDS + ("name", "replicatedDisks")))
            repo.save_server(conn, doc)
        self.hooks.replication_changed(doc)
        return dict(config)

    def get_launch_configuration(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.read() as conn:
            return dict(repo.load_server(conn, sourceServerID)["_launchConfiguration"])

    def update_launch_configuration(self, sourceServerID: str, **params: Any) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            self._require_not_archived(doc)
            config = doc["_launchConfiguration"]
            config.update(pick(params, LAUNCH_CONFIGURATION_FIELDS))
            repo.save_server(conn, doc)
            return dict(config)

    def get_launch_configuration_defaults(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.read() as conn:
            doc = repo.load_server(conn, sourceServerID)
            return {"sourceServerID": sourceServerID, **doc.get("_launchDefaults", {"smallVolumeMaxSize": 0})}

    def update_launch_configuration_defaults(self, sourceServerID: str, **params: Any) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            defaults = doc.setdefault("_launchDefaults", {"smallVolumeMaxSize": 0})
            for key in ("smallVolumeMaxSize", "smallVolumeConfiguration", "largeVolumeConfiguration"):
                if key in params and params[key] is not None:
                    defaults[key] = copy.deepcopy(params[key])  # a sent sub-object replaces the stored one whole
            repo.save_server(conn, doc)
            return {"sourceServerID": sourceServerID, **defaults}
