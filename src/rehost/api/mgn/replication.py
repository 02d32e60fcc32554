"""Replication control: StartReplication, StopReplication, PauseReplication, ResumeReplication,
RetryDataReplication. Each moves the server's data replication state and sends its agent a command."""

from __future__ import annotations

from typing import Any, ClassVar

from rehost.api.mgn.base import MgnBase
from rehost.db import repo
from rehost.domain.replication import DataReplicationState as DRS
from rehost.errors import Conflict, InvalidInput


class ReplicationOps(MgnBase):
    """Mixin of `MgnService`: the replication control operations, named after them."""

    _REPLICATION_MOVES: ClassVar[dict[str, tuple[tuple[str, ...], str | None, str]]] = {
        # operation: (states it is refused in, state it sets (None: keep), agent command)
        "start": (("INITIATING", "INITIAL_SYNC", "BACKLOG", "CREATING_SNAPSHOT", "CONTINUOUS", "RESCAN", "PAUSED",
                   "STALLED", "DISCONNECTED"), DRS.INITIATING.value, "START"),
        "stop": (("STOPPED", "DISCONNECTED"), DRS.STOPPED.value, "STOP"),
        "pause": (("PAUSED", "STOPPED", "DISCONNECTED"), DRS.PAUSED.value, "PAUSE"),
        "resume": (("INITIATING", "INITIAL_SYNC", "BACKLOG", "CREATING_SNAPSHOT", "CONTINUOUS", "RESCAN", "STALLED",
                    "STOPPED", "DISCONNECTED"), None, "RESUME"),
        "retry": (("INITIATING", "INITIAL_SYNC", "BACKLOG", "CREATING_SNAPSHOT", "CONTINUOUS", "RESCAN", "PAUSED",
                   "STOPPED", "DISCONNECTED"), DRS.INITIATING.value, "START"),
    }

    def _replication_move(self, server_id: str, move: str) -> dict[str, Any]:
        refused, new_state, command = self._REPLICATION_MOVES[move]
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, server_id, for_update=True)
            self._require_not_archived(doc)
            info = doc.setdefault("dataReplicationInfo", {})
            current = info.get("dataReplicationState", DRS.STOPPED.value)
            if current in refused and move == "retry":
                # RetryDataReplication declares no ConflictException in MGN's model: a refusal is a ValidationException.
                raise InvalidInput(f"Cannot retry data replication of source server {server_id}: it is {current}, "
                                   "not stalled.")
            if current in refused:
                raise Conflict(f"Cannot {move} replication of source server {server_id}: data replication is {current}.",
                               resource_id=server_id, resource_type="SOURCE_SERVER")
            if move == "resume":
                new_state = doc.get("_stateBeforePause") or DRS.INITIATING.value
            if move == "pause":
                doc["_stateBeforePause"] = current
            info["dataReplicationState"] = new_state
            if move in ("start", "retry"):
                info.pop("dataReplicationError", None)
                doc["_replicationWanted"] = True
            if move == "stop":
                doc["_replicationWanted"] = False
            repo.save_server(conn, doc)
            result = self.public_server(conn, doc)
        self.hooks.agent_command(server_id, command)
        return result

    def start_replication(self, sourceServerID: str) -> dict[str, Any]:
        return self._replication_move(sourceServerID, "start")

    def stop_replication(self, sourceServerID: str) -> dict[str, Any]:
        return self._replication_move(sourceServerID, "stop")

    def pause_replication(self, sourceServerID: str) -> dict[str, Any]:
        return self._replication_move(sourceServerID, "pause")

    def resume_replication(self, sourceServerID: str) -> dict[str, Any]:
        return self._replication_move(sourceServerID, "resume")

    def retry_data_replication(self, sourceServerID: str) -> dict[str, Any]:
        return self._replication_move(sourceServerID, "retry")
