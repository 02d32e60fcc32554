"""How the aggregated status of an application or a wave is computed from its source servers.

MGN does not document the rules (mgn-reference.md §1.8, §8), so these are rehost's, derived from what the
model's enums mean and from MGN's console (a server with a stall shows a red alert, one with lag or
backlog a clock):

- progress, from the servers' lifecycle states: NOT_STARTED while no server has had a test or cutover
  launched (or there are no servers); COMPLETED when every server has been cut over (CUTOVER, or
  DISCONNECTED after a finalized cutover); IN_PROGRESS in between. A wave's progress is the same rule
  over its servers through its applications.
- health, from replication, over the servers still replicating (neither archived, cut over nor
  disconnected): ERROR if any of them has a replication error or is STALLED; LAGGING if any is not in
  continuous data protection after its initial sync (BACKLOG, RESCAN); HEALTHY otherwise, and with
  nothing left replicating.

Pure: it reads MGN-shaped source server documents and returns MGN-shaped fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_STARTED_STATES = {"TESTING", "READY_FOR_CUTOVER", "CUTTING_OVER", "CUTOVER"}
_NOT_REPLICATING_STATES = {"CUTOVER", "DISCONNECTED"}
_LAGGING_REPLICATION = {"BACKLOG", "RESCAN"}


def _cut_over(server: Mapping[str, Any]) -> bool:
    life = server.get("lifeCycle") or {}
    if life.get("state") == "CUTOVER":
        return True
    return life.get("state") == "DISCONNECTED" and bool((life.get("lastCutover") or {}).get("finalized"))


def _started(server: Mapping[str, Any]) -> bool:
    life = server.get("lifeCycle") or {}
    return (life.get("state") in _STARTED_STATES or _cut_over(server)
            or bool((life.get("lastTest") or {}).get("initiated"))
            or bool((life.get("lastCutover") or {}).get("initiated")))


def progress_status(servers: Iterable[Mapping[str, Any]]) -> str:
    servers = list(servers)
    if servers and all(_cut_over(s) for s in servers):
        return "COMPLETED"
    if any(_started(s) for s in servers):
        return "IN_PROGRESS"
    return "NOT_STARTED"


def health_status(servers: Iterable[Mapping[str, Any]]) -> str:
    worst = "HEALTHY"
    for server in servers:
        if server.get("isArchived") or (server.get("lifeCycle") or {}).get("state") in _NOT_REPLICATING_STATES:
            continue
        info = server.get("dataReplicationInfo") or {}
        if info.get("dataReplicationError") or info.get("dataReplicationState") == "STALLED":
            return "ERROR"
        if info.get("dataReplicationState") in _LAGGING_REPLICATION:
            worst = "LAGGING"
    return worst


def replication_started(servers: Iterable[Mapping[str, Any]]) -> str | None:
    """When the first of ``servers`` started replicating (its first replicated byte), or None."""
    started = [str(s["lifeCycle"]["firstByteDateTime"]) for s in servers
               if (s.get("lifeCycle") or {}).get("firstByteDateTime")]
    return min(started) if started else None
