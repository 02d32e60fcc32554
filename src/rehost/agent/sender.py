"""The data plane of the agent: one replication session over `rehost.replication.protocol`.

A `Session` owns a connected `ReplicationClient` and the disks' `DigestStore`s. It sends changed chunks
(found by a full scan or by the tracker's dirty sets) this way:

1. read once, in 4 MiB windows; all-zero chunks carry no payload (ZERO writes, or nothing at all when the
   server's staging volume is new and the chunk was never sent);
2. before the server may receive new bytes for a chunk it already holds, the chunk's entries for the
   blocks about to change are invalidated in the `DigestStore` and made durable (one fsync per group of
   up to 32 windows): otherwise a crash after the server applied the bytes, before FLUSH_ACK, would leave
   the old entries, and a block later rewritten to its old content would be skipped;
3. for the chunks sent whole, ask the server with HAVE (sha256 per 64 KiB chunk) which its chunk store
   already holds: those it fills in itself. Where asking stops paying (8 windows in a row without a hit:
   data no other server has), only every 8th window is asked, until one hits again (`DedupProbe`);
4. WRITE the rest, adjacent chunks coalesced up to 4 MiB, compressed only when the link is slower than the
   compressor (`throttle.CodecChooser`), throttled to ``bandwidthThrottling``; of a chunk a rescan found
   only partly changed (by its 4 KiB block digests), or a tracked chunk only partly written, just those
   blocks;
5. FLUSH; only after FLUSH_ACK are the chunks' digests persisted on the source and their bytes counted as
   replicated. A crash anywhere before that only makes the agent send them again.

Reading and hashing of the next window run in a helper thread while the main thread talks to the server.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rehost.agent.discovery import Disk
from rehost.agent.rescan import (
    BLOCK_DIGEST_SIZE,
    BLOCK_SIZE,
    BLOCKS,
    CHUNK_SIZE,
    FULL_MASK,
    PARTIAL_DIGEST,
    READ_SIZE,
    UNKNOWN_DIGEST,
    ZERO_BLOCKS,
    ZERO_DIGEST,
    ChangedChunk,
    DigestStore,
    DiskReader,
    runs,
    scan,
)
from rehost.agent.rescan import chunk_digest as chunk_digest_fast
from rehost.agent.state import AgentState
from rehost.agent.throttle import CodecChooser, Throttle
from rehost.errors import ProtocolError
from rehost.replication.protocol import (
    MAX_DATA,
    DiskInfo,
    Encoding,
    Have,
    HaveReply,
    ReplicationClient,
    SnapshotOk,
    Write,
    chunk_digest,
    encode_block,
)

WINDOW = READ_SIZE // CHUNK_SIZE  # chunks per read window (64)
FLUSH_BYTES = 64 * 1024 * 1024  # flush at least this often during a long scan, so progress is durable
FLUSH_SECONDS = 2.0
GROUP_WINDOWS = 32  # windows whose invalidations share one fsync of the digest file


class DiskRun:
    """One disk during a session: its store and reader plus what is sent but not yet acknowledged."""

    def __init__(self, index: int, disk: Disk, state: AgentState, progress: dict[str, Any]) -> None:
        self.index = index
        self.disk = disk
        self.reader = DiskReader(disk.path)
        self.store = DigestStore(state.digest_path(disk), self.reader.size)
        self.size = self.reader.size
        self.progress = progress  # this disk's entry of replication.json (ackedSeq, initialSyncComplete)
        if self.store.fresh:
            progress["initialSyncComplete"] = False
        self.server_new = False  # the staging volume is known to be all zeros where we never wrote
        self.pending: dict[int, tuple[bytes, bytes]] = {}  # chunk -> (digest, block entries) once acked
        self.scan_pos = 0  # chunks below it were sent (or found unchanged) by the current full scan
        self.acked_pos = 0
        self.scanning = ""  # "" | "INITIAL_SYNC" | "RESCAN"
        self.needs_scan = True  # every session starts with a compare of the whole disk

    @property
    def initial_sync_complete(self) -> bool:
        return bool(self.progress.get("initialSyncComplete"))

    def replicated_bytes(self) -> int:
        if self.initial_sync_complete:
            return self.size
        return min(self.size, self.acked_pos * CHUNK_SIZE)

    def close(self) -> None:
        self.store.close()
        self.reader.close()


class DedupProbe:
    """Which windows are worth a HAVE. Hashing every chunk with sha256 is the agent's largest cost on
    data the store does not hold (a first server, user data), and a HAVE that finds nothing only delays
    the writes; what the store does hold (the same OS on another server) comes in long runs. So after
    MISSES windows in a row without a hit only every SAMPLE-th window is asked, and a hit asks every
    window again. Read by the reading thread, updated by the sending one (plain attribute access)."""

    MISSES = 8
    SAMPLE = 8

    def __init__(self) -> None:
        self.misses = 0
        self._windows = 0
        self.windows_skipped = 0

    def wanted(self) -> bool:
        self._windows += 1
        ask = self.misses < self.MISSES or self._windows % self.SAMPLE == 0
        if not ask:
            self.windows_skipped += 1
        return ask

    def record(self, held: int) -> None:
        """The HAVE of one window found ``held`` chunks."""
        self.misses = 0 if held else self.misses + 1


class Batch:
    """Changed chunks of one window of one disk, with the sha256 of each chunk that is sent whole when
    the window is worth a HAVE (`asks`).

    `masks` (tracked writes only) maps a chunk index to the bit mask of its written 4 KiB blocks: a chunk
    with some but not all bits set is sent as just those blocks (a partial chunk). Without `masks` (a scan)
    each chunk's own mask of blocks whose digests changed decides the same way."""

    __slots__ = ("disk", "chunks", "shas", "end", "masks", "asks")

    def __init__(
        self,
        disk: DiskRun,
        chunks: list[ChangedChunk],
        end: int,
        masks: dict[int, int] | None = None,
        probe: DedupProbe | None = None,
    ) -> None:
        self.disk = disk
        self.chunks = chunks
        self.end = end
        self.masks = masks
        self.asks = any(self.whole(c) for c in chunks) and (probe is None or probe.wanted())
        self.shas = [chunk_digest(c.data) if self.asks and self.whole(c) else b"" for c in chunks]

    @property
    def tracked(self) -> bool:
        return self.masks is not None

    def mask(self, chunk: ChangedChunk) -> int:
        """The chunk's blocks to send (FULL_MASK: the whole chunk)."""
        if self.masks is not None:
            return self.masks.get(chunk.index, FULL_MASK)
        return chunk.mask

    def whole(self, chunk: ChangedChunk) -> bool:
        """Whether `chunk` is sent whole (HAVE, then WRITE): non-zero and not a partial chunk."""
        return not chunk.is_zero and self.mask(chunk) == FULL_MASK

    def data_bytes(self) -> int:
        return sum(len(c.data) for c in self.chunks)

    def invalidate(self) -> bool:
        """Forget, in memory, what the store says the server holds where this batch will write; returns
        whether any entry changed (then the store must be committed before the batch is sent)."""
        store = self.disk.store
        changed = False
        for c in self.chunks:
            mask = FULL_MASK if c.is_zero else self.mask(c)
            if mask and store.invalidate(c.index, mask):
                changed = True
        return changed


def prefetch(items: Iterator[Batch], depth: int = 4) -> Iterator[Batch]:
    """Run `items` in a helper thread `depth` ahead (reading and hashing release the GIL)."""
    q: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    thread = threading.Thread(target=produce, name="rehost-read", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def window_batches(disk: DiskRun, probe: DedupProbe | None = None, first: int = 0) -> Iterator[Batch]:
    """Batches of a full scan from chunk `first`; a window with no change still yields (for progress)."""
    for start in range(first, disk.store.chunks, WINDOW):
        end = min(start + WINDOW, disk.store.chunks)
        yield Batch(disk, list(scan(disk.reader, disk.store, (start, end))), end, probe=probe)


def dirty_batches(disk: DiskRun, dirty: Mapping[int, int], probe: DedupProbe | None = None) -> Iterator[Batch]:
    """Batches for the tracker's dirty chunks ({chunk: block mask}), each run of adjacent chunks read at
    once. Every dirty chunk is sent, even when its digest matches the store's: the digest may already
    include a write whose blocks were not sent yet (see `Session._complete`)."""
    wanted = sorted(i for i in dirty if i < disk.store.chunks)
    for start, end in runs(wanted):
        for s in range(start, end, WINDOW):
            e = min(s + WINDOW, end)
            data = disk.reader.read(s * CHUNK_SIZE, (e - s) * CHUNK_SIZE)
            chunks = []
            for i in range(s, e):
                piece = data[(i - s) * CHUNK_SIZE : (i - s + 1) * CHUNK_SIZE]
                digest = chunk_digest_fast(piece)
                # The block entries are computed here, in the reading thread.
                chunks.append(
                    ChangedChunk(i, i * CHUNK_SIZE, b"" if digest == ZERO_DIGEST else piece, digest)
                )
            yield Batch(disk, chunks, -1, {i: dirty[i] for i in range(s, e)}, probe)


class Session:
    """A connected replication session for the given disks (index = position in HELLO)."""

    def __init__(
        self,
        client: ReplicationClient,
        disks: list[DiskRun],
        state: AgentState,
        replication: dict[str, Any],
        throttle: Throttle,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.disks = disks
        self.state = state
        self.replication = replication  # replication.json, saved after each FLUSH_ACK
        self.throttle = throttle
        self.on_progress = on_progress or (lambda: None)
        self.codec: CodecChooser | None = None
        self.sent_since_flush = 0
        self.last_flush = time.monotonic()
        self.bytes_sent = 0  # payload bytes on the wire (after compression)
        self.bytes_deduplicated = 0  # bytes the server already held (HAVE hits)
        self.bytes_zero = 0
        self._inflight: deque[tuple[Batch, int, list[int]]] = deque()
        self.dedup = DedupProbe()
        self._next_request = 1

    # -- session start -------------------------------------------------------------------------------------

    def hello(self, source_server_id: str, token: str) -> None:
        """Authenticate and reconcile with what the server holds: a disk whose staging volume is new, or
        that holds less than this agent saw acknowledged, starts over (its digests are forgotten)."""
        infos = [DiskInfo(d.disk.name, d.size) for d in self.disks]
        ok = self.client.hello(source_server_id, token, infos)
        self.codec = CodecChooser(ok.encodings, self.throttle)
        if len(ok.disks) != len(self.disks):
            raise ProtocolError(f"HELLO_OK describes {len(ok.disks)} disks, not {len(self.disks)}")
        for run, resume in zip(self.disks, ok.disks):  # noqa: B905 - Python 3.8 has no strict=
            acked = int(run.progress.get("ackedSeq", 0))
            if resume.is_new or resume.durable_seq < acked:
                run.store.forget_all()
                run.progress["initialSyncComplete"] = False
                run.progress["ackedSeq"] = 0
            run.server_new = bool(resume.is_new)
            self.replication["seq"] = max(int(self.replication.get("seq", 0)), resume.durable_seq)

    # -- sending ---------------------------------------------------------------------------------------------

    def full_scan(self, disk: DiskRun, stop: threading.Event | None = None) -> bool:
        """Compare the whole disk with its digests and send what differs; returns False when `stop` was set
        before the end. The scan is the initial sync while that is not complete, else a RESCAN."""
        disk.scanning = "RESCAN" if disk.initial_sync_complete else "INITIAL_SYNC"
        disk.scan_pos = disk.acked_pos = 0
        try:
            for group in self._groups(prefetch(window_batches(disk, self.dedup))):
                for batch in group:
                    self.send_batch(batch)
                    disk.scan_pos = batch.end
                    self.maybe_flush()
                if stop is not None and stop.is_set():
                    self.drain()
                    return False
            self.flush()
            disk.needs_scan = False
            if not disk.initial_sync_complete:
                disk.progress["initialSyncComplete"] = True
                self.state.save_replication(self.replication)
            return True
        finally:
            disk.scanning = ""
            self.on_progress()

    def send_dirty(self, disk: DiskRun, dirty: Mapping[int, int]) -> None:
        """Send the tracker's dirty chunks ({chunk: 4 KiB block mask}): whole chunks as a scan would,
        partly written ones as just their written blocks."""
        for group in self._groups(prefetch(dirty_batches(disk, dirty, self.dedup))):
            for batch in group:
                self.send_batch(batch)
                self.maybe_flush()

    def _groups(self, batches: Iterator[Batch]) -> Iterator[list[Batch]]:
        """`batches` in order, in groups whose store entries have been invalidated durably before the group
        is yielded: one fsync per group of up to GROUP_WINDOWS windows (or FLUSH_BYTES of changed data),
        not one per window. A batch that changes no entry (the initial sync) passes straight through."""
        held: list[Batch] = []
        held_bytes = 0
        for batch in batches:
            changed = batch.invalidate()
            if not changed and not held:
                yield [batch]
                continue
            held.append(batch)
            held_bytes += batch.data_bytes()
            if len(held) >= GROUP_WINDOWS or held_bytes >= FLUSH_BYTES:
                batch.disk.store.commit()
                yield held
                held, held_bytes = [], 0
        if held:
            held[0].disk.store.commit()
            yield held

    def send_batch(self, batch: Batch) -> None:
        """Ask HAVE for this batch, then finish the previous one: one HAVE is always in flight, so the
        server answers it while the agent writes, instead of both sides waiting on each other."""
        data_idx = [i for i, c in enumerate(batch.chunks) if batch.whole(c)]
        request_id = 0
        if data_idx and batch.asks:
            request_id = self._next_request
            self._next_request += 1
            entries = [(batch.chunks[i].index, batch.shas[i]) for i in data_idx]
            self.client.send(Have(request_id, batch.disk.index, entries))
        self._inflight.append((batch, request_id, data_idx))
        while len(self._inflight) > 1:
            self._complete(*self._inflight.popleft())

    def drain(self) -> None:
        """Finish every batch sent so far (before a FLUSH or SNAPSHOT)."""
        while self._inflight:
            self._complete(*self._inflight.popleft())

    def _complete(self, batch: Batch, request_id: int, data_idx: list[int]) -> None:
        disk = batch.disk
        held = [False] * len(data_idx)
        if request_id:
            reply = self.client.receive(HaveReply)
            assert isinstance(reply, HaveReply)
            if reply.request_id != request_id or reply.count != len(data_idx):
                raise ProtocolError("HAVE_REPLY does not answer the HAVE")
            held = reply.flags()
            self.dedup.record(sum(held))
        to_write: list[ChangedChunk] = []
        for i, was_held in zip(data_idx, held):  # noqa: B905 - Python 3.8 has no strict=
            chunk = batch.chunks[i]
            if was_held:
                self.bytes_deduplicated += len(chunk.data)
                disk.pending[chunk.index] = (chunk.digest, chunk.blocks)
            else:
                to_write.append(chunk)
        zero_writes: list[ChangedChunk] = []
        for chunk in batch.chunks:
            if not chunk.is_zero:
                continue
            known = disk.store.get(chunk.index)
            if disk.server_new and known == UNKNOWN_DIGEST and chunk.index not in disk.pending:
                # never written: the new staging volume is zero there
                disk.pending[chunk.index] = (ZERO_DIGEST, ZERO_BLOCKS)
            else:
                zero_writes.append(chunk)
        for group in _coalesce(zero_writes):
            offset = group[0].offset
            length = min(disk.size, group[-1].offset + CHUNK_SIZE) - offset
            self.client.send(Write(disk.index, offset, length, Encoding.ZERO, b""))
            self.bytes_zero += length
            for c in group:
                disk.pending[c.index] = (ZERO_DIGEST, ZERO_BLOCKS)
        for group in _coalesce(to_write):
            self._write(disk, group)
        for chunk in batch.chunks:
            if not chunk.is_zero and not batch.whole(chunk):
                self._write_blocks(disk, chunk, batch.mask(chunk), batch.tracked)

    def _write_blocks(self, disk: DiskRun, chunk: ChangedChunk, mask: int, tracked: bool) -> None:
        """Send only the 4 KiB blocks of `mask` of a chunk.

        Found by a rescan, the other blocks' entries matched what was read, so the server then holds the
        chunk as read: its digest is recorded. Found by the tracker, the read may hold a newer write to
        other blocks whose event is still on its way, so the chunk is recorded as PARTIAL with entries for
        the blocks sent only; the next rescan compares it block by block."""
        b = 0
        while b < BLOCKS:
            if not mask & (1 << b):
                b += 1
                continue
            e = b
            while e < BLOCKS and mask & (1 << e):
                e += 1
            piece = chunk.data[b * BLOCK_SIZE : e * BLOCK_SIZE]
            if piece:
                self._send_write(disk, chunk.offset + b * BLOCK_SIZE, piece)
            b = e
        if not tracked:
            disk.pending[chunk.index] = (chunk.digest, chunk.blocks)
            return
        # Build on what an earlier send in this flush interval recorded, else on the store's entries.
        base = disk.pending[chunk.index][1] if chunk.index in disk.pending else disk.store.blocks(chunk.index)
        size = BLOCK_DIGEST_SIZE
        parts = [
            (chunk.blocks if mask & (1 << k) else base)[k * size : (k + 1) * size] for k in range(BLOCKS)
        ]
        disk.pending[chunk.index] = (PARTIAL_DIGEST, b"".join(parts))

    def _write(self, disk: DiskRun, group: list[ChangedChunk]) -> None:
        data = group[0].data if len(group) == 1 else b"".join(c.data for c in group)
        self._send_write(disk, group[0].offset, data)
        for c in group:
            disk.pending[c.index] = (c.digest, c.blocks)

    def _send_write(self, disk: DiskRun, offset: int, data: bytes) -> None:
        """One WRITE, compressed when that pays, throttled."""
        assert self.codec is not None
        preferred = self.codec.choose()
        t0 = time.monotonic()
        encoding, payload = encode_block(data, preferred)
        t1 = time.monotonic()
        if preferred is not Encoding.RAW:
            self.codec.observe_compress(len(data), len(payload), t1 - t0)
        self.throttle.consume(len(payload))
        t2 = time.monotonic()
        self.client.send(Write(disk.index, offset, len(data), encoding, payload))
        self.codec.observe_send(len(payload), time.monotonic() - t2)
        self.bytes_sent += len(payload)
        self.sent_since_flush += len(data)

    def unflushed(self) -> bool:
        """Whether anything was sent (or asked) since the last FLUSH_ACK."""
        return bool(self.sent_since_flush or self._inflight or any(d.pending for d in self.disks))

    def maybe_flush(self) -> None:
        if self.sent_since_flush >= FLUSH_BYTES or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """FLUSH and, once acknowledged, persist the digests of everything sent and count it replicated."""
        self.drain()
        seq = int(self.replication.get("seq", 0)) + 1
        positions = [d.scan_pos for d in self.disks]
        self.client.flush(seq)
        self._acknowledged(seq, positions)

    def snapshot(self, request_id: str) -> SnapshotOk:
        """A crash-consistent snapshot of all disks at this point of the stream (also a flush)."""
        self.drain()
        seq = int(self.replication.get("seq", 0)) + 1
        positions = [d.scan_pos for d in self.disks]
        reply = self.client.snapshot(seq, request_id)
        self._acknowledged(seq, positions)
        return reply

    def _acknowledged(self, seq: int, positions: list[int]) -> None:
        self.replication["seq"] = seq
        for disk, pos in zip(self.disks, positions):  # noqa: B905 - Python 3.8 has no strict=
            for index, (digest, blocks) in disk.pending.items():
                disk.store.set_entry(index, digest, blocks)
            disk.pending.clear()
            disk.store.commit()
            disk.progress["ackedSeq"] = seq
            disk.acked_pos = pos
        self.state.save_replication(self.replication)
        self.sent_since_flush = 0
        self.last_flush = time.monotonic()
        self.on_progress()


def _coalesce(chunks: list[ChangedChunk]) -> Iterator[list[ChangedChunk]]:
    """Adjacent chunks grouped, at most MAX_DATA bytes per group."""
    group: list[ChangedChunk] = []
    for c in chunks:
        if group and (c.index != group[-1].index + 1 or len(group) * CHUNK_SIZE >= MAX_DATA):
            yield group
            group = []
        group.append(c)
    if group:
        yield group
