"""The replication server's view of the chunk store: chunk look-ups for HAVE/REF, snapshot creation, retention.

``SnapshotBackend`` is the small interface the server needs; ``StoreBackend`` implements it on
``rehost.chunkstore.snapshots.SnapshotStore`` (opened lazily, so a server can start and stage data even
before the first snapshot is asked for).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from rehost.errors import RehostError, SnapshotError

log = logging.getLogger(__name__)

# device name -> (staging file, disk size, dirty chunk indexes or None when any chunk may have changed)
VolumeSpec = tuple[Path, int, "list[int] | None"]


class SnapshotBackend(Protocol):
    def get_chunk(self, digest: bytes) -> bytes | None:
        """The chunk's raw bytes, or None if the store does not hold it."""

    def create(self, source_server_id: str, volumes: Mapping[str, VolumeSpec], taken_at: datetime) -> str:
        """Store a snapshot of ``volumes`` and return its ID (``snap-...``); raises SnapshotError."""

    def apply_retention(self, source_server_id: str, now: datetime) -> list[str]:
        """Delete the source server's snapshots the retention policy no longer keeps; return their IDs."""


class StoreBackend:
    """``SnapshotBackend`` on the chunk store at ``D/chunks`` (thread-safe: one store per process)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._store: Any = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        with self._lock:
            if self._store is None:
                try:
                    from rehost.chunkstore.snapshots import SnapshotStore
                except ImportError as exc:
                    raise SnapshotError(
                        "the chunk store (rehost.chunkstore.snapshots) is not available"
                    ) from exc
                self._store = SnapshotStore.open(self.data_dir)
            return self._store

    def _chunks(self) -> Any:
        store = self._open()
        for name in ("chunks", "chunk_store", "store"):
            chunks = getattr(store, name, None)
            if chunks is not None and hasattr(chunks, "has"):
                return chunks
        raise SnapshotError("SnapshotStore exposes no chunk store")

    def get_chunk(self, digest: bytes) -> bytes | None:
        try:
            chunks = self._chunks()
            if not chunks.has(digest):
                return None
            return bytes(chunks.get(digest))
        except RehostError as exc:  # no store yet, or a damaged chunk: the agent simply sends the data
            log.warning("chunk look-up failed: %s", exc.message)
            return None

    def create(self, source_server_id: str, volumes: Mapping[str, VolumeSpec], taken_at: datetime) -> str:
        from rehost.chunkstore.snapshots import VolumeSource

        store = self._open()
        sources = {name: VolumeSource(path, size, dirty) for name, (path, size, dirty) in volumes.items()}
        snap = store.create(source_server_id, sources, taken_at)
        return str(snap.snapshot_id)

    def apply_retention(self, source_server_id: str, now: datetime) -> list[str]:
        store = self._open()
        return list(store.apply_retention(source_server_id, now))
