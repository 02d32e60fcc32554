"""Content-addressed, deduplicated, compressed chunk storage and the snapshots built on it.

Layers, bottom up (after borgstore):

- ``backends``: a byte store that puts, gets, lists and deletes objects by name (``posixfs`` now, an
  S3-compatible one later). It knows nothing about chunks.
- ``store.ChunkStore``: 64 KiB chunks addressed by ``sha256(raw bytes)``, compressed with zstd level 1,
  written many to a pack object, found through an index (SQLite, WAL) mapping digest -> pack location.
- ``snapshots.SnapshotStore``: per source server, manifests listing each disk's chunk digests (or holes),
  plus retention, garbage collection, export and verification.

Every disk is cut into ``CHUNK_SIZE`` chunks aligned to disk offsets; the agent, the replication server
and the store all agree on that, so a digest computed by the agent names the same chunk here.
"""

from __future__ import annotations

CHUNK_SIZE = 65536
"""Bytes per chunk: snapshots, dedup and the agent's dedup queries all work on these."""

ZERO_CHUNK = bytes(CHUNK_SIZE)
"""An all-zero chunk: never stored; a manifest records it as a hole."""

__all__ = ["CHUNK_SIZE", "ZERO_CHUNK"]
