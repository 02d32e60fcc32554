"""The chunk store: content-addressed 64 KiB chunks in packs, found through an index.

A chunk's ID is ``sha256(raw bytes)``. A chunk is compressed with zstd level 1 when that shrinks it and
stored raw otherwise. Chunks are appended to an in-memory pack; a full pack (or ``flush``) is written as
one backend object ``packs/<xx>/<pack-id>`` and only then entered in the index, so the index never points
at bytes that are not durable. The index (SQLite in WAL mode, ``index.db`` in the store's local
directory) maps digest -> (pack, offset, length, codec) and answers ``has`` with one primary-key lookup.

The pack format and the codecs are in ``packs``.

Process safety: packs get random names (no two writers collide), SQLite serialises index updates, two
writers storing the same chunk both succeed (the second copy is dead space that compaction reclaims),
and pack writes hold the store lock shared, so garbage collection (exclusive) never sees half a write.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rehost.chunkstore import CHUNK_SIZE
from rehost.chunkstore.backends.base import Backend, ObjectNotFound
from rehost.chunkstore.locking import StoreLock
from rehost.chunkstore.packs import (
    HEADER,
    Codec,
    IndexRow,
    build_pack,
    entry_header_matches,
    pack_name,
    parse_pack,
)
from rehost.errors import InvalidInput, NotFound, StorageError
from rehost.fsutil import private_file

PACK_TARGET = 16 * 1024 * 1024
"""A pack is written once its entries reach this many bytes (a 4 GiB disk of random data: 256 packs)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    digest BLOB PRIMARY KEY, pack TEXT NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, codec INTEGER NOT NULL, size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks (pack);
CREATE TABLE IF NOT EXISTS packs (pack TEXT PRIMARY KEY, size INTEGER NOT NULL) WITHOUT ROWID;
"""

Digest = bytes | str


def as_digest(digest: Digest) -> bytes:
    """A digest as 32 bytes, from bytes or 64 hex characters; anything else raises InvalidInput."""
    if isinstance(digest, str):
        try:
            digest = bytes.fromhex(digest)
        except ValueError:
            raise InvalidInput(f"not a sha256 digest: {digest!r}") from None
    if len(digest) != 32:
        raise InvalidInput(f"a chunk digest is 32 bytes, not {len(digest)}")
    return bytes(digest)


@dataclass(frozen=True)
class ChunkLocation:
    """Where a chunk's payload lies: ``length`` bytes at ``offset`` in pack ``pack``."""

    pack: str
    offset: int
    length: int
    codec: int
    size: int


@dataclass(frozen=True)
class StoreStats:
    """Counts from the index: chunks, packs, payload bytes stored, raw bytes they hold."""

    chunks: int
    packs: int
    stored_bytes: int
    raw_bytes: int
    pack_bytes: int


@dataclass(frozen=True)
class GcStats:
    """What a collection did."""

    chunks_removed: int
    packs_deleted: int
    packs_rewritten: int
    bytes_freed: int


class ChunkStore:
    """Chunks by digest. Safe for concurrent use by threads of one process and by several processes.

    ``put`` makes a chunk visible to ``has``/``get`` of this object at once and durable (and visible to
    other processes) at the next ``flush`` (called by ``SnapshotStore.create`` before it writes a
    manifest, and by ``close``). A chunk no manifest references is garbage: ``gc`` may remove it.
    """

    def __init__(self, backend: Backend, local_dir: Path, *, pack_target: int = PACK_TARGET) -> None:
        self.backend = backend
        self.local_dir = Path(local_dir)
        self.lock = StoreLock(self.local_dir / "lock")
        self.pack_target = pack_target
        self._mutex = threading.RLock()
        self._pending: dict[bytes, tuple[int, bytes, int]] = {}  # digest -> (codec, payload, raw size)
        self._pending_bytes = 0
        self._codec = Codec()
        self._pool: ThreadPoolExecutor | None = None
        fresh = not (self.local_dir / "index.db").exists()
        try:
            private_file(self.local_dir / "index.db")  # its -wal and -shm files take its mode
            self._db = sqlite3.connect(
                self.local_dir / "index.db", timeout=60.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # Commits are rare (one per pack) and must survive power loss: the manifest written next
            # relies on them.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open chunk index {self.local_dir / 'index.db'}: {exc}") from exc
        if fresh and any(self.backend.list("packs")):
            # The index was lost but packs exist: without this, has() would deny every chunk and gc would
            # take every pack for crash litter.
            with self.lock.shared():
                self.rebuild_index()

    # -- queries ----------------------------------------------------------------------------------------

    def has(self, digest: Digest) -> bool:
        """Whether the store holds the chunk (one index lookup)."""
        d = as_digest(digest)
        with self._mutex:
            if d in self._pending:
                return True
            return self._query("SELECT 1 FROM chunks WHERE digest = ?", (d,)).fetchone() is not None

    def missing(self, digests: Iterable[Digest]) -> list[bytes]:
        """The digests (as bytes, in the given order) of the chunks the store does not hold."""
        wanted = [as_digest(d) for d in digests]
        held: set[bytes] = set()
        with self._mutex:
            for i in range(0, len(wanted), 500):
                batch = wanted[i : i + 500]
                marks = ",".join("?" * len(batch))
                rows = self._query(f"SELECT digest FROM chunks WHERE digest IN ({marks})", batch)
                held.update(r[0] for r in rows)
            held.update(d for d in wanted if d in self._pending)
        return [d for d in wanted if d not in held]

    def locate(self, digest: Digest) -> ChunkLocation:
        """The chunk's place in its pack; NotFound if the store does not hold it (or only pending)."""
        d = as_digest(digest)
        with self._mutex:
            row = self._query(
                "SELECT pack, offset, length, codec, size FROM chunks WHERE digest = ?", (d,)
            ).fetchone()
        if row is None:
            raise NotFound(f"chunk {d.hex()} is not in the store", resource_id=d.hex(), resource_type="chunk")
        return ChunkLocation(*row)

    def get(self, digest: Digest, *, verify: bool = True) -> bytes:
        """The chunk's raw bytes. NotFound if absent; StorageError if its stored bytes are damaged
        (unreadable, undecodable, or with ``verify`` not hashing to the digest)."""
        d = as_digest(digest)
        with self._mutex:
            pending = self._pending.get(d)
        if pending is not None:
            codec, payload, size = pending
            return self._codec.decode(d, codec, payload, size, verify=False)
        loc = self.locate(d)
        try:
            payload = self.backend.get(pack_name(loc.pack), loc.offset, loc.length)
        except ObjectNotFound as exc:
            # A collection in another process may have moved the chunk to a new pack since the
            # look-up (callers that hold the store lock never see this): look it up once more.
            moved = self.locate(d)
            if moved == loc:
                raise StorageError(f"chunk {d.hex()} is unreadable: pack {loc.pack} is missing") from exc
            loc = moved
            payload = self.backend.get(pack_name(loc.pack), loc.offset, loc.length)
        if len(payload) != loc.length:
            raise StorageError(f"chunk {d.hex()} is unreadable: pack {loc.pack} is truncated")
        return self._codec.decode(d, loc.codec, payload, loc.size, verify=verify)

    def stats(self) -> StoreStats:
        """Counts over the durable (flushed) chunks."""
        with self._mutex:
            c = self._query("SELECT COUNT(*), COALESCE(SUM(length), 0), COALESCE(SUM(size), 0) FROM chunks")
            chunks, stored, raw = c.fetchone()
            packs, pack_bytes = self._query("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM packs").fetchone()
        return StoreStats(chunks, packs, stored, raw, pack_bytes)

    # -- writing ----------------------------------------------------------------------------------------

    def put(self, digest: Digest, data: bytes) -> None:
        """Store a chunk under its digest (idempotent). The digest is checked against the data
        (InvalidInput on a mismatch or a chunk longer than CHUNK_SIZE). An all-zero chunk is not stored."""
        d = as_digest(digest)
        if len(data) > CHUNK_SIZE:
            raise InvalidInput(f"a chunk is at most {CHUNK_SIZE} bytes, not {len(data)}")
        if hashlib.sha256(data).digest() != d:
            raise InvalidInput(f"chunk data does not hash to {d.hex()}")
        if data == bytes(len(data)) or self.has(d):
            return
        codec, payload = self._codec.encode(data)
        self._add(d, codec, payload, len(data))

    def store_chunks(self, chunks: Sequence[bytes]) -> list[bytes | None]:
        """Store a batch of raw chunks; return each one's digest, or None for an all-zero chunk.

        Hashing (on a thread pool: hashlib releases the GIL) and compression use every core for a
        batch of a few MiB. Chunks the store already holds are not compressed again.
        """
        out: list[bytes | None] = [None] * len(chunks)
        work = [i for i, c in enumerate(chunks) if not _is_zero(c)]
        if not work:
            return out
        pool = self.executor()
        digests = list(pool.map(lambda i: hashlib.sha256(chunks[i]).digest(), work))
        for i, d in zip(work, digests, strict=True):
            out[i] = d
        new_set = set(self.missing(digests))
        new: list[int] = []
        for i, d in zip(work, digests, strict=True):
            if d in new_set:
                new.append(i)
                new_set.discard(d)  # the same chunk twice in one batch: store it once
        for i, (codec, payload) in zip(new, self._codec.encode_many([chunks[i] for i in new]), strict=True):
            self._add(_known(out[i]), codec, payload, len(chunks[i]))
        return out

    def flush(self) -> None:
        """Make every chunk put so far durable and visible to other processes."""
        with self.lock.shared():
            self.flush_unlocked()

    def flush_unlocked(self) -> None:
        """``flush`` for a caller that already holds the store lock (shared or exclusive)."""
        with self._mutex:
            if self._pending:
                self._write_pack(self._pending, replace=False)
                self._pending = {}
                self._pending_bytes = 0

    def close(self) -> None:
        """Flush and release the index and threads; the object is not used afterwards."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            self._db.close()

    # -- maintenance (callers hold the store lock) -------------------------------------------------------

    def iter_index(self) -> Iterator[tuple[bytes, ChunkLocation]]:
        """Every durable chunk with its location, grouped by pack and in pack order."""
        with self._mutex:
            rows = self._query(
                "SELECT digest, pack, offset, length, codec, size FROM chunks ORDER BY pack, offset"
            ).fetchall()
        for d, *loc in rows:
            yield d, ChunkLocation(*loc)

    def held(self, digests: Iterable[bytes]) -> set[bytes]:
        """Which of ``digests`` (bytes) the store holds."""
        wanted = list(digests)
        return set(wanted) - set(self.missing(wanted))

    def verify_all(self) -> tuple[int, list[tuple[bytes, str]]]:
        """Re-read every durable chunk and re-hash it: (chunks checked, [(digest, what is wrong)]).
        The caller holds the store lock (shared suffices)."""
        checked = 0
        bad: list[tuple[bytes, str]] = []
        for pack_id in self.pack_ids():
            with self._mutex:
                rows = self._query(
                    "SELECT digest, offset, length, codec, size FROM chunks WHERE pack = ? ORDER BY offset",
                    (pack_id,),
                ).fetchall()
            if not rows:
                continue
            try:
                data = self.read_pack(pack_id)
            except (StorageError, NotFound) as exc:
                bad.extend((d, f"unreadable: {exc.message}") for d, *_ in rows)
                checked += len(rows)
                continue
            for d, offset, length, codec, size in rows:
                checked += 1
                if offset + length > len(data):
                    bad.append((d, f"unreadable: pack {pack_id} is truncated"))
                    continue
                if not entry_header_matches(data, (d, pack_id, offset, length, codec, size)):
                    bad.append((d, f"damaged: entry header in pack {pack_id} does not match the index"))
                    continue
                try:
                    self._codec.decode(d, codec, data[offset : offset + length], size, verify=True)
                except StorageError as exc:
                    bad.append((d, f"damaged in pack {pack_id}: {exc.message.split(': ', 1)[-1]}"))
        return checked, bad

    def rebuild_index(self) -> int:
        """Enter every chunk of every pack in the index (from the packs' entry headers); return how
        many chunks were read. Entries after a damaged header in a pack are skipped (``verify`` and
        ``gc`` then treat what they miss as missing). The caller holds the store lock."""
        found = 0
        for prefix in list(self.backend.list("packs")):
            for pack_id in list(self.backend.list(f"packs/{prefix}")):
                try:
                    data = self.read_pack(pack_id)
                except (StorageError, NotFound):
                    continue
                rows = list(parse_pack(pack_id, data))
                found += len(rows)
                self._index_pack(pack_id, len(data), rows)
        return found

    def _index_pack(self, pack_id: str, size: int, rows: list[IndexRow]) -> None:
        def body(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR IGNORE INTO packs (pack, size) VALUES (?, ?)", (pack_id, size))
            db.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?, ?, ?)", rows)

        self._transaction(body)

    def pack_ids(self) -> list[str]:
        """The packs the index knows."""
        with self._mutex:
            return [r[0] for r in self._query("SELECT pack FROM packs ORDER BY pack")]

    def read_pack(self, pack_id: str) -> bytes:
        """A whole pack's bytes (StorageError or ObjectNotFound if it cannot be read)."""
        return self.backend.get(pack_name(pack_id))

    def collect(self, referenced: set[bytes], *, compact_below: float = 0.5) -> GcStats:
        """Drop every chunk not in ``referenced``; delete packs left empty, rewrite packs whose live
        fraction fell below ``compact_below``, delete pack objects the index does not know (left by a
        crash between a pack write and its index commit). The caller holds the store lock exclusive."""
        self.flush_unlocked()
        with self._mutex:
            doomed = [
                (d,) for (d,) in self._query("SELECT digest FROM chunks").fetchall() if d not in referenced
            ]
            self._transaction(lambda db: db.executemany("DELETE FROM chunks WHERE digest = ?", doomed))
            live = {
                p: n
                for p, n in self._query(
                    "SELECT pack, SUM(length) + COUNT(*) * ? FROM chunks GROUP BY pack", (HEADER.size,)
                )
            }
            sizes = dict(self._query("SELECT pack, size FROM packs").fetchall())
        deleted = rewritten = freed = 0
        for pack_id, size in sizes.items():
            live_bytes = live.get(pack_id, 0)
            if live_bytes and live_bytes >= compact_below * size:
                continue
            if live_bytes:
                self._rewrite_pack(pack_id)
                rewritten += 1
            else:
                deleted += 1
            self._drop_pack(pack_id)
            freed += size - live_bytes
        deleted += self._delete_unknown_packs(set(sizes))
        cleanup = getattr(self.backend, "cleanup_temporaries", None)
        if cleanup is not None:
            cleanup("packs")
        return GcStats(len(doomed), deleted, rewritten, freed)

    # -- internals --------------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StorageError(f"chunk index query failed: {exc}") from exc

    def _transaction(self, body: Callable[[sqlite3.Connection], object]) -> None:
        with self._mutex:  # one connection serves every thread: one transaction at a time
            self._transaction_locked(body)

    def _transaction_locked(self, body: Callable[[sqlite3.Connection], object]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                body(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"chunk index update failed: {exc}") from exc

    def executor(self) -> ThreadPoolExecutor:
        with self._mutex:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="chunks")
            return self._pool

    def _add(self, digest: bytes, codec: int, payload: bytes, size: int) -> None:
        with self._mutex:
            if digest in self._pending:
                return
            self._pending[digest] = (codec, payload, size)
            self._pending_bytes += HEADER.size + len(payload)
            if self._pending_bytes >= self.pack_target:
                self.flush()

    def _write_pack(self, entries: dict[bytes, tuple[int, bytes, int]], *, replace: bool) -> str:
        """Write ``entries`` as one pack, durably, then index them. Returns the pack ID."""
        pack_id = secrets.token_hex(16)
        data, rows = build_pack(pack_id, entries)
        self.backend.put(pack_name(pack_id), data)
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"

        def body(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO packs (pack, size) VALUES (?, ?)", (pack_id, len(data)))
            db.executemany(f"{verb} INTO chunks VALUES (?, ?, ?, ?, ?, ?)", rows)

        self._transaction(body)
        return pack_id

    def _rewrite_pack(self, pack_id: str) -> None:
        """Copy a pack's live chunks into a new pack (payloads as they are: no recompression)."""
        data = self.read_pack(pack_id)
        with self._mutex:
            rows = self._query(
                "SELECT digest, offset, length, codec, size FROM chunks WHERE pack = ? ORDER BY offset",
                (pack_id,),
            ).fetchall()
        items = [(d, (codec, data[off : off + n], size)) for d, off, n, codec, size in rows]
        for i in range(0, len(items), 4096):  # keep rewritten packs near the target size
            self._write_pack(dict(items[i : i + 4096]), replace=True)

    def _drop_pack(self, pack_id: str) -> None:
        with self._mutex:
            self._transaction(lambda db: db.execute("DELETE FROM packs WHERE pack = ?", (pack_id,)))
        try:
            self.backend.delete(pack_name(pack_id))
        except ObjectNotFound:
            pass

    def _delete_unknown_packs(self, known: set[str]) -> int:
        deleted = 0
        with self._mutex:
            known = known | set(self.pack_ids())
        for prefix in list(self.backend.list("packs")):
            for pack_id in list(self.backend.list(f"packs/{prefix}")):
                if pack_id not in known:
                    try:
                        self.backend.delete(f"packs/{prefix}/{pack_id}")
                        deleted += 1
                    except ObjectNotFound:
                        pass
        return deleted


def _known(digest: bytes | None) -> bytes:
    assert digest is not None
    return digest


def _is_zero(chunk: bytes) -> bool:
    # bytes == bytes is a memcmp (tens of GiB/s); any() over bytes would be a Python loop.
    if len(chunk) == CHUNK_SIZE:
        return chunk == _ZERO
    return chunk == bytes(len(chunk))


_ZERO = bytes(CHUNK_SIZE)
