"""MGN's applications: groups of source servers (CreateApplication ... DisassociateSourceServers).

A source server belongs to at most one application: associating one that is in another application is a
ConflictException (disassociate it there first), as is associating an archived server. The rules shared
with waves (names, archiving, quotas, aggregated status) are in `rehost.api.mgn.grouping`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from rehost.api.mgn.grouping import APPLICATION, WAVE, GroupOps
from rehost.db import repo
from rehost.errors import Conflict


class ApplicationOps(GroupOps):
    """Mixin of `MgnService`: the application operations, named after them."""

    def create_application(self, name: str, description: str | None = None,
                           tags: dict[str, str] | None = None) -> dict[str, Any]:
        return self._create_group(APPLICATION, name, description, tags)

    def update_application(self, applicationID: str, name: str | None = None,
                           description: str | None = None) -> dict[str, Any]:
        return self._update_group(APPLICATION, applicationID, name, description)

    def delete_application(self, applicationID: str) -> dict[str, Any]:
        return self._delete_group(APPLICATION, applicationID)

    def archive_application(self, applicationID: str) -> dict[str, Any]:
        return self._set_archived(APPLICATION, applicationID, True)

    def unarchive_application(self, applicationID: str) -> dict[str, Any]:
        return self._set_archived(APPLICATION, applicationID, False)

    def list_applications(self, filters: dict[str, Any] | None = None, maxResults: int | None = None,
                          nextToken: str | None = None) -> dict[str, Any]:
        return self._list_groups(APPLICATION, filters, maxResults, nextToken)

    def associate_source_servers(self, applicationID: str, sourceServerIDs: list[str]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            app = self._load_active(conn, APPLICATION, applicationID)
            servers = [repo.load_server(conn, sid, for_update=True) for sid in dict.fromkeys(sourceServerIDs)]
            for server in servers:
                sid, current = server["sourceServerID"], server.get("applicationID")
                if current and current != applicationID:
                    raise Conflict(f"Source server {sid} already belongs to application {current}; a source server "
                                   "belongs to at most one application.", resource_id=sid, resource_type="SOURCE_SERVER")
                if server.get("isArchived") and current != applicationID:
                    raise Conflict(f"Source server {sid} is archived.", resource_id=sid, resource_type="SOURCE_SERVER")
            joining = [s for s in servers if s.get("applicationID") != applicationID]
            self._check_capacity(conn, APPLICATION, applicationID, len(joining))
            for server in joining:
                server["applicationID"] = applicationID
                repo.save_server(conn, server)
            self._refresh_application(conn, app)
        return {}

    def disassociate_source_servers(self, applicationID: str, sourceServerIDs: list[str]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            app = self._load_active(conn, APPLICATION, applicationID)
            servers = [repo.load_server(conn, sid, for_update=True) for sid in dict.fromkeys(sourceServerIDs)]
            for server in servers:
                if server.get("applicationID") != applicationID:
                    sid = server["sourceServerID"]
                    raise Conflict(f"Source server {sid} is not associated with application {applicationID}.",
                                   resource_id=sid, resource_type="SOURCE_SERVER")
            for server in servers:
                server.pop("applicationID", None)
                repo.save_server(conn, server)
            self._refresh_application(conn, app)
        return {}

    def _refresh_application(self, conn: Connection, app: dict[str, Any]) -> None:
        self._refresh(conn, APPLICATION, [app["applicationID"]])
        if app.get("waveID"):
            self._refresh(conn, WAVE, [app["waveID"]])

    def _server_ids_in_applications(self, conn: Connection, application_ids: list[str]) -> list[str]:
        """The source servers of these applications (DescribeSourceServers' ``applicationIDs`` filter)."""
        members = self._members(conn, APPLICATION, application_ids)
        return [server["sourceServerID"] for servers in members.values() for server in servers]
