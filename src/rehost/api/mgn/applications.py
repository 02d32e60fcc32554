"""MGN's applications: groups of source servers (CreateApplication ... DisassociateSourceServers).

A source server belongs to at most one application: associating one that is in another application is a
ConflictException (disassociate it there first), as is associating an archived server. The rules shared
with waves (names, archiving, quotas, aggregated status) are in `rehost.api.mgn.grouping`.
"""

from __future__ import annotations

from typing import Any

from rehost.api.mgn.grouping import APPLICATION, GroupOps


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
        return self._associate(APPLICATION, applicationID, sourceServerIDs)

    def disassociate_source_servers(self, applicationID: str, sourceServerIDs: list[str]) -> dict[str, Any]:
        return self._disassociate(APPLICATION, applicationID, sourceServerIDs)
