"""Pre-flight: every server's newest snapshot is inspected once, the way conversion will, before anyone
launches it, and what a launch would do (or why it would fail) is kept for the console and the CLI.

`PreflightWorker` runs in a thread of its own (an inspection mounts file systems and reads an initramfs:
seconds to a minute, never in the monitor's pass). The inspector is the composition root's (conversion's
`inspect_snapshot`); the result is a ``preflight`` document per server, so it never races the agent's
writes to the server's own document.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rehost import ids
from rehost.db import repo
from rehost.db.store import Store
from rehost.jobs.interfaces import SnapshotRef

log = logging.getLogger(__name__)

KIND = "preflight"
#: snapshot, boot device, work directory -> the inspection as a JSON-able dict.
Inspector = Callable[[SnapshotRef, str, Path], dict[str, Any]]


def boot_device(server: dict[str, Any], snapshot: SnapshotRef) -> str | None:
    """The boot disk's name: the replicated disk marked boot, else the snapshot's first disk."""
    disks = (server.get("_replicationConfiguration") or {}).get("replicatedDisks", [])
    return next((d["deviceName"] for d in disks if d.get("isBootDisk")), None) or next(iter(snapshot.disks), None)


def load(store: Store, server_id: str) -> dict[str, Any] | None:
    with store.read() as conn:
        return repo.load_doc(conn, KIND, server_id)


class PreflightWorker:
    def __init__(self, store: Store, latest: Callable[[str], SnapshotRef | None], inspector: Inspector,
                 work_dir: Path, *, interval: float = 30.0, enabled: Callable[[], bool] = lambda: True) -> None:
        self.store, self.latest, self.inspector = store, latest, inspector
        self.work_dir, self.interval, self.enabled = Path(work_dir), interval, enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="preflight", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=120)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.enabled():
                    self.run_once()
            except Exception:  # the worker must outlive any single failure
                log.exception("pre-flight pass failed")

    def run_once(self) -> list[str]:
        """Inspect every server whose newest snapshot was not inspected yet; return their IDs."""
        with self.store.read() as conn:
            servers = [doc for _, doc in repo.query_servers(conn, is_archived=False)]
            done = {d.get("sourceServerID"): d.get("snapshotID") for d in repo.list_docs(conn, KIND)}
        inspected = []
        for server in servers:
            if self._stop.is_set():
                break
            server_id = server["sourceServerID"]
            snapshot = self.latest(server_id)
            if snapshot is None or done.get(server_id) == snapshot.snapshot_id:
                continue
            self.inspect(server, snapshot)
            inspected.append(server_id)
        return inspected

    def inspect(self, server: dict[str, Any], snapshot: SnapshotRef) -> dict[str, Any]:
        """Inspect ``snapshot`` of ``server`` now, store and return the result."""
        server_id = server["sourceServerID"]
        device = boot_device(server, snapshot)
        if device is None:
            result: dict[str, Any] = {"convertible": False, "reason": "The snapshot has no disk to boot from."}
        else:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            result = self.inspector(snapshot, device, self.work_dir)
        doc = {**result, "sourceServerID": server_id, "snapshotID": snapshot.snapshot_id,
               "inspectedDateTime": ids.iso(ids.utcnow())}
        with self.store.transaction() as conn:
            repo.save_doc(conn, KIND, server_id, doc, seq=self.store.next_seq(conn, KIND))
        log.info("pre-flight of %s (%s): %s", server_id, snapshot.snapshot_id,
                 "convertible" if doc.get("convertible") else doc.get("reason"))
        return doc
