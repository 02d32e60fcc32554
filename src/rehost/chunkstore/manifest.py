"""Snapshot manifests: per disk, its size and the digest of every chunk (or a hole).

A manifest is one backend object ``manifests/<source-server-id>/<snapshot-id>``:

    b"RHSNAP1\\n" | u32 big-endian header length | header (JSON) | zstd(body)

The header names the snapshot, its time and its disks (device name, size, chunk count), so listing
snapshots reads only the first few KiB of each manifest. The body holds each disk's chunk table in header
order: 32 bytes per chunk, the chunk's sha256, or 32 zero bytes for a hole (an all-zero chunk).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import zstandard

from rehost.chunkstore import CHUNK_SIZE
from rehost.errors import SnapshotError

MAGIC = b"RHSNAP1\n"
HOLE = bytes(32)
"""The chunk-table entry of an all-zero chunk."""
_LEN = struct.Struct(">I")
_PREFIX = len(MAGIC) + _LEN.size
HEADER_PROBE = 4096
"""Bytes read first when only the header is wanted; longer headers cost a second read."""


@dataclass(frozen=True)
class Snapshot:
    """A point-in-time copy of all of a source server's disks.

    ``snapshot_id`` is ``snap-`` + 17 hex characters; ``taken_at`` is an aware UTC datetime; ``disks``
    maps each device name (``/dev/sda``) to its size in bytes.
    """

    snapshot_id: str
    source_server_id: str
    taken_at: datetime
    disks: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DiskTable:
    """One disk's chunk table: ``table[32*i : 32*i+32]`` is chunk i's digest or ``HOLE``."""

    size: int
    table: bytes

    @property
    def chunk_count(self) -> int:
        return len(self.table) // 32

    def digest(self, index: int) -> bytes | None:
        """Chunk ``index``'s digest, or None for a hole."""
        d = self.table[32 * index : 32 * index + 32]
        return None if d == HOLE else d

    def chunk_length(self, index: int) -> int:
        """Bytes in chunk ``index`` (the last chunk of a disk may be short)."""
        return min(CHUNK_SIZE, self.size - index * CHUNK_SIZE)


def chunk_count(size: int) -> int:
    return -(-size // CHUNK_SIZE)


def encode(snapshot: Snapshot, tables: Mapping[str, DiskTable]) -> bytes:
    """The manifest object's bytes."""
    disks = []
    for name, size in snapshot.disks.items():
        t = tables[name]
        if t.size != size or t.chunk_count != chunk_count(size):
            raise SnapshotError(f"chunk table of {name} does not match its size {size}")
        disks.append({"deviceName": name, "size": size, "chunks": t.chunk_count})
    header = json.dumps(
        {
            "version": 1,
            "snapshotID": snapshot.snapshot_id,
            "sourceServerID": snapshot.source_server_id,
            "takenAt": snapshot.taken_at.astimezone(UTC).isoformat(),
            "disks": disks,
        },
        separators=(",", ":"),
    ).encode()
    body = zstandard.ZstdCompressor(level=1).compress(b"".join(tables[n].table for n in snapshot.disks))
    return MAGIC + _LEN.pack(len(header)) + header + body


def header_length(prefix: bytes, name: str) -> int:
    """From the first bytes of a manifest, the length of magic + length field + header."""
    if len(prefix) < _PREFIX or prefix[: len(MAGIC)] != MAGIC:
        raise SnapshotError(f"manifest {name} is damaged (bad magic)")
    return _PREFIX + _LEN.unpack_from(prefix, len(MAGIC))[0]


def decode_header(data: bytes, name: str) -> tuple[Snapshot, list[tuple[str, int, int]], int]:
    """The snapshot, its disks as (name, size, chunks), and where the body starts."""
    end = header_length(data, name)
    if len(data) < end:
        raise SnapshotError(f"manifest {name} is damaged (truncated header)")
    try:
        h = json.loads(data[_PREFIX:end])
        disks = [(d["deviceName"], int(d["size"]), int(d["chunks"])) for d in h["disks"]]
        taken_at = datetime.fromisoformat(h["takenAt"]).astimezone(UTC)
        snap = Snapshot(h["snapshotID"], h["sourceServerID"], taken_at, {n: s for n, s, _ in disks})
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"manifest {name} is damaged (bad header: {exc})") from exc
    return snap, disks, end


def decode(data: bytes, name: str) -> tuple[Snapshot, dict[str, DiskTable]]:
    """The snapshot and its disks' chunk tables from a whole manifest object."""
    snap, disks, end = decode_header(data, name)
    try:
        body = zstandard.ZstdDecompressor().decompress(
            data[end:], max_output_size=32 * sum(n for *_, n in disks) + 1
        )
    except zstandard.ZstdError as exc:
        raise SnapshotError(f"manifest {name} is damaged (body: {exc})") from exc
    if len(body) != 32 * sum(n for *_, n in disks):
        raise SnapshotError(f"manifest {name} is damaged (chunk tables have the wrong length)")
    tables: dict[str, DiskTable] = {}
    pos = 0
    for dev, size, n in disks:
        tables[dev] = DiskTable(size, body[pos : pos + 32 * n])
        pos += 32 * n
    return snap, tables
