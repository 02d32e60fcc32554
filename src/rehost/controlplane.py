"""The composition root: builds the control plane's parts from its settings and wires them together."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from rehost.api.agent.service import AgentService, ReplicationEndpoints
from rehost.api.auth.authorize import Authorizer
from rehost.api.core.throttle import RateLimiter
from rehost.api.mgn.service import Account, Hooks, MgnService
from rehost.config import Settings
from rehost.db.store import Store
from rehost.errors import StorageError
from rehost.fsutil import atomic_write, make_private
from rehost.iam.users import IamDirectory
from rehost.jobs.runner import JobRunner
from rehost.launch.sizing import recommended_instance_type
from rehost.replication.control import AgentSnapshotProvider, ReplicationServerManager

log = logging.getLogger("rehost")

GC_INTERVAL = 3600.0


def account_id_for(data_dir: Path) -> str:
    """The account ID of a data directory: 12 digits, chosen once and kept in ``account.json``."""
    path = data_dir / "account.json"
    if path.exists():
        try:
            return str(json.loads(path.read_text())["accountId"])
        except (ValueError, KeyError) as exc:
            raise StorageError(f"{path} is damaged: {exc}") from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    account = str(secrets.randbelow(9 * 10**11) + 10**11)
    atomic_write(path, json.dumps({"accountId": account}).encode())
    return account


class ControlPlane:
    """Everything one `rehost server` runs, built from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        make_private(settings.data_dir)
        self.store = Store(settings.db_url)
        self.account = Account(account_id_for(settings.data_dir), settings.region)
        self.iam = IamDirectory(self.store, settings.data_dir, self.account.account_id)
        self.iam.ensure_admin()
        self.authorizer = Authorizer(self.iam, settings.region)
        self.rate_limiter = RateLimiter(settings.api_rate_limit)
        self.runner = JobRunner(self.store, settings.data_dir / "work", snapshot_timeout=settings.job_snapshot_timeout)
        self.mgn = MgnService(self.store, settings, self.account, Hooks(submit_job=self.runner.submit))
        self.replication = ReplicationServerManager(
            self.store, settings.data_dir, host=settings.replication_host, first_port=settings.replication_port,
            advertised_host=settings.advertised_replication_host, snapshot_interval=settings.snapshot_interval)
        self.agent = AgentService(self.mgn, ReplicationEndpoints(self.replication.ensure_server_for, self.replication.token_for),
                                  recommend_instance_type=recommended_instance_type,
                                  agent_credentials=self.iam.issue_agent_credentials)
        self.mgn.hooks.server_deleted = self.iam.revoke_agent_credentials
        self.mgn.hooks.replication_changed = self._replication_changed
        self.mgn.hooks.agent_command = self._agent_command
        self.mgn.hooks.release_replication = self.replication.release
        self.snapshots = AgentSnapshotProvider(self.agent, settings.data_dir)
        self.runner.snapshots = self.snapshots
        self._installer_lock = threading.Lock()
        self._installer: Path | None = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._last_gc = time.monotonic()
        self._last_snapshot_note = 0.0
        # the replication servers' periodic snapshots are looked for a few times per interval, at most
        # every 30 s (each look reads the manifests of every replicating server)
        self._snapshot_note_interval = min(30.0, max(settings.monitor_interval, settings.snapshot_interval / 4))

    def start(self) -> None:
        """Resume interrupted jobs and start the monitor; call once every part has been attached."""
        self.agent.fail_orphaned_snapshot_requests()
        self.runner.recover()
        self._monitor = threading.Thread(target=self._watch, name="monitor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        """Every few seconds: restart dead replication servers, flag agents that went silent."""
        while not self._stop.wait(self.settings.monitor_interval):
            try:
                self.replication.supervise()
                self.agent.flag_silent_agents(self.settings.agent_silence_seconds)
                if time.monotonic() - self._last_snapshot_note > self._snapshot_note_interval:
                    self._last_snapshot_note = time.monotonic()
                    self._note_periodic_snapshots()
                if time.monotonic() - self._last_gc > GC_INTERVAL:
                    self._last_gc = time.monotonic()
                    self._collect_garbage()
            except Exception:  # the monitor must outlive any single failure
                log.exception("monitor pass failed")

    def _collect_garbage(self) -> None:
        """Remove chunks no snapshot references any more (retention runs in the replication servers)."""
        from rehost.chunkstore.snapshots import SnapshotStore

        with SnapshotStore.open(self.settings.data_dir) as store:
            stats = store.gc()
        log.info("chunk store garbage collection: %s", stats)

    def _note_periodic_snapshots(self) -> None:
        """Report the replication servers' own periodic snapshots as lastSnapshotDateTime."""
        if not (self.settings.data_dir / "chunks" / "index.db").is_file():
            return  # no snapshot was ever taken here (and looking must not create a store)
        updated = self.agent.note_periodic_snapshots(self.snapshots.latest_snapshot)
        if updated:
            log.info("newer periodic snapshots for %s", ", ".join(updated))

    def _replication_changed(self, server_doc: dict[str, Any]) -> None:
        """New replication settings that call for another replication server (useDedicatedReplicationServer,
        instance type, subnet, ...): the agent reconnects, is paired with the right one, and the one it
        leaves stops if nobody else uses it. Its staging volumes move along: they are the source server's."""
        state = (server_doc.get("dataReplicationInfo") or {}).get("dataReplicationState")
        if state in ("PAUSED", "STOPPED", "DISCONNECTED") or self.replication.serves(server_doc):
            return
        log.info("%s: replication settings changed; moving it to another replication server", server_doc["sourceServerID"])
        self.agent.queue_command(server_doc["sourceServerID"], "RECONNECT")

    def _agent_command(self, server_id: str, command: str) -> None:
        self.agent.queue_command(server_id, command)

    def installer_path(self) -> Path:
        """The one-file installer, built once per process from the agent's sources."""
        with self._installer_lock:
            if self._installer is None or not self._installer.exists():
                from rehost.agent.bundle import build_installer

                out = self.settings.data_dir / "installer" / "rehost-replication-installer-init"
                out.parent.mkdir(parents=True, exist_ok=True)
                build_installer(out)
                self._installer = out
            return self._installer

    def close(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=60)  # a pass in progress must not restart what stop_all stops
        self.runner.shutdown()
        self.replication.stop_all()
        self.store.close()

