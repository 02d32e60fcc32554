"""The composition root: builds the control plane's parts from its settings and wires them together."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from rehost import ids
from rehost.api.agent.service import AgentService, ReplicationEndpoints
from rehost.api.auth.authorize import Authorizer
from rehost.api.core.throttle import RateLimiter
from rehost.api.ec2.handler import Ec2Api
from rehost.api.mgn.service import Account, Hooks, MgnService
from rehost.config import Settings
from rehost.conversion import SnapshotConverter
from rehost.db import repo, schema
from rehost.db.cluster import Cluster
from rehost.db.store import Store
from rehost.errors import InvalidInput, NotFound, StorageError
from rehost.fsutil import atomic_write, make_private
from rehost.iam.users import IamDirectory
from rehost.jobs import preflight
from rehost.jobs.interfaces import SnapshotRef
from rehost.jobs.preflight import PreflightWorker
from rehost.jobs.runner import JobRunner
from rehost.launch.launcher import TargetLauncher
from rehost.launch.placement import Target, Targets
from rehost.launch.service import Ec2Service
from rehost.launch.sizing import make_sizer, recommended_instance_type
from rehost.replication.control import AgentSnapshotProvider, ReplicationServerManager
from rehost.targets.base import TargetDriver
from rehost.targets.registry import open_driver

log = logging.getLogger("rehost")

GC_INTERVAL = 3600.0
# A replication server's log (D/logs/<rs-id>.log) larger than this starts afresh, its content kept as
# <rs-id>.log.1 (replacing the previous one): at most twice this per replication server.
LOG_FILE_LIMIT = 16 << 20


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
        # this process's membership: SQLite's one-process lock, PostgreSQL's liveness and monitor election
        self.cluster = Cluster(self.store, settings.data_dir)
        self.account = Account(account_id_for(settings.data_dir), settings.region)
        self.iam = IamDirectory(self.store, settings.data_dir, self.account.account_id)
        self.iam.ensure_admin()
        self.authorizer = Authorizer(self.iam, settings.region)
        self.rate_limiter = RateLimiter(settings.api_rate_limit)
        self.runner = JobRunner(self.store, settings.data_dir / "work", snapshot_timeout=settings.job_snapshot_timeout,
                                cluster=self.cluster)
        self.mgn = MgnService(self.store, settings, self.account, Hooks(submit_job=self.runner.submit))
        self.replication = ReplicationServerManager(
            self.store, settings.data_dir, host=settings.replication_host, first_port=settings.replication_port,
            advertised_host=settings.advertised_replication_host, snapshot_interval=settings.snapshot_interval)
        self.agent = AgentService(self.mgn, ReplicationEndpoints(self.replication.ensure_server_for, self.replication.token_for),
                                  recommend_instance_type=recommended_instance_type,
                                  agent_credentials=self.iam.issue_agent_credentials,
                                  stored_snapshot=self._stored_snapshot)
        self.mgn.hooks.server_deleted = self._server_deleted
        self.mgn.hooks.replication_changed = self._replication_changed
        self.mgn.hooks.agent_command = self._agent_command
        self.mgn.hooks.release_replication = self.replication.release
        self.snapshots = AgentSnapshotProvider(self.agent, settings.data_dir)
        self.runner.snapshots = self.snapshots
        # The launch half: the targets (Settings.target, then those `rehost target add` stored), EC2's
        # templates and instances over them, and the job runner's converter, sizer and launcher.
        self.targets = Targets(self.store, settings.region, self._open_target, builtin_url=settings.target)
        self.ec2 = Ec2Service(self.store, self.account, self.targets, settings.data_dir / "instances")
        self.ec2_api = Ec2Api(self.ec2, self.authorizer)
        self.mgn.hooks.create_ec2_launch_template = self.ec2.create_launch_template_for_server
        self.runner.launcher = TargetLauncher(self.ec2)
        self.runner.boot_timeout = settings.launch_boot_timeout
        self.runner.instance_sizer = make_sizer(self.ec2.default_version_data)
        self.runner.converter = converter = SnapshotConverter(settings.data_dir)
        # Pre-flight: every server's newest snapshot inspected once, read-only, before anyone launches it
        # (loop devices and mounts: only when running as root), on the process that runs periodic work.
        self.preflight = PreflightWorker(self.store, self.snapshots.latest_snapshot, converter.inspect,
                                         settings.data_dir / "work", interval=min(30.0, 6 * settings.monitor_interval),
                                         enabled=self.cluster.lead)
        self._installer_lock = threading.Lock()
        self._installer: Path | None = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._last_gc = time.monotonic()
        self._last_snapshot_note = 0.0
        # what agents send and the records of terminated instances and deleted servers are pruned every
        # minute (every 12 monitor passes when those are more frequent than 5 s, as in tests)
        self._prune_interval = min(60.0, 12 * settings.monitor_interval)
        self._last_prune = 0.0
        # the replication servers' periodic snapshots are looked for a few times per interval, at most
        # every 30 s (each look reads the manifests of every replicating server)
        self._snapshot_note_interval = min(30.0, max(settings.monitor_interval, settings.snapshot_interval / 4))

    def _open_target(self, target: Target) -> TargetDriver:
        """The one place a target's driver is built (`rehost.targets.registry`)."""
        return open_driver(target.url, name=target.name, data_dir=self.settings.data_dir, accel=self.settings.accel,
                           network=target.network, pool=target.pool)

    def start(self) -> None:
        """Resume interrupted jobs and start the monitor; call once every part has been attached."""
        if self.cluster.sole:  # on PostgreSQL, the runner fails those of the jobs it takes over
            self.agent.fail_orphaned_snapshot_requests()
        self.runner.start()
        self._monitor = threading.Thread(target=self._watch, name="monitor", daemon=True)
        self._monitor.start()
        if os.geteuid() == 0:
            self.preflight.start()

    def _watch(self) -> None:
        """Every few seconds: restart dead replication servers, flag agents that went silent."""
        while not self._stop.wait(self.settings.monitor_interval):
            try:
                if not self.cluster.lead():  # another process runs the periodic work
                    continue
                self.replication.supervise()
                self.agent.flag_silent_agents(self.settings.agent_silence_seconds)
                if time.monotonic() - self._last_snapshot_note > self._snapshot_note_interval:
                    self._last_snapshot_note = time.monotonic()
                    self._note_periodic_snapshots()
                if time.monotonic() - self._last_prune > self._prune_interval:
                    self._last_prune = time.monotonic()
                    self.prune()
                if time.monotonic() - self._last_gc > GC_INTERVAL:
                    self._last_gc = time.monotonic()
                    self._collect_garbage()
            except Exception:  # the monitor must outlive any single failure
                log.exception("monitor pass failed")

    def prune(self) -> dict[str, int]:
        """Bound what the data directory keeps besides snapshots: agent metrics and logs past their window
        or row limit (`Settings`), finished agent commands as old as the logs' window, records of servers
        deleted meanwhile, replication server logs (`_bound_logs`), and instances terminated longer ago
        than an hour (EC2's window). Returns counts."""
        s = self.settings
        now = ids.utcnow()
        with self.store.transaction() as conn:
            counts = {
                "metrics": repo.prune_agent_rows(conn, schema.agent_metrics, keep=s.agent_metrics_max_rows,
                                                 before=now - timedelta(seconds=s.agent_metrics_retention)),
                "logs": repo.prune_agent_rows(conn, schema.agent_logs, keep=s.agent_logs_max_lines,
                                              before=now - timedelta(seconds=s.agent_logs_retention)),
                "commands": repo.prune_finished_commands(conn, before=now - timedelta(seconds=s.agent_logs_retention)),
                "deleted servers' rows": repo.delete_agent_records(conn),
            }
            replication_servers = {r[0] for r in conn.execute(select(schema.replication_servers.c.id))}
        counts["replication server logs"] = self._bound_logs(replication_servers)
        with self.store.read() as conn:
            live = {doc["sourceServerID"] for _, doc in repo.query_servers(conn)}
            templates_of = {lt.get("_sourceServerID") for lt in repo.list_docs(conn, "ec2-launch-template")}
        counts["EC2 records"] = len(self.ec2.prune_terminated(s.terminated_instance_retention))
        for server_id in templates_of - live - {None}:
            counts["EC2 records"] += len(self.ec2.delete_server_documents(str(server_id)))
        if any(counts.values()):
            log.info("pruned %s", ", ".join(f"{n} {what}" for what, n in counts.items() if n))
        return counts

    def _bound_logs(self, replication_servers: set[str]) -> int:
        """Rotate replication server logs past `LOG_FILE_LIMIT` (the process appends, O_APPEND, so it goes
        on writing at the new end) and delete those of replication servers that no longer exist once
        untouched for the agent logs' window; returns how many files were rotated or deleted."""
        logs = self.settings.data_dir / "logs"
        if not logs.is_dir():
            return 0
        done = 0
        for path in logs.iterdir():
            try:
                st = path.stat()
                if path.name.split(".log")[0] not in replication_servers \
                        and time.time() - st.st_mtime > self.settings.agent_logs_retention:
                    path.unlink()
                    done += 1
                elif path.suffix == ".log" and st.st_size > LOG_FILE_LIMIT:
                    shutil.copyfile(path, path.with_name(path.name + ".1"))
                    os.truncate(path, 0)
                    done += 1
            except FileNotFoundError:
                continue
        return done

    def _server_deleted(self, server_id: str) -> None:
        """DeleteSourceServer: the server's agent key is revoked and its records go with it (metrics, logs,
        commands; its launch template and terminated instances)."""
        self.iam.revoke_agent_credentials(server_id)
        with self.store.transaction() as conn:
            repo.delete_agent_records(conn, server_id)
            repo.delete_doc(conn, preflight.KIND, server_id)
        self.ec2.delete_server_documents(server_id)

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

    def _stored_snapshot(self, server_id: str, snapshot_id: str) -> SnapshotRef | None:
        """The snapshot ``snapshot_id`` of ``server_id`` as the chunk store holds it, or None."""
        from rehost.chunkstore.snapshots import SnapshotStore

        try:
            with SnapshotStore.open(self.settings.data_dir, create=False) as store:
                snap = store.get(server_id, snapshot_id)
        except (NotFound, InvalidInput):
            return None
        return SnapshotRef(snap.source_server_id, snap.snapshot_id, snap.taken_at, dict(snap.disks))

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
        self.preflight.stop()
        self.runner.shutdown()
        self.replication.stop_all()
        self.cluster.close()
        self.store.close()



def request_snapshot(settings: Settings, source_server_id: str, sync: bool, timeout: float = 600.0) -> str:
    """`rehost snapshot create`: queue a SNAPSHOT (or SYNC_SNAPSHOT) command for the server's agent through
    the control plane's database, wait for the agent's result, and return the new snapshot's ID.

    The command goes through the same table the running `rehost server` hands to agents, so this works
    from any shell on the control-plane host while the agent is connected.
    """
    store = Store(settings.db_url)
    try:
        with store.read() as conn:
            repo.load_server(conn, source_server_id)  # NotFound with a clear message
        mgn = MgnService(store, settings, Account(account_id_for(settings.data_dir), settings.region))
        provider = AgentSnapshotProvider(AgentService(mgn), settings.data_dir)
        return provider.take_snapshot(source_server_id, timeout, sync=sync).snapshot_id
    finally:
        store.close()
