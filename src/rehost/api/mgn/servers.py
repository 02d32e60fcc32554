"""Source servers: DescribeSourceServers, UpdateSourceServer, DeleteSourceServer, MarkAsArchived.

There is no CreateSourceServer: a server is added by its agent registering (`rehost.api.agent`) or by a
row of an import (`rehost.api.mgn.imports`).
"""

from __future__ import annotations

from typing import Any

from rehost.api.mgn.base import MgnBase, page
from rehost.api.mgn.grouping import servers_of_applications
from rehost.db import repo
from rehost.domain.lifecycle import LifeCycleState
from rehost.errors import Conflict


class ServerOps(MgnBase):
    """Mixin of `MgnService`: the source server operations, named after them."""

    def describe_source_servers(self, filters: dict[str, Any] | None = None, maxResults: int | None = None,
                                nextToken: str | None = None) -> dict[str, Any]:
        filters = filters or {}
        limit = maxResults or 1000
        with self.store.read() as conn:
            server_ids = filters.get("sourceServerIDs")
            if filters.get("applicationIDs"):
                in_apps = [s["sourceServerID"] for servers in
                           servers_of_applications(conn, filters["applicationIDs"]).values() for s in servers]
                server_ids = [sid for sid in in_apps if not server_ids or sid in server_ids]
                if not server_ids:
                    return {"items": []}
            rows = repo.query_servers(
                conn, ids=server_ids, is_archived=filters.get("isArchived"),
                lifecycle_states=filters.get("lifeCycleStates"), replication_types=filters.get("replicationTypes"),
                after_seq=repo.decode_token(nextToken), limit=limit + 1,
            )
            items = [self.public_server(conn, doc) for _, doc in rows[:limit]]
        return page(items, rows, limit)

    def get_server(self, server_id: str) -> dict[str, Any]:
        with self.store.read() as conn:
            return self.public_server(conn, repo.load_server(conn, server_id))

    def update_source_server(self, sourceServerID: str, **params: Any) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            for key in ("connectorAction", "userProvidedID", "fqdnForActionFramework"):
                if params.get(key) is not None:
                    if key == "userProvidedID" and doc.get("userProvidedID") and doc["userProvidedID"] != params[key]:
                        raise Conflict("userProvidedID cannot be changed once set.", resource_id=sourceServerID,
                                       resource_type="SOURCE_SERVER")
                    doc[key] = params[key]
            if params.get("platform"):
                doc["_platform"] = params["platform"]
            repo.save_server(conn, doc)
            return self.public_server(conn, doc)

    def delete_source_server(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            state = doc["lifeCycle"]["state"]
            if state != LifeCycleState.DISCONNECTED.value and not doc.get("isArchived"):
                raise Conflict(
                    f"Source server {sourceServerID} must be disconnected from service or archived before it is deleted "
                    f"(lifecycle state {state}).", resource_id=sourceServerID, resource_type="SOURCE_SERVER")
            if self._active_job_ids(conn, [sourceServerID]):
                raise Conflict(f"Source server {sourceServerID} has a job in progress.", resource_id=sourceServerID,
                               resource_type="SOURCE_SERVER")
            repo.delete_server(conn, sourceServerID)
            repo.remove_tags(conn, doc["arn"])
        self.hooks.server_deleted(sourceServerID)
        return {}

    def mark_as_archived(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, sourceServerID, for_update=True)
            if doc["lifeCycle"]["state"] not in (LifeCycleState.CUTOVER.value, LifeCycleState.DISCONNECTED.value):
                raise Conflict(
                    f"Source server {sourceServerID} can be archived only after cutover or disconnection "
                    f"(lifecycle state {doc['lifeCycle']['state']}).", resource_id=sourceServerID, resource_type="SOURCE_SERVER")
            doc["isArchived"] = True
            repo.save_server(conn, doc)
            return self.public_server(conn, doc)
