"""The agent-facing operations (docs/contracts.md "Agent-facing API").

RegisterAgentForMgn is how a source server comes to exist: MGN has no public create call. The same machine
(the same hints: user-provided ID, else its sorted MAC addresses, else its hostname) always maps to the same
server. Replication reports move ``dataReplicationInfo`` and, when the initial sync is done and a snapshot
exists, the lifecycle from NOT_READY to READY_FOR_TEST.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update

from rehost import ids
from rehost.api.mgn import templates as tpl
from rehost.api.mgn.service import MgnService
from rehost.db import repo, schema
from rehost.domain.lifecycle import LifeCycleState, Trigger, transition
from rehost.domain.replication import AGENT_REPORTABLE, INITIATION_STEPS, DataReplicationState
from rehost.errors import InvalidInput, NotFound, QuotaExceeded
from rehost.jobs.interfaces import SnapshotRef

log = logging.getLogger(__name__)


def _metric_time(value: Any) -> datetime:
    """A metric's time: epoch seconds or an ISO-8601 string; now when absent."""
    if value is None:
        return ids.utcnow()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    return ids.parse_iso(str(value))


COMMAND_TYPES = ("SNAPSHOT", "SYNC_SNAPSHOT", "RESCAN", "PAUSE", "RESUME", "STOP", "START", "DISCONNECT", "RECONNECT")


def identity_key(hints: dict[str, Any]) -> str:
    if hints.get("userProvidedID"):
        return "upid:" + str(hints["userProvidedID"])
    macs = sorted({m.lower() for m in hints.get("macAddresses") or [] if m and m != "00:00:00:00:00:00"})
    if macs:
        return "mac:" + ",".join(macs)
    if hints.get("hostname"):
        return "host:" + str(hints["hostname"])
    raise InvalidInput("RegisterAgentForMgn needs identification hints: a userProvidedID, MAC addresses or a hostname.")


@dataclass
class ReplicationEndpoints:
    """Where an agent replicates to; provided by the replication server manager."""

    ensure_server_for: Callable[[dict[str, Any]], dict[str, Any]] = field(
        default=lambda server_doc: {})  # -> {"host", "port", "caCertPem", "replicatorId"} or {}
    token_for: Callable[[str], str] = lambda server_id: ""


class AgentService:
    def __init__(self, mgn: MgnService, endpoints: ReplicationEndpoints | None = None,
                 recommend_instance_type: Callable[[dict[str, Any]], str | None] | None = None,
                 agent_credentials: Callable[[str, str], dict[str, str]] | None = None,
                 stored_snapshot: Callable[[str, str], SnapshotRef | None] | None = None) -> None:
        self.mgn = mgn
        self.store = mgn.store
        self.endpoints = endpoints or ReplicationEndpoints()
        self.recommend = recommend_instance_type or (lambda props: None)
        # (server ID, server ARN) -> the access key the installed agent signs with from then on
        self.agent_credentials = agent_credentials
        # (server ID, snapshot ID) -> the snapshot as the chunk store holds it, or None if it holds none:
        # what an agent reports as its last snapshot is recorded only from there (None: trusted as sent)
        self.stored_snapshot = stored_snapshot

    # -- registration -----------------------------------------------------------------------------------

    def register_agent_for_mgn(self, hints: dict[str, Any], sourceProperties: dict[str, Any] | None = None,
                               devices: list[dict[str, Any]] | None = None, tags: dict[str, str] | None = None,
                               noReplication: bool = False) -> dict[str, Any]:
        if not isinstance(hints, dict):
            raise InvalidInput("hints must be an object")
        key = identity_key(hints)
        devices = devices or []
        now = ids.iso(ids.utcnow())
        quotas = self.mgn.settings.quotas
        with self.store.transaction() as conn:
            existing = repo.find_server_by_identity(conn, key)
            if existing is not None and not existing.get("isArchived"):
                doc = existing
                doc["sourceProperties"] = self._properties(sourceProperties, hints, devices)
                doc["lifeCycle"]["lastSeenByServiceDateTime"] = now
                if doc["lifeCycle"]["state"] == LifeCycleState.DISCONNECTED.value:
                    # Installing the agent again on a disconnected machine starts it over.
                    doc["lifeCycle"]["state"] = LifeCycleState.NOT_READY.value
                    doc["dataReplicationInfo"] = self._initial_replication_info(noReplication)
                    doc["_replicationWanted"] = not noReplication
                    doc.pop("_launchable", None)
                    config = doc["_replicationConfiguration"]
                    if not config.get("replicatedDisks") and devices:  # a server imported before its agent
                        config["replicatedDisks"] = tpl.replication_configuration_for(
                            doc["sourceServerID"], config, devices)["replicatedDisks"]
                repo.save_server(conn, doc)
                is_new = False
            else:
                if repo.count_servers(conn, active_only=True) >= quotas.active_source_servers:
                    raise QuotaExceeded(
                        f"You have reached the quota of {quotas.active_source_servers} active source servers.",
                        quota_code="L-9A599620", quota_value=quotas.active_source_servers)
                if existing is not None:  # an archived record of the same machine: free its identity
                    conn.execute(update(schema.source_servers).where(schema.source_servers.c.id == existing["sourceServerID"])
                                 .values(identity_key=None))
                doc = self._new_server(conn, hints, sourceProperties, devices, noReplication, now)
                repo.insert_server(conn, doc, self.store.next_seq(conn, "source_server"), key)
                repo.put_tags(conn, doc["arn"], tags or {})
                is_new = True
            active = repo.count_servers(conn, active_only=True)
        reply = {"sourceServerID": doc["sourceServerID"], "arn": doc["arn"], "isNew": is_new,
                 "activeSourceServers": active, "quota": quotas.active_source_servers}
        if self.agent_credentials is not None:
            reply["agentCredentials"] = self.agent_credentials(doc["sourceServerID"], doc["arn"])
        return reply

    def _initial_replication_info(self, no_replication: bool) -> dict[str, Any]:
        state = DataReplicationState.STOPPED if no_replication else DataReplicationState.INITIATING
        info: dict[str, Any] = {"dataReplicationState": state.value, "replicatedDisks": []}
        if not no_replication:
            info["dataReplicationInitiation"] = {
                "startDateTime": ids.iso(ids.utcnow()),
                "steps": [{"name": s, "status": "NOT_STARTED"} for s in INITIATION_STEPS],
            }
        return info

    def _new_server(self, conn: Any, hints: dict[str, Any], props: dict[str, Any] | None,
                    devices: list[dict[str, Any]], no_replication: bool, now: str | None) -> dict[str, Any]:
        doc = self.mgn.new_server_doc(
            conn, hostname=hints.get("hostname") or "", devices=devices, lifecycle_state=LifeCycleState.NOT_READY,
            replication_info=self._initial_replication_info(no_replication),
            properties=self._properties(props, hints, devices), replication_wanted=not no_replication, now=now)
        if hints.get("userProvidedID"):
            doc["userProvidedID"] = hints["userProvidedID"]
        return doc

    def _properties(self, props: dict[str, Any] | None, hints: dict[str, Any], devices: list[dict[str, Any]]) -> dict[str, Any]:
        out = copy.deepcopy(props or {})
        out.setdefault("identificationHints", {})
        # bootMode (the firmware the agent saw the source boot in) is kept for launches; MGN's shape of
        # identificationHints has no such member, so the API does not show it.
        for key in ("hostname", "fqdn", "bootMode"):
            if hints.get(key):
                out["identificationHints"].setdefault(key, hints[key])
        if devices and not out.get("disks"):
            out["disks"] = [{"deviceName": d["deviceName"], "bytes": int(d.get("bytes", 0))} for d in devices]
        out["lastUpdatedDateTime"] = ids.iso(ids.utcnow())
        recommended = self.recommend(out)
        if recommended:
            out["recommendedInstanceType"] = recommended
        return out

    def _load_for_agent(self, conn: Any, server_id: str) -> dict[str, Any]:
        if not isinstance(server_id, str) or not server_id:
            raise InvalidInput("sourceServerID is required")
        doc = repo.load_server(conn, server_id, for_update=True)
        doc["lifeCycle"]["lastSeenByServiceDateTime"] = ids.iso(ids.utcnow())
        return doc

    def update_agent_source_properties_for_mgn(self, sourceServerID: str, sourceProperties: dict[str, Any]) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = self._load_for_agent(conn, sourceServerID)
            hints = doc["sourceProperties"].get("identificationHints", {})
            doc["sourceProperties"] = self._properties(sourceProperties, hints, [])
            repo.save_server(conn, doc)
        return {}

    # -- replication ------------------------------------------------------------------------------------

    def get_agent_replication_info_for_mgn(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = self._load_for_agent(conn, sourceServerID)
            repo.save_server(conn, doc)
        info = doc.get("dataReplicationInfo", {})
        state = info.get("dataReplicationState")
        config = doc["_replicationConfiguration"]
        devices = [{"deviceName": d["deviceName"], "bytes": next(
            (x.get("bytes", 0) for x in doc["sourceProperties"].get("disks", []) if x["deviceName"] == d["deviceName"]), 0)}
            for d in config.get("replicatedDisks", [])]
        out: dict[str, Any] = {"devices": devices, "bandwidthThrottling": int(config.get("bandwidthThrottling") or 0)}
        if doc["lifeCycle"]["state"] in (LifeCycleState.DISCONNECTED.value, LifeCycleState.CUTOVER.value) or doc.get("isArchived"):
            out["replicationState"] = "DISCONNECTED"
            return out
        if state == DataReplicationState.PAUSED.value:
            out["replicationState"] = "PAUSED"
            return out
        if not doc.get("_replicationWanted", True) or state == DataReplicationState.STOPPED.value:
            out["replicationState"] = "STOPPED"
            return out
        self._step(sourceServerID, "WAIT", "SUCCEEDED")
        self._step(sourceServerID, "LAUNCH_REPLICATION_SERVER", "IN_PROGRESS")
        endpoint = self.endpoints.ensure_server_for(doc)
        if not endpoint:
            self._step(sourceServerID, "LAUNCH_REPLICATION_SERVER", "FAILED",
                       error="FAILED_TO_LAUNCH_REPLICATION_SERVER")
            out["replicationState"] = "STOPPED"
            return out
        for step in INITIATION_STEPS[1:9]:
            self._step(sourceServerID, step, "SUCCEEDED")
        self._step(sourceServerID, "CONNECT_AGENT_TO_REPLICATION_SERVER", "IN_PROGRESS", replicator=endpoint.get("replicatorId"))
        out["replicationState"] = "REPLICATE"
        out["replicationServer"] = {k: endpoint[k] for k in ("host", "port", "caCertPem")}
        out["token"] = self.endpoints.token_for(sourceServerID)
        return out

    def _step(self, server_id: str, name: str, status: str, *, error: str | None = None, replicator: str | None = None) -> None:
        with self.store.transaction() as conn:
            doc = repo.load_server(conn, server_id, for_update=True)
            info = doc.setdefault("dataReplicationInfo", {})
            init = info.get("dataReplicationInitiation")
            if init is None:
                init = info["dataReplicationInitiation"] = {
                    "startDateTime": ids.iso(ids.utcnow()),
                    "steps": [{"name": s, "status": "NOT_STARTED"} for s in INITIATION_STEPS]}
            for step in init["steps"]:
                if step["name"] == name:
                    step["status"] = status
            if error:
                info["dataReplicationError"] = {"error": error}
                info["dataReplicationState"] = DataReplicationState.STALLED.value
                init["nextAttemptDateTime"] = ids.iso(ids.utcnow() + timedelta(seconds=30))
            if replicator:
                info["replicatorId"] = replicator
            repo.save_server(conn, doc)

    def update_agent_replication_info_for_mgn(self, sourceServerID: str, dataReplicationState: str | None = None,
                                              replicatedDisks: list[dict[str, Any]] | None = None,
                                              initialSyncComplete: bool = False, lagSeconds: float | None = None,
                                              lastSnapshot: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
                                              commandResults: list[dict[str, Any]] | None = None, **_: Any) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = self._load_for_agent(conn, sourceServerID)
            info = doc.setdefault("dataReplicationInfo", {})
            owned = info.get("dataReplicationState") in ("PAUSED", "STOPPED", "DISCONNECTED")
            if dataReplicationState and not owned:
                try:
                    state = DataReplicationState(dataReplicationState)
                except ValueError as exc:
                    raise InvalidInput(f"unknown dataReplicationState {dataReplicationState!r}") from exc
                stalled = state is DataReplicationState.STALLED
                if stalled and not error:
                    raise InvalidInput("an agent reports STALLED only together with the error that stalls it")
                if state not in AGENT_REPORTABLE and not stalled:
                    raise InvalidInput(f"an agent cannot report dataReplicationState {state.value}")
                info["dataReplicationState"] = state.value
                if state not in (DataReplicationState.INITIATING, DataReplicationState.STALLED) \
                        and info.get("dataReplicationInitiation"):
                    for step in info["dataReplicationInitiation"]["steps"]:
                        if step["status"] != "SUCCEEDED":
                            step["status"] = "SUCCEEDED"
                    info.pop("dataReplicationError", None)
            if replicatedDisks is not None:
                info["replicatedDisks"] = [
                    {k: d[k] for k in ("deviceName", "totalStorageBytes", "replicatedStorageBytes",
                                       "rescannedStorageBytes", "backloggedStorageBytes") if k in d}
                    for d in replicatedDisks]
                if any(d.get("replicatedStorageBytes") for d in replicatedDisks):
                    doc["lifeCycle"].setdefault("firstByteDateTime", ids.iso(ids.utcnow()))
                self._eta(info)
            if lagSeconds is not None and initialSyncComplete:
                info["lagDuration"] = ids.iso_duration(lagSeconds)
            if lastSnapshot and lastSnapshot.get("dateTime"):
                self._note_reported_snapshot(doc, lastSnapshot)
            if error:
                info["dataReplicationError"] = {k: error[k] for k in ("error", "rawError") if k in error}
            if initialSyncComplete and info.get("lastSnapshotDateTime"):
                doc["_launchable"] = True
                info.setdefault("lagDuration", ids.iso_duration(lagSeconds or 0))
                if doc["lifeCycle"]["state"] == LifeCycleState.NOT_READY.value:
                    doc["lifeCycle"]["state"] = transition(LifeCycleState.NOT_READY, Trigger.INITIAL_SYNC_DONE).value
            added = doc["lifeCycle"].get("addedToServiceDateTime")
            if added:
                doc["lifeCycle"]["elapsedReplicationDuration"] = ids.iso_duration(
                    (ids.utcnow() - ids.parse_iso(added)).total_seconds())
            repo.save_server(conn, doc)
            for result in commandResults or []:
                self._command_result(conn, sourceServerID, result)
        return {}

    def _note_reported_snapshot(self, doc: dict[str, Any], reported: dict[str, Any]) -> None:
        """Record the snapshot an agent reports as the server's last one, with the time the chunk store's
        manifest gives. One the store does not hold for this server (never taken, another server's, or
        since deleted by retention) is ignored, with a warning logged once per snapshot ID, and the rest
        of the report is applied: it never makes the server launchable."""
        snapshot_id = reported.get("snapshotID")
        if self.stored_snapshot is None:
            _advance_last_snapshot(doc, reported["dateTime"], snapshot_id)
            return
        if not snapshot_id or snapshot_id in (doc.get("_lastSnapshotID"), doc.get("_ignoredSnapshotID")):
            return  # known already (a snapshot missing from the store never appears there later)
        snap = self.stored_snapshot(doc["sourceServerID"], str(snapshot_id))
        if snap is None:
            doc["_ignoredSnapshotID"] = snapshot_id
            log.warning("%s: the agent reports snapshot %s, which the chunk store does not hold for this "
                        "server; ignored", doc["sourceServerID"], snapshot_id)
            return
        _advance_last_snapshot(doc, str(ids.iso(snap.taken_at)), snap.snapshot_id)

    @staticmethod
    def _eta(info: dict[str, Any]) -> None:
        """ETA of the initial sync from the replicated bytes and the time since the first byte."""
        disks = info.get("replicatedDisks") or []
        total = sum(int(d.get("totalStorageBytes") or 0) for d in disks)
        done = sum(int(d.get("replicatedStorageBytes") or 0) for d in disks)
        now = ids.utcnow()
        started = info.get("_etaStart")
        if not started:
            info["_etaStart"] = {"at": ids.iso(now), "bytes": done}
            return
        elapsed = (now - ids.parse_iso(started["at"])).total_seconds()
        rate = (done - started["bytes"]) / elapsed if elapsed > 0 else 0
        if 0 < done < total and rate > 0:
            info["etaDateTime"] = ids.iso(now + timedelta(seconds=(total - done) / rate))
        elif total and done >= total:
            info.pop("etaDateTime", None)

    def update_agent_backlog_for_mgn(self, sourceServerID: str, backloggedStorageBytes: int = 0,
                                     lagSeconds: float | None = None) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = self._load_for_agent(conn, sourceServerID)
            info = doc.setdefault("dataReplicationInfo", {})
            info["_backlogBytes"] = int(backloggedStorageBytes)
            if lagSeconds is not None and doc.get("_launchable"):
                info["lagDuration"] = ids.iso_duration(lagSeconds)
            repo.save_server(conn, doc)
        return {}

    def flag_silent_agents(self, silence_seconds: float) -> list[str]:
        """Mark replication STALLED (AGENT_NOT_SEEN) for servers whose agent has been silent too long."""
        active = ("INITIATING", "INITIAL_SYNC", "BACKLOG", "CREATING_SNAPSHOT", "CONTINUOUS", "RESCAN")
        cutoff = ids.utcnow() - timedelta(seconds=silence_seconds)
        flagged: list[str] = []
        with self.store.transaction() as conn:
            for _, doc in repo.query_servers(conn, is_archived=False):
                info = doc.get("dataReplicationInfo") or {}
                seen = doc["lifeCycle"].get("lastSeenByServiceDateTime")
                if info.get("dataReplicationState") in active and seen and ids.parse_iso(seen) < cutoff:
                    info["dataReplicationState"] = DataReplicationState.STALLED.value
                    info["dataReplicationError"] = {"error": "AGENT_NOT_SEEN"}
                    repo.save_server(conn, doc)
                    flagged.append(doc["sourceServerID"])
        return flagged

    def note_periodic_snapshots(self, latest: Callable[[str], SnapshotRef | None]) -> list[str]:
        """Advance lastSnapshotDateTime to the newest snapshot in the store, ``latest(server_id)``: the
        replication servers snapshot on their own every few minutes while data changes,
        and the agent does not hear of those. Only servers whose agent has reported a snapshot after the
        initial sync are considered, so that a snapshot of a half-synced disk never makes one launchable.
        Returns the IDs of the servers updated."""
        with self.store.transaction() as conn:
            candidates = [doc["sourceServerID"] for _, doc in repo.query_servers(conn, is_archived=False)
                          if (doc.get("dataReplicationInfo") or {}).get("lastSnapshotDateTime")]
        updated: list[str] = []
        for server_id in candidates:
            newest = latest(server_id)
            if newest is None:
                continue
            with self.store.transaction() as conn:
                try:
                    doc = repo.load_server(conn, server_id)
                except NotFound:
                    continue
                if _advance_last_snapshot(doc, str(ids.iso(newest.taken_at)), newest.snapshot_id):
                    repo.save_server(conn, doc)
                    updated.append(server_id)
        return updated

    # -- commands ---------------------------------------------------------------------------------------

    def queue_command(self, server_id: str, command_type: str) -> str:
        if command_type not in COMMAND_TYPES:
            raise InvalidInput(f"unknown agent command {command_type}")
        command_id = ids.new_id("cmd")
        with self.store.transaction() as conn:
            repo.load_server(conn, server_id)
            conn.execute(schema.agent_commands.insert().values(
                id=command_id, seq=self.store.next_seq(conn, "agent_command"), source_server_id=server_id,
                type=command_type, status="PENDING", created_at=ids.utcnow()))
        return command_id

    def fail_orphaned_snapshot_requests(self) -> int:
        """At start-up: snapshot requests still open were made by jobs a restart interrupted; nobody waits
        for them any more, so they are failed rather than left for an agent to act on."""
        t = schema.agent_commands
        with self.store.transaction() as conn:
            result = conn.execute(
                update(t).where(and_(t.c.type.in_(["SNAPSHOT", "SYNC_SNAPSHOT"]), t.c.status.in_(["PENDING", "DELIVERED"])))
                .values(status="FAILED", result={"status": "FAILED", "message": "the control plane restarted"}))
            return int(result.rowcount or 0)

    def cancel_command(self, command_id: str, reason: str) -> bool:
        """Withdraw a command no agent has picked up yet (its requester stopped waiting); True if withdrawn.
        A command already delivered is left to finish: the agent may be acting on it."""
        t = schema.agent_commands
        with self.store.transaction() as conn:
            result = conn.execute(update(t).where(and_(t.c.id == command_id, t.c.status == "PENDING"))
                                  .values(status="FAILED", result={"status": "FAILED", "message": reason}))
            return bool(result.rowcount)

    def command_status(self, command_id: str) -> tuple[str, dict[str, Any] | None]:
        with self.store.read() as conn:
            row = conn.execute(select(schema.agent_commands.c.status, schema.agent_commands.c.result)
                               .where(schema.agent_commands.c.id == command_id)).first()
        if row is None:
            raise NotFound(f"command {command_id} not found")
        return str(row[0]), row[1]

    def get_agent_command_for_mgn(self, sourceServerID: str) -> dict[str, Any]:
        t = schema.agent_commands
        with self.store.transaction() as conn:
            doc = self._load_for_agent(conn, sourceServerID)
            repo.save_server(conn, doc)
            rows = conn.execute(select(t).where(and_(t.c.source_server_id == sourceServerID, t.c.status == "PENDING"))
                                .order_by(t.c.seq)).all()
            conn.execute(update(t).where(t.c.id.in_([r.id for r in rows])).values(status="DELIVERED"))
        return {"commands": [{"commandID": r.id, "type": r.type, "createdAt": ids.iso(r.created_at)} for r in rows]}

    def _command_result(self, conn: Any, server_id: str, result: dict[str, Any]) -> None:
        t = schema.agent_commands
        status = "SUCCEEDED" if result.get("status") == "SUCCEEDED" else "FAILED"
        conn.execute(update(t).where(and_(t.c.id == result.get("commandID"), t.c.source_server_id == server_id))
                     .values(status=status, result=result))

    def get_agent_runtime_configuration_for_mgn(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.read() as conn:
            doc = repo.load_server(conn, sourceServerID)
        return {"pollIntervalSeconds": 2, "metricsIntervalSeconds": 60,
                "bandwidthThrottling": int(doc["_replicationConfiguration"].get("bandwidthThrottling") or 0)}

    def get_agent_confirmed_resume_info_for_mgn(self, sourceServerID: str) -> dict[str, Any]:
        with self.store.read() as conn:
            doc = repo.load_server(conn, sourceServerID)
        out: dict[str, Any] = {"initialSyncComplete": bool(doc.get("_launchable"))}
        if doc.get("_lastSnapshotID"):
            out["lastSnapshot"] = {"snapshotID": doc["_lastSnapshotID"],
                                   "dateTime": doc["dataReplicationInfo"].get("lastSnapshotDateTime")}
        return out

    def send_agent_metrics_for_mgn(self, sourceServerID: str, metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        with self.store.transaction() as conn:
            doc = self._load_for_agent(conn, sourceServerID)
            repo.save_server(conn, doc)
            for m in metrics or []:
                try:
                    at = _metric_time(m.get("timestamp"))
                    conn.execute(schema.agent_metrics.insert().values(
                        source_server_id=sourceServerID, at=at, cpu_percent=float(m["cpuPercent"]),
                        memory_percent=float(m["memoryPercent"])))
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise InvalidInput(f"malformed metric {m!r}") from exc
        return {}

    def send_agent_logs_for_mgn(self, sourceServerID: str, lines: list[str] | None = None) -> dict[str, Any]:
        with self.store.transaction() as conn:
            repo.load_server(conn, sourceServerID)
            now = ids.utcnow()
            for line in (lines or [])[:1000]:
                conn.execute(schema.agent_logs.insert().values(source_server_id=sourceServerID, at=now, line=str(line)[:4096]))
        return {}

    # Actions the agent policy lists that rehost's agent does not need; accepted for compatibility.
    def send_client_metrics_for_mgn(self, **_: Any) -> dict[str, Any]:
        return {}

    def send_client_logs_for_mgn(self, **_: Any) -> dict[str, Any]:
        return {}

    def update_agent_conversion_info_for_mgn(self, **_: Any) -> dict[str, Any]:
        return {}


def _advance_last_snapshot(doc: dict[str, Any], date_time: str, snapshot_id: str | None) -> bool:
    """Record a snapshot as the server's last one unless a newer one is recorded; True if recorded."""
    info = doc.setdefault("dataReplicationInfo", {})
    current = info.get("lastSnapshotDateTime")
    if doc.get("_lastSnapshotID") == snapshot_id or (current and ids.parse_iso(current) >= ids.parse_iso(date_time)):
        return False
    info["lastSnapshotDateTime"] = date_time
    doc["_lastSnapshotID"] = snapshot_id
    return True
