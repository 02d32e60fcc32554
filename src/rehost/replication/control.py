"""The control plane's side of replication: replication server processes and snapshots for jobs.

`ReplicationServerManager` starts ``rehost replication-server`` processes as the replication configuration
asks: one shared by every source server whose replication settings are identical, or one per server when
``useDedicatedReplicationServer`` is set. It records them in the database, re-attaches to the ones still
running after a control-plane restart, restarts the ones that died, and stops a server once no source
server uses it any more (FinalizeCutover, DisconnectFromService).

`AgentSnapshotProvider` implements the job runner's snapshot step: it asks the agent, through a
SYNC_SNAPSHOT command, to bring the staging volumes up to date and take a snapshot at a barrier in the
stream, then waits for the result.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, select, update

from rehost import ids
from rehost.api.mgn.templates import replication_server_key
from rehost.db import schema
from rehost.db.store import Store
from rehost.errors import NotFound, ReplicationError, SnapshotError
from rehost.jobs.interfaces import SnapshotRef
from rehost.replication.auth import load_or_create_key, server_token
from rehost.replication.tls import ensure_tls

log = logging.getLogger("rehost.replication")

READY_TIMEOUT = 30.0
PORT_WAIT = 5.0  # how long a restarted replication server waits for its old port


def _pid_alive(pid: int | None, server_id: str) -> bool:
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"replication-server" in cmdline and server_id.encode() in cmdline


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _placement(server_doc: dict[str, Any]) -> tuple[str, str | None]:
    """Which replication server a source server belongs on: the key of the settings that shape replication
    servers, and its own ID when it asks for a dedicated one (else None: shared)."""
    config = server_doc.get("_replicationConfiguration", {})
    dedicated = server_doc["sourceServerID"] if config.get("useDedicatedReplicationServer") else None
    return replication_server_key(config), dedicated


class ReplicationServerManager:
    def __init__(self, store: Store, data_dir: Path, *, host: str = "127.0.0.1", first_port: int = 1500,
                 advertised_host: str | None = None, snapshot_interval: float = 600.0) -> None:
        self.store = store
        self.data_dir = data_dir
        self.host = host
        self.first_port = first_port
        self.advertised_host = advertised_host or host
        self.snapshot_interval = snapshot_interval
        self.key = load_or_create_key(data_dir)
        self._ca_pem: str | None = None
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._closed = False

    @property
    def ca_pem(self) -> str:
        if self._ca_pem is None:
            extra = tuple(h for h in {self.host, self.advertised_host} if h not in ("127.0.0.1", "localhost"))
            self._ca_pem = ensure_tls(self.data_dir, extra_hosts=extra)
        return self._ca_pem

    def token_for(self, source_server_id: str) -> str:
        return server_token(self.key, source_server_id)

    # -- lifecycle of replication servers -----------------------------------------------------------------

    def ensure_server_for(self, server_doc: dict[str, Any]) -> dict[str, Any]:
        """The replication server this source server replicates to, started if needed; {} if it cannot start."""
        config = server_doc.get("_replicationConfiguration", {})
        key, dedicated = _placement(server_doc)
        with self._lock:
            t = schema.replication_servers
            with self.store.read() as conn:
                cond = and_(t.c.config_key == key, t.c.dedicated_to.is_(None) if dedicated is None else t.c.dedicated_to == dedicated)
                row = conn.execute(select(t).where(cond)).first()
            try:
                if row is not None and self._alive(row.id, row.pid):
                    rs_id, port = row.id, row.port
                elif row is not None:
                    rs_id, port = row.id, row.port
                    pid, port = self._spawn(rs_id, port)
                    with self.store.transaction() as conn:
                        conn.execute(update(t).where(t.c.id == rs_id).values(pid=pid, port=port))
                else:
                    rs_id = ids.new_id("rs")
                    pid, port = self._spawn(rs_id, None)
                    with self.store.transaction() as conn:
                        conn.execute(t.insert().values(id=rs_id, config_key=key, dedicated_to=dedicated, host=self.host,
                                                       port=port, pid=pid, doc={"instanceType": config.get("replicationServerInstanceType")}))
            except ReplicationError as exc:
                log.error("cannot start a replication server: %s", exc)
                return {}
            self._assign(server_doc["sourceServerID"], rs_id)
            # A server whose settings changed leaves the replication server it used; one left unused stops
            # (its staging stays: it is the source server's, and the new replication server opens it).
            to_stop = self._leave(server_doc["sourceServerID"], keep=rs_id)
        for old_id, old_pid in to_stop:
            log.info("replication server %s has no source server left; stopping it", old_id)
            self._stop(old_id, old_pid)
        return {"host": self.advertised_host, "port": port, "caCertPem": self.ca_pem, "replicatorId": rs_id}

    def _assign(self, source_server_id: str, rs_id: str) -> None:
        t = schema.replication_servers
        with self.store.transaction() as conn:
            row = conn.execute(select(t.c.doc).where(t.c.id == rs_id)).first()
            doc = dict(row[0]) if row else {}
            members = set(doc.get("sourceServers", []))
            if source_server_id not in members:
                members.add(source_server_id)
                doc["sourceServers"] = sorted(members)
                conn.execute(update(t).where(t.c.id == rs_id).values(doc=doc))

    def _leave(self, source_server_id: str, keep: str | None = None) -> list[tuple[str, int | None]]:
        """Remove the source server from every replication server but ``keep``; returns the ones left with
        no source server (deleted from the table, to be stopped by the caller). The caller holds _lock."""
        t = schema.replication_servers
        to_stop: list[tuple[str, int | None]] = []
        with self.store.transaction() as conn:
            for row in conn.execute(select(t)).all():
                doc = dict(row.doc)
                members = [m for m in doc.get("sourceServers", []) if m != source_server_id]
                if row.id == keep or len(members) == len(doc.get("sourceServers", [])):
                    continue
                if members:
                    doc["sourceServers"] = members
                    conn.execute(update(t).where(t.c.id == row.id).values(doc=doc))
                else:
                    conn.execute(delete(t).where(t.c.id == row.id))
                    to_stop.append((row.id, row.pid))
        return to_stop

    def serves(self, server_doc: dict[str, Any]) -> bool:
        """Whether the replication server the source server is assigned to matches its settings (False once
        useDedicatedReplicationServer or a setting that shapes replication servers changed)."""
        key, dedicated = _placement(server_doc)
        t = schema.replication_servers
        with self.store.read() as conn:
            for row in conn.execute(select(t)).all():
                if server_doc["sourceServerID"] in (row.doc or {}).get("sourceServers", []):
                    return bool(row.config_key == key and row.dedicated_to == dedicated)
        return True  # not assigned yet: the agent is paired with the right one when it asks

    def _alive(self, rs_id: str, pid: int | None) -> bool:
        """Whether the replication server still runs. A process this manager started is asked through
        `poll()`, which reports it dead only once it has exited completely, sockets closed: /proc shows a
        dying process without its command line while its listening socket still holds the port."""
        proc = self._procs.get(rs_id)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return _pid_alive(pid, rs_id)

    def _pick_port(self, wanted: int | None) -> int:
        if wanted:
            # A restarted server keeps its port, so agents (and port forwards to it, such as a VM's
            # guestfwd) reach it where they did; the port may take a moment to be released.
            deadline = time.monotonic() + PORT_WAIT
            while True:
                if _port_free(self.host, wanted):
                    return wanted
                if time.monotonic() > deadline:
                    log.warning("port %d is still taken; the replication server moves to another port", wanted)
                    break
                time.sleep(0.1)
        with self.store.read() as conn:
            taken = {r[0] for r in conn.execute(select(schema.replication_servers.c.port))}
        port = self.first_port
        while port in taken or not _port_free(self.host, port):
            port += 1
            if port > 65535:
                raise ReplicationError("no free TCP port for a replication server")
        return port

    def _spawn(self, rs_id: str, wanted_port: int | None) -> tuple[int, int]:
        if self._closed:
            raise ReplicationError("the control plane is shutting down")
        _ = self.ca_pem  # the TLS material must exist before the server reads it
        port = self._pick_port(wanted_port)
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{rs_id}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rehost.cli.main", "replication-server", "--data-dir", str(self.data_dir),
                 "--id", rs_id, "--host", self.host, "--port", str(port),
                 "--snapshot-interval", str(self.snapshot_interval)],
                stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        marker = f"listening on {self.host}:{port}".encode()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ReplicationError(f"replication server {rs_id} exited with {proc.returncode}; see {log_path}")
            if marker in log_path.read_bytes()[-4096:]:
                self._procs[rs_id] = proc
                log.info("replication server %s listening on %s:%d (pid %d)", rs_id, self.host, port, proc.pid)
                return proc.pid, port
            time.sleep(0.05)
        proc.kill()
        raise ReplicationError(f"replication server {rs_id} did not start within {READY_TIMEOUT:.0f} s; see {log_path}")

    def release(self, source_server_id: str) -> None:
        """Free what this source server used: its share of a replication server and its staging volumes."""
        with self._lock:
            to_stop = self._leave(source_server_id)
        for rs_id, pid in to_stop:
            self._stop(rs_id, pid)
        shutil.rmtree(self.data_dir / "staging" / source_server_id, ignore_errors=True)

    def _stop(self, rs_id: str, pid: int | None) -> None:
        proc = self._procs.pop(rs_id, None)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        elif _pid_alive(pid, rs_id):
            os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]

    def supervise(self) -> None:
        """Restart replication servers that died (called periodically by the control plane)."""
        with self.store.read() as conn:
            rows = conn.execute(select(schema.replication_servers)).all()
        for row in rows:
            if not self._alive(row.id, row.pid):
                with self._lock:
                    with self.store.read() as conn:  # stopped on purpose meanwhile (no source server left)?
                        current = conn.execute(select(schema.replication_servers.c.pid)
                                               .where(schema.replication_servers.c.id == row.id)).first()
                    if current is None or self._alive(row.id, current.pid):
                        continue
                    log.warning("replication server %s is not running; restarting it", row.id)
                    try:
                        pid, port = self._spawn(row.id, row.port)
                    except ReplicationError as exc:
                        log.error("%s", exc)
                        continue
                    with self.store.transaction() as conn:
                        conn.execute(update(schema.replication_servers).where(schema.replication_servers.c.id == row.id)
                                     .values(pid=pid, port=port))

    def stop_all(self) -> None:
        """Stop the processes this control plane started (on shutdown); their records stay for re-attach.
        From then on nothing starts a replication server again (an agent's request or the monitor racing
        the shutdown would leave one running with no control plane)."""
        with self._lock:
            self._closed = True
        for proc in self._procs.values():
            proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()


class AgentSnapshotProvider:
    """Snapshots for launch jobs, taken through the agent so they hold the source's data as of now."""

    def __init__(self, agent_service: Any, data_dir: Path, *, poll_interval: float = 0.5) -> None:
        self.agent = agent_service
        self.data_dir = data_dir
        self.poll_interval = poll_interval

    def _store(self) -> Any:
        from rehost.chunkstore.snapshots import SnapshotStore

        return SnapshotStore.open(self.data_dir)

    def _ref(self, snap: Any) -> SnapshotRef:
        return SnapshotRef(snap.source_server_id, snap.snapshot_id, snap.taken_at, dict(snap.disks))

    def take_snapshot(self, source_server_id: str, timeout: float, *, sync: bool = True) -> SnapshotRef:
        command_id = self.agent.queue_command(source_server_id, "SYNC_SNAPSHOT" if sync else "SNAPSHOT")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, result = self.agent.command_status(command_id)
            if status == "SUCCEEDED":
                snapshot_id = (result or {}).get("snapshotID")
                if not snapshot_id:
                    raise SnapshotError("the agent reported a snapshot without an ID")
                store = self._store()
                try:
                    return self._ref(store.get(source_server_id, snapshot_id))
                except NotFound as exc:
                    raise SnapshotError(f"snapshot {snapshot_id} reported by the agent is not in the store") from exc
                finally:
                    store.close()
            if status == "FAILED":
                raise SnapshotError(f"the agent could not take a snapshot: {(result or {}).get('message', 'no reason given')}")
            time.sleep(self.poll_interval)
        # Withdrawn, so that an agent coming back later does not take a snapshot nobody waits for.
        withdrawn = self.agent.cancel_command(command_id, f"no result within {timeout:.0f} s")
        state = "was not picked up by the agent" if withdrawn else "did not finish"
        raise SnapshotError(f"the snapshot request {state} within {timeout:.0f} s (is the agent running and connected?)")

    def latest_snapshot(self, source_server_id: str) -> SnapshotRef | None:
        store = self._store()
        try:
            snap = store.latest(source_server_id)
            return None if snap is None else self._ref(snap)
        finally:
            store.close()
