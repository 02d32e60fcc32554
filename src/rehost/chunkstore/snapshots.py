"""Snapshots of source servers' disks on the chunk store: create, list, read, retain, collect, verify.

A snapshot exists exactly when its manifest does: ``create`` makes every chunk durable first and writes
the manifest last (atomically), so a crash leaves either a whole snapshot or none (plus garbage chunks
for ``gc``). A snapshot costs in proportion to what changed: chunks not in a volume's dirty set are taken
from the previous snapshot's manifest without reading the staging volume.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import re
import secrets
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rehost.chunkstore import CHUNK_SIZE, manifest
from rehost.chunkstore.backends.base import ObjectNotFound
from rehost.chunkstore.backends.posixfs import PosixFS
from rehost.chunkstore.export import SnapshotReader, export_disk
from rehost.chunkstore.manifest import HOLE, DiskTable, Snapshot
from rehost.chunkstore.retention import DEFAULT_POLICY, RetentionPolicy
from rehost.chunkstore.store import ChunkStore, GcStats
from rehost.errors import InvalidInput, NotFound, SnapshotError, StorageError

_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SNAP_ID = re.compile(r"^snap-[0-9a-f]{17}$")
_BATCH = 64  # chunks read and stored per step (4 MiB)

__all__ = ["BadChunk", "Snapshot", "SnapshotStore", "VerifyReport", "VolumeSource"]

#: Snapshots younger than this survive retention (a launch job may be about to export one).
RECENT_GRACE = timedelta(minutes=10)


@dataclass(frozen=True)
class VolumeSource:
    """A disk to snapshot: the staging file, the disk's size, and the indexes of the 64 KiB chunks
    written since the previous snapshot of this server (None: any chunk may have changed)."""

    path: Path
    size: int
    dirty_chunks: Collection[int] | None = None


@dataclass(frozen=True)
class BadChunk:
    """A chunk that cannot be read back intact, and the snapshots (source server ID, snapshot ID) that
    need it."""

    digest: str
    reason: str
    snapshots: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of ``SnapshotStore.verify``."""

    chunks_checked: int
    manifests_checked: int
    bad_chunks: tuple[BadChunk, ...]
    bad_manifests: tuple[tuple[str, str], ...]  # (manifest name, reason)

    @property
    def ok(self) -> bool:
        return not self.bad_chunks and not self.bad_manifests


class SnapshotStore:
    """Snapshots of every source server in one chunk store. Safe for concurrent use by threads and
    processes; ``chunks`` is the underlying ``ChunkStore`` (``has``/``get``/``put`` for dedup queries)."""

    def __init__(self, chunks: ChunkStore, policy: RetentionPolicy = DEFAULT_POLICY) -> None:
        self.chunks = chunks
        self.backend = chunks.backend
        self.policy = policy

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], *, create: bool = True) -> SnapshotStore:
        """The store at ``D/chunks``. With ``create=False`` a missing store raises NotFound instead of
        being created (for commands that only read)."""
        root = Path(data_dir) / "chunks"
        if not create and not (root / "index.db").is_file():
            raise NotFound(f"no chunk store in {data_dir} (no snapshot was ever taken there)")
        return cls(ChunkStore(PosixFS(root, create=create), root))

    def close(self) -> None:
        self.chunks.close()

    def __enter__(self) -> SnapshotStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- creating ---------------------------------------------------------------------------------------

    def create(
        self, source_server_id: str, volumes: Mapping[str, VolumeSource], taken_at: datetime | None = None
    ) -> Snapshot:
        """Snapshot every volume (device name -> source) at ``taken_at`` (default now; naive = UTC).

        Returns once the snapshot is durable. On an error nothing is created and the caller keeps its
        dirty sets (the next snapshot must still cover those chunks). Raises SnapshotError.
        """
        if not _ID.match(source_server_id):
            raise InvalidInput(f"invalid source server ID {source_server_id!r}")
        if not volumes:
            raise InvalidInput("a snapshot needs at least one volume")
        when = _utc(taken_at or datetime.now(UTC))
        snap = Snapshot(
            f"snap-{secrets.token_hex(9)[:17]}",
            source_server_id,
            when,
            {d: v.size for d, v in volumes.items()},
        )
        with self.chunks.lock.shared():
            previous = self._latest_tables(source_server_id)
            tables = {dev: self._ingest(dev, vol, previous.get(dev)) for dev, vol in volumes.items()}
            self.chunks.flush_unlocked()  # every chunk durable before the manifest names it
            self.backend.put(
                _manifest_name(source_server_id, snap.snapshot_id), manifest.encode(snap, tables)
            )
        return snap

    def _latest_tables(self, source_server_id: str) -> dict[str, DiskTable]:
        for snap in self.list(source_server_id):
            try:
                return self._load(source_server_id, snap.snapshot_id)[1]
            except NotFound:
                continue  # deleted by retention since the listing
        return {}

    def _ingest(self, device: str, vol: VolumeSource, prev: DiskTable | None) -> DiskTable:
        n = manifest.chunk_count(vol.size)
        if prev is None or vol.dirty_chunks is None:
            table = bytearray(32 * n)
            todo: list[int] = list(range(n))
        else:
            table = bytearray(prev.table[: 32 * n])
            table.extend(bytes(32 * n - len(table)))
            wanted = set(vol.dirty_chunks)
            if wanted and (min(wanted) < 0 or max(wanted) >= n):
                raise SnapshotError(f"dirty chunk index out of range for {device} ({n} chunks)")
            if vol.size != prev.size:  # the old or the new last chunk may be partial
                wanted.update(range(max(0, min(prev.chunk_count, n) - 1), n))
            todo = sorted(wanted)
        try:
            with open(vol.path, "rb", buffering=0) as f:
                has_data = _data_map(f.fileno(), vol.size, n)
                to_read = [i for i in todo if _mark_hole(table, i, has_data)]
                for b in range(0, len(to_read), _BATCH):
                    self._ingest_batch(f.fileno(), vol.size, to_read[b : b + _BATCH], table)
            # Every digest this snapshot adds must be held before a manifest may name it (cheap: one
            # index query per 500 chunks); digests reused from the previous manifest were held already.
            added = {bytes(table[32 * i : 32 * i + 32]) for i in to_read} - {HOLE}
            if self.chunks.missing(added):
                raise SnapshotError(f"chunks of {device} could not be stored")
        except OSError as exc:
            raise SnapshotError(f"cannot read staging volume {vol.path} of {device}: {exc.strerror}") from exc
        except StorageError as exc:
            raise SnapshotError(f"cannot store chunks of {device}: {exc.message}") from exc
        return DiskTable(vol.size, bytes(table))

    def _ingest_batch(self, fd: int, size: int, batch: list[int], table: bytearray) -> None:
        """Read the chunks ``batch`` (sorted indexes), store them, and enter their digests in ``table``."""
        chunks: list[bytes] = []
        for run in _runs(batch):
            start = run.start * CHUNK_SIZE
            length = min(run.stop * CHUNK_SIZE, size) - start
            data = os.pread(fd, length, start)
            if len(data) < length:  # a staging file not yet extended to the disk size reads as zeros
                data += bytes(length - len(data))
            chunks.extend(data[o : o + CHUNK_SIZE] for o in range(0, length, CHUNK_SIZE))
        for i, digest in zip(batch, self.chunks.store_chunks(chunks), strict=True):
            table[32 * i : 32 * i + 32] = digest or HOLE

    # -- reading ----------------------------------------------------------------------------------------

    def list(self, source_server_id: str) -> list[Snapshot]:
        """The server's snapshots, newest first; empty for a server with none."""
        if not _ID.match(source_server_id):
            return []
        snaps = []
        for snap_id in self.backend.list(f"manifests/{source_server_id}"):
            try:
                snaps.append(self._read_header(_manifest_name(source_server_id, snap_id)))
            except ObjectNotFound:
                continue
        snaps.sort(key=lambda s: (s.taken_at, s.snapshot_id), reverse=True)
        return snaps

    def latest(self, source_server_id: str) -> Snapshot | None:
        """The server's newest snapshot, or None."""
        snaps = self.list(source_server_id)
        return snaps[0] if snaps else None

    def get(self, source_server_id: str, snapshot_id: str) -> Snapshot:
        """One snapshot; NotFound if the server has no such snapshot."""
        try:
            return self._read_header(self._name_or_404(source_server_id, snapshot_id))
        except ObjectNotFound as exc:
            raise _not_found(source_server_id, snapshot_id) from exc

    def source_server_ids(self) -> builtins.list[str]:
        """Every source server with at least one snapshot."""
        return sorted(s for s in self.backend.list("manifests") if any(self.backend.list(f"manifests/{s}")))

    def open_reader(self, source_server_id: str, snapshot_id: str, device_name: str) -> io.BufferedReader:
        """A readable, seekable binary stream over one disk of a snapshot (close it when done: it keeps
        garbage collection away from the snapshot's chunks)."""
        fd = self.chunks.lock.acquire(exclusive=False)
        try:
            table = self._disk(source_server_id, snapshot_id, device_name)
        except BaseException:
            os.close(fd)
            raise
        return io.BufferedReader(SnapshotReader(self.chunks, table, fd), buffer_size=CHUNK_SIZE)

    def export(
        self,
        source_server_id: str,
        snapshot_id: str,
        device_name: str,
        output_path: str | os.PathLike[str],
        fmt: str = "raw",
    ) -> None:
        """Write one disk of a snapshot to ``output_path``: ``raw`` (a sparse file: holes are not written)
        or ``qcow2``. Raises NotFound, InvalidInput (format) or SnapshotError."""
        with self.chunks.lock.shared():
            table = self._disk(source_server_id, snapshot_id, device_name)
            export_disk(self.chunks, table, Path(output_path), fmt)

    def _disk(self, source_server_id: str, snapshot_id: str, device_name: str) -> DiskTable:
        snap, tables = self._load(source_server_id, snapshot_id)
        if device_name not in tables:
            disks = ", ".join(tables) or "none"
            raise NotFound(
                f"snapshot {snapshot_id} of {source_server_id} has no disk {device_name} (disks: {disks})",
                resource_id=device_name,
                resource_type="disk",
            )
        return tables[device_name]

    def _read_header(self, name: str) -> Snapshot:
        data = self.backend.get(name, 0, manifest.HEADER_PROBE)
        end = manifest.header_length(data, name)
        if end > len(data):
            data = self.backend.get(name, 0, end)
        return manifest.decode_header(data, name)[0]

    def _load(self, source_server_id: str, snapshot_id: str) -> tuple[Snapshot, dict[str, DiskTable]]:
        name = self._name_or_404(source_server_id, snapshot_id)
        try:
            return manifest.decode(self.backend.get(name), name)
        except ObjectNotFound as exc:
            raise _not_found(source_server_id, snapshot_id) from exc

    @staticmethod
    def _name_or_404(source_server_id: str, snapshot_id: str) -> str:
        if not _ID.match(source_server_id) or not _SNAP_ID.match(snapshot_id):
            raise _not_found(source_server_id, snapshot_id)
        return _manifest_name(source_server_id, snapshot_id)

    # -- retention, collection, verification --------------------------------------------------------------

    def delete(self, source_server_id: str, snapshot_id: str) -> None:
        """Delete one snapshot's manifest (its chunks go at the next ``gc``)."""
        try:
            self.backend.delete(self._name_or_404(source_server_id, snapshot_id))
        except ObjectNotFound as exc:
            raise _not_found(source_server_id, snapshot_id) from exc

    def apply_retention(
        self, source_server_id: str, now: datetime | None = None, policy: RetentionPolicy | None = None,
        *, keep_younger_than: timedelta = RECENT_GRACE,
    ) -> builtins.list[str]:
        """Delete the server's snapshots that the policy (default: the store's) does not keep at ``now``;
        return their IDs, newest first. The chunks they alone used stay until ``gc``.

        Snapshots younger than ``keep_younger_than`` are kept whatever the policy says: a launch job
        exports the snapshot it has just asked for, and a timer snapshot landing in the same 10-minute
        period must not delete it under the job's feet."""
        when = _utc(now or datetime.now(UTC))
        snaps = self.list(source_server_id)
        kept = (policy or self.policy).keep(snaps, when)
        kept.update(s.snapshot_id for s in snaps if s.taken_at > when - keep_younger_than)
        deleted = []
        for snap in snaps:
            if snap.snapshot_id not in kept:
                try:
                    self.backend.delete(_manifest_name(source_server_id, snap.snapshot_id))
                except ObjectNotFound:
                    continue  # another process applied retention at the same time
                deleted.append(snap.snapshot_id)
        return deleted

    def gc(self, *, timeout: float = 300.0, compact_below: float = 0.5) -> GcStats:
        """Remove every chunk no manifest references, and compact packs whose live fraction is below
        ``compact_below``. Waits up to ``timeout`` s for creates, exports and open readers to finish
        (StorageError after). Refuses (SnapshotError) if any manifest is unreadable: its chunks would go."""
        with self.chunks.lock.exclusive(timeout):
            referenced: set[bytes] = set()
            for name, loaded in self._all_manifests():
                if isinstance(loaded, SnapshotError):
                    raise SnapshotError(f"gc refused: {loaded.message}; repair or delete {name} first")
                for table in loaded[1].values():
                    referenced.update(table.table[o : o + 32] for o in range(0, len(table.table), 32))
            referenced.discard(HOLE)
            return self.chunks.collect(referenced, compact_below=compact_below)

    def verify(self) -> VerifyReport:
        """Re-read and re-hash every stored chunk; report damaged or missing chunks with the snapshots
        that reference them, and manifests that cannot be read."""
        with self.chunks.lock.shared():
            refs: dict[bytes, list[tuple[str, str]]] = {}
            bad_manifests: list[tuple[str, str]] = []
            checked_manifests = 0
            for name, loaded in self._all_manifests():
                if isinstance(loaded, SnapshotError):
                    bad_manifests.append((name, loaded.message))
                    continue
                checked_manifests += 1
                snap, tables = loaded
                for table in tables.values():
                    for o in range(0, len(table.table), 32):
                        d = table.table[o : o + 32]
                        if d != HOLE:
                            refs.setdefault(d, []).append((snap.source_server_id, snap.snapshot_id))
            checked, damaged = self.chunks.verify_all()
            bad = [(d, reason) for d, reason in damaged]
            held = self.chunks.held(refs)
            bad.extend((d, "missing: not in the chunk index") for d in refs if d not in held)
        report = tuple(BadChunk(d.hex(), reason, tuple(dict.fromkeys(refs.get(d, [])))) for d, reason in bad)
        return VerifyReport(checked, checked_manifests, report, tuple(bad_manifests))

    def _all_manifests(self) -> Iterator[tuple[str, tuple[Snapshot, dict[str, DiskTable]] | SnapshotError]]:
        for sid in sorted(self.backend.list("manifests")):
            for snap_id in sorted(self.backend.list(f"manifests/{sid}")):
                name = _manifest_name(sid, snap_id)
                try:
                    yield name, manifest.decode(self.backend.get(name), name)
                except ObjectNotFound:
                    continue
                except (SnapshotError, StorageError) as exc:
                    yield name, SnapshotError(exc.message)


def _manifest_name(source_server_id: str, snapshot_id: str) -> str:
    return f"manifests/{source_server_id}/{snapshot_id}"


def _not_found(source_server_id: str, snapshot_id: str) -> NotFound:
    return NotFound(
        f"snapshot {snapshot_id} of source server {source_server_id} not found",
        resource_id=snapshot_id,
        resource_type="snapshot",
    )


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _data_map(fd: int, size: int, n: int) -> bytearray | None:
    """Per chunk, 1 if the file may hold data there (SEEK_DATA/SEEK_HOLE), so chunks lying wholly in a
    hole of a sparse staging file are known to be zero without reading them. None if unknown."""
    marks = bytearray(n)
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after offset
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            first, last = start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
            marks[first : last + 1] = b"\x01" * (last + 1 - first)
            offset = end
    except OSError:
        return None  # a file system without SEEK_DATA: read everything
    return marks


def _mark_hole(table: bytearray, index: int, has_data: bytearray | None) -> bool:
    """Record chunk ``index`` as a hole if the file has no data there; True if it must be read."""
    if has_data is None or has_data[index]:
        return True
    table[32 * index : 32 * index + 32] = HOLE
    return False


def _runs(indexes: list[int]) -> Iterator[range]:
    """Sorted chunk indexes grouped into runs of consecutive indexes."""
    i = 0
    while i < len(indexes):
        j = i + 1
        while j < len(indexes) and indexes[j] == indexes[j - 1] + 1:
            j += 1
        yield range(indexes[i], indexes[j - 1] + 1)
        i = j
