"""MGN's waves: groups of applications (CreateWave ... DisassociateApplications).

An application belongs to at most one wave: associating one that is in another wave is a
ConflictException (disassociate it there first), as is associating an archived application. The rules
shared with applications (names, archiving, quotas, aggregated status) are in `rehost.api.mgn.grouping`.
"""

from __future__ import annotations

from typing import Any

from rehost.api.mgn.grouping import WAVE, GroupOps


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
        return self._associate(WAVE, waveID, applicationIDs)

    def disassociate_applications(self, waveID: str, applicationIDs: list[str]) -> dict[str, Any]:
        return self._disassociate(WAVE, waveID, applicationIDs)
