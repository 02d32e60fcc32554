"""The agent process: control loop (commands, metrics, status reports) and replication loop.

`Agent(state_dir).run()` runs until DISCONNECT or `stop()`:

- a control thread polls GetAgentCommandForMgn every `poll_seconds`, sends CPU/memory metrics every
  `metrics_seconds`, and reports UpdateAgentReplicationInfoForMgn every few seconds and after progress;
- the calling thread replicates: GetAgentReplicationInfoForMgn (server address, CA, token, throttle), a TLS
  session, a full compare of every disk (the initial sync the first time, then a cheap resume), then
  continuous replication of the tracker's dirty chunks each second, or periodic rescans of disks the
  tracker cannot follow. Any connection or server error closes the session and retries with backoff.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from rehost.agent.control import AgentApiClient
from rehost.agent.discovery import Utilization, source_properties
from rehost.agent.sender import CHUNK_SIZE, DiskRun, Session
from rehost.agent.state import AgentState
from rehost.agent.throttle import Throttle
from rehost.agent.tracker import BlockTracker, TrackerUnavailable
from rehost.errors import InvalidInput, RehostError
from rehost.replication.protocol import ReplicationClient

log = logging.getLogger("rehost.agent")

_STOPPING = {"PAUSE": "PAUSED", "STOP": "STOPPED", "DISCONNECT": "DISCONNECTED"}
# The states an agent may report; PAUSED, STOPPED, DISCONNECTED and STALLED belong to the control plane.
_REPORTABLE = {"INITIATING", "INITIAL_SYNC", "BACKLOG", "CREATING_SNAPSHOT", "CONTINUOUS", "RESCAN"}


class Agent:
    """One running agent for the registered source server in `state_dir`."""

    def __init__(
        self,
        state_dir: str,
        ca_bundle: str | None = None,
        poll_seconds: float = 2.0,
        metrics_seconds: float = 60.0,
        cycle_seconds: float = 0.25,
        use_tracker: bool = True,
    ) -> None:
        self.state = AgentState(state_dir).ensure()
        identity = self.state.identity()
        creds = self.state.credentials()
        if not identity or not creds:
            raise InvalidInput(f"No registered source server in {state_dir}: run the installer first")
        self.identity = identity
        self.source_server_id: str = identity["sourceServerID"]
        self.api = AgentApiClient(
            identity["endpoint"], identity["region"], creds, ca_bundle or identity.get("caBundle")
        )
        self.disk_specs = self.state.disks()
        self.poll_seconds = poll_seconds
        self.metrics_seconds = metrics_seconds
        self.cycle_seconds = cycle_seconds
        self.use_tracker = use_tracker
        self.throttle = Throttle()
        self.commands: queue.Queue = queue.Queue()
        self.interrupt = threading.Event()  # set when a command must stop a long scan
        self.stopped = threading.Event()
        self.replication_state = "INITIATING"
        self.last_error: dict[str, str] | None = None
        self.results: list[dict[str, Any]] = []
        self.last_snapshot: dict[str, Any] | None = None
        self.runs: list[DiskRun] = []
        self.tracker: BlockTracker | None = None
        self.session: Session | None = None
        self.last_cdp = time.time()
        self._report_now = threading.Event()
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopped.set()
        self.interrupt.set()

    def run(self) -> None:
        """Replicate until DISCONNECT or `stop()`; always removes the tracefs instance and closes files."""
        self.state.reset_for(self.source_server_id)
        self.replication = self.state.replication()
        self.last_snapshot = self.replication.get("lastSnapshot")
        try:
            self.api.update_source_properties(self.source_server_id, source_properties(self.disk_specs))
        except RehostError as exc:
            log.warning("could not update source properties: %s", exc)
        control = threading.Thread(target=self._control_loop, name="rehost-control", daemon=True)
        control.start()
        try:
            self._open_disks()
            self._replication_loop()
        finally:
            self.stopped.set()
            if self.tracker is not None:
                self.tracker.stop()
            for run in self.runs:
                run.close()
            control.join(timeout=10)
            self._report()  # the final state (e.g. DISCONNECTED) and any command results

    def _open_disks(self) -> None:
        disks_progress = self.replication.setdefault("disks", {})
        for index, disk in enumerate(self.disk_specs):
            self.runs.append(DiskRun(index, disk, self.state, disks_progress.setdefault(disk.name, {})))
        devices = {r.index: r.disk.dev for r in self.runs if r.disk.dev is not None}
        if self.use_tracker and devices:
            try:
                self.tracker = BlockTracker(devices).start()  # type: ignore[arg-type]
                log.info("tracking writes on %s through %s", sorted(devices.values()), self.tracker.instance)
            except TrackerUnavailable as exc:
                log.warning("%s; using periodic rescans", exc)

    def _tracked(self, run: DiskRun) -> bool:
        return self.tracker is not None and run.index in self.tracker.devices

    # -- replication -----------------------------------------------------------------------------------------

    def _replication_loop(self) -> None:
        backoff = 1.0
        while not self.stopped.is_set():
            self._drain_commands(None)
            if self.stopped.is_set():
                return
            try:
                info = self.api.get_replication_info(self.source_server_id)
            except RehostError as exc:
                self._set_error("FAILED_TO_AUTHENTICATE_WITH_SERVICE", str(exc))
                self.stopped.wait(backoff)
                backoff = min(30.0, backoff * 2)
                continue
            wanted = info.get("replicationState", "REPLICATE")
            self.throttle.set_mbps(float(info.get("bandwidthThrottling") or 0))
            if wanted == "DISCONNECTED":
                self.replication_state = "DISCONNECTED"
                return
            if wanted != "REPLICATE" or not info.get("replicationServer") or not info.get("token"):
                self.replication_state = wanted if wanted in ("PAUSED", "STOPPED") else "INITIATING"
                self._report_now.set()
                self._wait_for_command(5.0)
                continue
            try:
                self._run_session(info)
                backoff = 1.0
            except RehostError as exc:
                log.warning("replication session ended: %s", exc)
                self._set_error("FAILED_TO_CONNECT_AGENT_TO_REPLICATION_SERVER", str(exc))
                self.stopped.wait(backoff)
                backoff = min(30.0, backoff * 2)
            except OSError as exc:
                log.warning("replication I/O error: %s", exc)
                self._set_error("UNSTABLE_NETWORK", str(exc))
                self.stopped.wait(backoff)
                backoff = min(30.0, backoff * 2)
            finally:
                self.session = None

    def _run_session(self, info: dict[str, Any]) -> None:
        server = info["replicationServer"]
        client = ReplicationClient(
            str(server["host"]), int(server.get("port", 1500)), server.get("caCertPem")
        )
        with client.connect():
            session = Session(
                client, self.runs, self.state, self.replication, self.throttle, self._report_now.set
            )
            session.hello(self.source_server_id, str(info["token"]))
            self.session = session
            self.last_error = None
            self.interrupt.clear()
            for run in self.runs:
                run.needs_scan = True  # a session starts with a compare: it costs reads, not traffic
            next_rescan = {run.index: 0.0 for run in self.runs}
            while not self.stopped.is_set():
                for run in self.runs:
                    if run.needs_scan or (
                        self.tracker is not None and self._tracked(run) and self.tracker.take_lost(run.index)
                    ):
                        self.replication_state = "RESCAN" if run.initial_sync_complete else "INITIAL_SYNC"
                        self._report_now.set()
                        started = time.monotonic()
                        sent, dedup = session.bytes_sent, session.bytes_deduplicated
                        was_synced = run.initial_sync_complete
                        if not session.full_scan(run, self.interrupt):
                            break
                        sent = session.bytes_sent - sent
                        # Periodic rescans of untracked disks that find nothing stay out of the log.
                        log.log(
                            logging.INFO if sent or not was_synced else logging.DEBUG,
                            "scanned %s (%d bytes) in %.2f s: %d bytes sent, %d already held by the server",
                            run.disk.name,
                            run.size,
                            time.monotonic() - started,
                            sent,
                            session.bytes_deduplicated - dedup,
                        )
                        # Untracked disks are rescanned again after five times the scan's duration, at
                        # least every 2 s: the scan bounds the lag without saturating the disk.
                        next_rescan[run.index] = time.monotonic() + max(2.0, 5 * (time.monotonic() - started))
                    elif self._tracked(run):
                        assert self.tracker is not None
                        dirty = self.tracker.take_dirty(run.index)
                        if dirty:
                            session.send_dirty(run, dirty)
                    elif time.monotonic() >= next_rescan[run.index]:
                        run.needs_scan = True
                if session.unflushed():
                    session.flush()
                if not self.last_snapshot and all(r.initial_sync_complete for r in self.runs):
                    # MGN's "initial sync 100% - finalizing": the first launchable snapshot.
                    self._snapshot(session, "initial-sync", sync=False)
                self._update_steady_state()
                if not self._drain_commands(session):
                    return
                self._wait_for_command(
                    self.cycle_seconds, poll_untracked=any(r.needs_scan for r in self.runs)
                )

    def _update_steady_state(self) -> None:
        backlog = self.backlog_bytes()
        self.last_cdp = time.time()  # connected and caught up to the start of this cycle
        if all(r.initial_sync_complete for r in self.runs):
            self.replication_state = "CONTINUOUS" if backlog < 64 * CHUNK_SIZE * 16 else "BACKLOG"

    def lag_seconds(self) -> float:
        """How old the oldest write not yet replicated is; a stalled connection makes it grow. (The agent's
        own state files live on a tracked disk too, so the backlog is rarely empty: age, not emptiness,
        is what a user can act on.)"""
        if self.session is None and self.replication_state not in ("PAUSED", "STOPPED"):
            return round(time.time() - self.last_cdp, 1)
        return round(self.tracker.oldest_dirty_age(), 1) if self.tracker is not None else 0.0

    def backlog_bytes(self) -> int:
        if self.tracker is None:
            return 0
        return sum(self.tracker.dirty_count(r.index) * CHUNK_SIZE for r in self.runs if self._tracked(r))

    # -- commands --------------------------------------------------------------------------------------------

    def _wait_for_command(self, seconds: float, poll_untracked: bool = False) -> None:
        if poll_untracked:
            return
        deadline = time.monotonic() + seconds
        while not self.stopped.is_set() and self.commands.empty() and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _drain_commands(self, session: Session | None) -> bool:
        """Run queued commands; False when the session must end (PAUSE, STOP, DISCONNECT)."""
        keep = True
        while True:
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                return keep
            kind, cid = cmd.get("type", ""), cmd.get("commandID", "")
            result: dict[str, Any] = {"commandID": cid, "status": "SUCCEEDED"}
            try:
                if kind in ("SNAPSHOT", "SYNC_SNAPSHOT"):
                    if session is None:
                        raise RehostError("not connected to a replication server")
                    self._snapshot(session, cid, sync=kind == "SYNC_SNAPSHOT")
                    result["snapshotID"] = self.last_snapshot["snapshotID"] if self.last_snapshot else ""
                elif kind == "RESCAN":
                    for run in self.runs:
                        run.needs_scan = True
                elif kind in _STOPPING:
                    self.replication_state = _STOPPING[kind]
                    keep = False
                    if kind == "DISCONNECT":
                        self.stopped.set()
                elif kind in ("RESUME", "START"):
                    self.interrupt.clear()
                elif kind == "RECONNECT":
                    # paired with another replication server: end this session, ask where to go next
                    keep = False
                else:
                    raise RehostError(f"unknown command {kind}")
            except RehostError as exc:
                result.update(status="FAILED", message=str(exc))
            with self._lock:
                self.results.append(result)
            self._report_now.set()

    def _snapshot(self, session: Session, command_id: str, sync: bool) -> None:
        self.replication_state = "CREATING_SNAPSHOT"
        self._report_now.set()
        for run in self.runs:
            if sync and (not self._tracked(run) or run.needs_scan):
                session.full_scan(run)
            elif self._tracked(run):
                assert self.tracker is not None
                dirty = self.tracker.take_dirty(run.index)
                if dirty:
                    session.send_dirty(run, dirty)
        reply = session.snapshot(command_id)
        self.last_snapshot = {
            "snapshotID": reply.snapshot_id,
            "dateTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(reply.taken_at_ms / 1000))
            + f".{reply.taken_at_ms % 1000:03d}Z",
        }
        self.replication["lastSnapshot"] = self.last_snapshot
        self.state.save_replication(self.replication)
        self._update_steady_state()

    # -- control thread --------------------------------------------------------------------------------------

    def _control_loop(self) -> None:
        util = Utilization()
        next_poll = next_report = 0.0
        next_metrics = next_config = time.monotonic() + min(self.metrics_seconds, 30.0)
        while not self.stopped.is_set():
            now = time.monotonic()
            try:
                if now >= next_poll:
                    next_poll = now + self.poll_seconds
                    for cmd in self.api.get_commands(self.source_server_id):
                        if cmd.get("type") in _STOPPING or cmd.get("type") == "RECONNECT":
                            self.interrupt.set()  # a long scan stops where it is
                        self.commands.put(cmd)
                if now >= next_metrics:
                    next_metrics = now + self.metrics_seconds
                    self.api.send_metrics(self.source_server_id, [util.sample()])
                if now >= next_config:
                    # bandwidthThrottling can change while a session runs.
                    next_config = now + 30.0
                    config = self.api.get_runtime_configuration(self.source_server_id)
                    self.throttle.set_mbps(float(config.get("bandwidthThrottling") or 0))
                if now >= next_report or self._report_now.is_set():
                    self._report_now.clear()
                    next_report = now + 5.0
                    self._report()
            except RehostError as exc:
                log.warning("control plane: %s", exc)
            self._report_now.wait(0.2)

    def _report(self) -> None:
        with self._lock:
            results, self.results = self.results, []
        body: dict[str, Any] = {
            "replicatedDisks": [
                {
                    "deviceName": r.disk.name,
                    "totalStorageBytes": r.size,
                    "replicatedStorageBytes": r.replicated_bytes(),
                    "rescannedStorageBytes": r.acked_pos * CHUNK_SIZE if r.scanning == "RESCAN" else 0,
                    "backloggedStorageBytes": self.tracker.dirty_count(r.index) * CHUNK_SIZE
                    if self.tracker is not None and self._tracked(r)
                    else 0,
                }
                for r in self.runs
            ],
            "initialSyncComplete": bool(self.runs) and all(r.initial_sync_complete for r in self.runs),
            "lagSeconds": self.lag_seconds(),
        }
        if self.replication_state in _REPORTABLE:
            body["dataReplicationState"] = self.replication_state
        if self.last_snapshot:
            body["lastSnapshot"] = self.last_snapshot
        if self.last_error:
            body["error"] = self.last_error
        if results:
            body["commandResults"] = results
        try:
            self.api.update_replication_info(self.source_server_id, body)
        except RehostError as exc:
            with self._lock:
                self.results[:0] = results  # report them next time
            log.warning("could not report replication info: %s", exc)

    def _set_error(self, error: str, raw: str) -> None:
        """Report STALLED with ``error``, one of MGN's DataReplicationErrorString values."""
        self.last_error = {"error": error, "rawError": raw[:65536]}
        self.replication_state = "STALLED"
        self._report_now.set()
