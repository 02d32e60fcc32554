"""Data replication states and initiation steps, as MGN reports them."""

from __future__ import annotations

from enum import StrEnum


class DataReplicationState(StrEnum):
    STOPPED = "STOPPED"
    INITIATING = "INITIATING"
    INITIAL_SYNC = "INITIAL_SYNC"
    BACKLOG = "BACKLOG"
    CREATING_SNAPSHOT = "CREATING_SNAPSHOT"
    CONTINUOUS = "CONTINUOUS"
    PAUSED = "PAUSED"
    RESCAN = "RESCAN"
    STALLED = "STALLED"
    DISCONNECTED = "DISCONNECTED"


# MGN's initiation steps, in order, for agent-based replication.
INITIATION_STEPS = (
    "WAIT",
    "CREATE_SECURITY_GROUP",
    "LAUNCH_REPLICATION_SERVER",
    "BOOT_REPLICATION_SERVER",
    "AUTHENTICATE_WITH_SERVICE",
    "DOWNLOAD_REPLICATION_SOFTWARE",
    "CREATE_STAGING_DISKS",
    "ATTACH_STAGING_DISKS",
    "PAIR_REPLICATION_SERVER_WITH_AGENT",
    "CONNECT_AGENT_TO_REPLICATION_SERVER",
    "START_DATA_TRANSFER",
)

# States an agent may report; the control plane owns PAUSED, STOPPED, DISCONNECTED and STALLED.
AGENT_REPORTABLE = frozenset(
    {
        DataReplicationState.INITIATING,
        DataReplicationState.INITIAL_SYNC,
        DataReplicationState.BACKLOG,
        DataReplicationState.CREATING_SNAPSHOT,
        DataReplicationState.CONTINUOUS,
        DataReplicationState.RESCAN,
    }
)
