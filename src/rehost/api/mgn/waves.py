"""MGN's waves: groups of applications (CreateWave ... DisassociateApplications).

An application belongs to at most one wave: associating one that is in another wave is a
ConflictException (disassociate it there first), as is associating an archived application. The rules
shared with applications (names, archiving, quotas, aggregated status) are in `rehost.api.mgn.grouping`.
"""

from __future__ import annotations

from typing import Any

from rehost.api.mgn.grouping import APPLICATION, WAVE, GroupOps


class WaveOps(GroupOps):
    """Mixin of `MgnService`: the wave operations, named after them."""

    def create_wave(self, name: str, description: str | None = None,
                    tags: dict[str, str] | None = None) -> dict[str, Any]:
        return self._create_group(WAVE, name, description, tags)

    def update_wave(self, waveID: str, name: str | None = None, description: str | None = None) -> dict[str, Any]:
        return self._update_group(WAVE, waveID, name, description)

    def delete_wave(self, waveID: str) -> dict[str, Any]:
        return self._delete_group(WAVE, waveID)

    def archive_wave(self, waveID: str) -> dict[str, Any]:
        return self._set_archived(WAVE, waveID, True)

    def unarchive_wave(self, waveID: str) -> dict[str, Any]:
        return self._set_archived(WAVE, waveID, False)

    def list_waves(self, filters: dict[str, Any] | None = None, maxResults: int | None = None,
                   nextToken: str | None = None) -> dict[str, Any]:
        return self._list_groups(WAVE, filters, maxResults, nextToken)

    def associate_applications(self, waveID: str, applicationIDs: list[str]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            self._load_active(conn, WAVE, waveID)
            apps = self._load_groups(conn, APPLICATION, applicationIDs)
            for app in apps:
                app_id, current = app["applicationID"], app.get("waveID")
                if current and current != waveID:
                    raise self._conflict(APPLICATION, app_id, f"Application {app_id} already belongs to wave {current}; "
                                                              "an application belongs to at most one wave.")
                if app.get("isArchived") and current != waveID:
                    raise self._conflict(APPLICATION, app_id, f"Application {app_id} is archived.")
            joining = [app for app in apps if app.get("waveID") != waveID]
            self._check_capacity(conn, WAVE, waveID, len(joining))
            for app in joining:
                app["waveID"] = waveID
                self._save_group(conn, APPLICATION, app)
            self._refresh(conn, WAVE, [waveID])
        return {}

    def disassociate_applications(self, waveID: str, applicationIDs: list[str]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            self._load_active(conn, WAVE, waveID)
            apps = self._load_groups(conn, APPLICATION, applicationIDs)
            for app in apps:
                if app.get("waveID") != waveID:
                    raise self._conflict(APPLICATION, app["applicationID"],
                                         f"Application {app['applicationID']} is not associated with wave {waveID}.")
            for app in apps:
                app.pop("waveID", None)
                self._save_group(conn, APPLICATION, app)
            self._refresh(conn, WAVE, [waveID])
        return {}
