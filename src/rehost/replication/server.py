"""The replication server: receives agents' block streams into staging volumes and takes snapshots.

Connections are accepted, TLS-handshaken and their HELLO read and verified by one gate thread
(`replication.gate.Gate`), which bounds the time (``handshake_timeout``) and the number (``max_pending``) of
connections not yet authenticated; nothing per session is allocated before the token is verified, so all
of them together hold at most ``max_pending`` × 128 KiB (8 MiB by default). Once authenticated, one thread
per session reads frames with ``recv_into`` into a preallocated buffer (``FrameReader``) and
applies them under the source server's lock; a timer thread takes periodic snapshots. A session's staging
writes go through a pipeline one write deep (`_WritePipeline`): while one frame is written to its staging
volume, the next is received and decrypted, since the two cost about the same and both release the GIL. What a caller (the
CLI, tests) may rely on:

* A session is bound to the source server ID of its HELLO, authenticated by that ID's token; it can only
  touch that server's staging volumes. A wrong token gets ERROR(AUTH) and the connection is closed.
* Only an authenticated session gets a thread and its buffers (an 8 MiB frame reader, two 4 MiB write
  buffers). One session per source server is attached (a newer one supersedes it) and at most
  ``SESSIONS_PER_SOURCE`` (2) are alive: a HELLO while an earlier session is still ending gets ERROR(BUSY),
  so holding a token cannot pile up sessions. A session is closed after ``idle_timeout`` without a frame.
* The server accepts only HELLO (first, once), WRITE, HAVE, FLUSH, SNAPSHOT and PING. Any other, unknown,
  oversized or malformed frame gets ERROR(PROTOCOL) and the connection is closed; nothing of that frame is
  applied (frames before it were).
* FLUSH_ACK(seq) and SNAPSHOT_OK(seq) are sent only once every earlier write is on stable storage.
* A snapshot covers all of the source server's disks at one point of the stream (the lock is held while
  it is taken). Periodic snapshots happen only at a FLUSH boundary and only when something changed.
* A newer session for the same source server supersedes the older one (an agent reconnecting after a
  network failure does not wait for the old connection to time out).
* ``stop()`` lets each session finish the frame it is reading, then closes everything.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from rehost.errors import ProtocolError, RehostError, ReplicationError
from rehost.replication import protocol as p
from rehost.replication.auth import load_or_create_key, verify_token
from rehost.replication.gate import Gate
from rehost.replication.snapshots import SnapshotBackend, StoreBackend
from rehost.replication.staging import SourceStaging, StagingBusy, StagingVolume, WriteBuffer

log = logging.getLogger(__name__)

MAX_DISKS = 64
MAX_DISK_SIZE = 1 << 50  # 1 PiB: beyond that a size is a mistake, not a disk
POLL = 0.5  # seconds between checks of the stop flag while a connection is idle
RELEASE_AFTER = 1.0  # seconds a source server's staging stays open with no session
SESSIONS_PER_SOURCE = 2  # session threads alive per source server: the attached one and one being superseded


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    server_id: str
    host: str = "127.0.0.1"
    port: int = p.DEFAULT_PORT
    snapshot_interval: float = 600.0  # seconds; 0 disables periodic snapshots
    idle_timeout: float = 300.0  # a session that sends nothing (not even PING) for this long is closed
    handshake_timeout: float = 10.0  # from accept to a verified HELLO (TLS handshake included)
    max_pending: int = 64  # connections not yet authenticated; another one closes one of them (see gate)


@dataclass
class SourceState:
    """Everything the server holds for one source server; ``lock`` serialises all access."""

    source_server_id: str
    staging: SourceStaging
    lock: threading.Lock = field(default_factory=threading.Lock)
    session: Session | None = None
    last_snapshot: float = field(default_factory=time.monotonic)
    idle_since: float | None = None  # when its last session ended (None while one is attached)
    closed: bool = False  # released: a session that finds it closed attaches again


class _Stop(Exception):
    """Ends a session quietly."""


class _WritePipeline:
    """At most one staging write in flight, in its own thread, applied in submission order.

    ``submit`` first waits for the previous write, so an error surfaces (as the OSError it was) at the next
    submit or ``wait``. Everything that must see all earlier writes (HAVE, FLUSH, SNAPSHOT, the end of the
    session, a newer session taking over) calls ``wait`` first.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="staging-write")
        self._pending: Future[None] | None = None

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def quiesce(self) -> None:
        """Wait for the write in flight, if any, ignoring its outcome (it was never acknowledged)."""
        pending = self._pending
        if pending is not None:
            try:
                pending.result()
            except OSError:
                pass

    def close(self) -> None:
        self.quiesce()
        self._pool.shutdown(wait=True)


class Session:
    """One agent connection. Runs in its own thread."""

    def __init__(self, server: ReplicationServer, conn: socket.socket, peer: str, hello: p.Hello) -> None:
        """``hello`` is the first frame, already verified (`ReplicationServer.verify_hello`) by the gate."""
        self.server = server
        self.conn = conn
        self.peer = peer
        self.hello = hello
        self.source: SourceState | None = None
        self.volumes: list[StagingVolume] = []
        self.superseded = False
        self.previous: Session | None = None  # the session this one superseded, if any
        self._refused = False
        self.pipeline = _WritePipeline()
        self._buffers = (WriteBuffer(), WriteBuffer())
        self._next_buffer = 0

    # -- framing -----------------------------------------------------------------------------------------

    def _send(self, msg: p.Message) -> None:
        p.send(self.conn, msg)

    def _refuse(self, code: p.ErrorCode, message: str) -> None:
        """Best effort ERROR, then the caller closes."""
        log.warning("%s: %s: %s", self.peer, code.name, message)
        self._refused = True
        try:
            self.conn.settimeout(5.0)
            self._send(p.Error(code, message))
        except (OSError, ssl.SSLError):
            pass

    def _linger(self, seconds: float = 2.0, limit: int = 64 * 1024 * 1024) -> None:
        """After an ERROR: stop sending and discard what the peer still sends for a moment, so closing does
        not answer its in-flight data with a TCP reset that would destroy the ERROR before it is read."""
        try:
            socket.socket.shutdown(
                self.conn, socket.SHUT_WR
            )  # the plain socket's: SSLSocket's drops TLS state
            self.conn.settimeout(0.2)
            scratch = bytearray(65536)
            deadline = time.monotonic() + seconds
            while limit > 0 and time.monotonic() < deadline:
                try:
                    n = self.conn.recv_into(scratch)
                except TimeoutError:
                    continue
                if n == 0:
                    return
                limit -= n
        except (OSError, ssl.SSLError, ValueError):
            return

    def _read(self, reader: p.FrameReader) -> p.Message | None:
        """The next frame, polling so ``stop()`` and the idle timeout are noticed between frames."""
        idle_since = time.monotonic()
        while True:
            try:
                return reader.read()
            except TimeoutError:
                # a partial frame stays buffered in the reader; the read resumes where it was
                if self.server.stopping.is_set() and not reader.pending:
                    self._refuse(p.ErrorCode.SHUTDOWN, "replication server is stopping")
                    raise _Stop() from None
                if self.superseded:
                    self._end_superseded()
                if time.monotonic() - idle_since > self.server.config.idle_timeout:
                    self._refuse(p.ErrorCode.PROTOCOL, "idle timeout")
                    raise _Stop() from None

    # -- the conversation --------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.conn.settimeout(POLL)
            reader = p.FrameReader(self.conn)
            self._hello(self.hello)
            while True:
                msg = self._read(reader)
                if msg is None:
                    log.info("%s: %s disconnected", self.peer, self._sid())
                    return
                self._dispatch(msg)
                if self.server.stopping.is_set():  # a busy stream never idles: check between frames too
                    self._refuse(p.ErrorCode.SHUTDOWN, "replication server is stopping")
                    return
        except ProtocolError as exc:
            self._refuse(p.ErrorCode.PROTOCOL, str(exc))
        except p.ServerError as exc:  # a refusal decided below: already logged by _refuse
            del exc
        except _Stop:
            pass
        except (OSError, ssl.SSLError) as exc:
            log.info("%s: connection lost: %s", self.peer, exc)
        except Exception:
            log.exception("%s: internal error", self.peer)
            self._refuse(p.ErrorCode.INTERNAL, "internal error")
        finally:
            self.pipeline.close()
            self._detach()
            if self._refused:
                self._linger()
            try:
                self.conn.close()
            except OSError:
                pass

    def _sid(self) -> str:
        return self.source.source_server_id if self.source else "-"

    def _fail(self, code: p.ErrorCode, message: str) -> NoReturn:
        self._refuse(code, message)
        raise p.ServerError(code, message)

    def _hello(self, hello: p.Hello) -> None:
        names = [d.device_name for d in hello.disks]
        try:
            source = self.server.attach(hello.source_server_id, self)
        except StagingBusy as exc:
            self._fail(p.ErrorCode.BUSY, exc.message)
        except (OSError, ReplicationError) as exc:
            self._fail(p.ErrorCode.IO, f"cannot open the staging area: {exc}")
        with source.lock:
            if self.superseded:
                self._end_superseded()
            if self.previous is not None:
                # the older session cannot start another write now (it checks `superseded` under this
                # lock), so once its write in flight is done, nothing of it can land after ours
                self.previous.pipeline.quiesce()
                self.previous = None
            try:
                resume = source.staging.attach(hello.disks)
            except (OSError, RehostError) as exc:
                self._fail(p.ErrorCode.IO, f"cannot open staging volumes: {exc}")
            self.volumes = list(source.staging.volumes)
        log.info(
            "%s: %s connected, disks %s, resume %s",
            self.peer,
            hello.source_server_id,
            names,
            [(r.durable_seq, r.is_new) for r in resume],
        )
        self._send(p.HelloOk(self.server.config.server_id, resume, encodings=p.available_encodings()))

    def _dispatch(self, msg: p.Message) -> None:
        source = self.source
        assert source is not None
        with source.lock:
            if self.superseded:
                self._end_superseded()
            if isinstance(msg, p.Write):
                self._write(source, msg)
                return
            self._drain()
            if isinstance(msg, p.Have):
                self._have(source, msg)
            elif isinstance(msg, p.Flush):
                self._commit(source, msg.seq)
                self._send(p.FlushAck(msg.seq))
            elif isinstance(msg, p.Snapshot):
                self._commit(source, msg.seq)
                try:
                    snap_id, taken_at = self.server.take_snapshot(source)
                except RehostError as exc:
                    self._fail(p.ErrorCode.SNAPSHOT, exc.message)
                self._send(p.SnapshotOk(msg.seq, msg.request_id, snap_id, int(taken_at.timestamp() * 1000)))
            elif isinstance(msg, p.Ping):
                self._send(p.Pong(msg.seq))
            else:
                raise ProtocolError(f"{msg.TYPE.name} is not accepted by a replication server")

    def _volume(self, disk: int, offset: int, length: int) -> StagingVolume:
        if not 0 <= disk < len(self.volumes):
            raise ProtocolError(f"disk index {disk} out of range")
        vol = self.volumes[disk]
        if offset < 0 or offset + length > vol.size:
            raise ProtocolError(
                f"write of {length} bytes at {offset} is beyond {vol.device_name} ({vol.size} bytes)"
            )
        return vol

    def _write(self, source: SourceState, msg: p.Write) -> None:
        vol = self._volume(msg.disk, msg.offset, msg.length)
        if msg.encoding is p.Encoding.REF:
            data = self.server.snapshots.get_chunk(bytes(msg.payload))
            if data is None:
                self._fail(
                    p.ErrorCode.MISSING_CHUNK, f"the chunk store does not hold {bytes(msg.payload).hex()}"
                )
            if len(data) < msg.length:
                raise ProtocolError("REF length exceeds the chunk's size")
            payload: p.BytesLike = memoryview(data)[: msg.length]
        elif msg.encoding is p.Encoding.ZERO:
            payload = b""
        else:
            payload = p.decompress(
                msg.encoding, msg.payload, msg.length
            )  # validated before anything is written
        try:
            source.staging.before_write()
            if msg.encoding is p.Encoding.ZERO:
                self.pipeline.submit(vol.write_zeros, msg.offset, msg.length)
            else:
                # The frame's payload lives in the reader's buffer, which the next frame overwrites: copy
                # it into the write buffer the write in flight is not using (there is at most one).
                buffer = self._buffers[self._next_buffer]
                self._next_buffer ^= 1
                self.pipeline.submit(vol.write_aligned, msg.offset, buffer.load(payload))
        except OSError as exc:
            self._fail(p.ErrorCode.IO, f"cannot write staging: {exc}")

    def _drain(self) -> None:
        try:
            self.pipeline.wait()
        except OSError as exc:
            self._fail(p.ErrorCode.IO, f"cannot write staging: {exc}")

    def _have(self, source: SourceState, msg: p.Have) -> None:
        if not 0 <= msg.disk < len(self.volumes):
            raise ProtocolError(f"disk index {msg.disk} out of range")
        vol = self.volumes[msg.disk]
        held = []
        for index, digest in msg.entries:
            offset = index * p.CHUNK_SIZE
            if offset >= vol.size:
                raise ProtocolError(f"chunk {index} is beyond {vol.device_name}")
            data = self.server.snapshots.get_chunk(digest)
            length = min(p.CHUNK_SIZE, vol.size - offset)
            if data is None or len(data) != length:
                held.append(False)
                continue
            try:
                source.staging.before_write()
                vol.write(offset, data)
            except OSError as exc:
                self._fail(p.ErrorCode.IO, f"cannot write {vol.device_name}: {exc}")
            held.append(True)
        self._send(p.HaveReply.from_flags(msg.request_id, held))

    def _commit(self, source: SourceState, seq: int) -> None:
        try:
            source.staging.commit(seq)
        except OSError as exc:
            self._fail(p.ErrorCode.IO, f"cannot make staging durable: {exc}")

    def _detach(self) -> None:
        if self.source is not None:
            self.server.detach(self.source, self)

    def _end_superseded(self) -> NoReturn:
        self._refuse(p.ErrorCode.SUPERSEDED, "a newer session of this source server took over")
        raise _Stop()

    def supersede(self) -> None:
        """Called by a newer session of the same source server (from its thread)."""
        self.superseded = True


class ReplicationServer:
    """Listens, authenticates, stages and snapshots. ``start()`` binds and returns; ``stop()`` ends it."""

    def __init__(
        self,
        config: ServerConfig,
        ssl_context: ssl.SSLContext | None,
        snapshots: SnapshotBackend | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.ssl_context = ssl_context
        self.key = load_or_create_key(config.data_dir)
        self.snapshots = snapshots if snapshots is not None else StoreBackend(config.data_dir)
        self.clock = clock
        self.stopping = threading.Event()
        self.address: tuple[str, int] = (config.host, config.port)
        self._sources: dict[str, SourceState] = {}
        self._sources_lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._live: dict[str, int] = {}  # session threads alive per source server ID
        self._live_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        try:
            listener = socket.create_server(
                (self.config.host, self.config.port), backlog=64, reuse_port=False
            )
        except OSError as exc:
            raise ReplicationError(f"cannot listen on {self.config.host}:{self.config.port}: {exc}") from exc
        self._listener = listener
        self.address = listener.getsockname()[:2]
        gate = Gate(
            listener,
            self.ssl_context,
            self.verify_hello,
            self._admit,
            self.stopping,
            max_pending=self.config.max_pending,
            handshake_timeout=self.config.handshake_timeout,
        )
        for target, name in ((gate.run, "gate"), (self._timer_loop, "snapshot-timer")):
            thread = threading.Thread(target=target, name=f"{self.config.server_id}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.address

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let sessions finish their current frame, close the staging volumes."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        with self._sources_lock:
            for source in self._sources.values():
                with source.lock:
                    source.staging.close()
            self._sources.clear()

    # -- connections -------------------------------------------------------------------------------------

    def verify_hello(self, hello: p.Hello) -> tuple[p.ErrorCode, str] | None:
        """Why ``hello`` is refused (version, token, disks, sessions alive), or None: the gate admits only what
        passes."""
        if hello.version != p.PROTOCOL_VERSION:
            return p.ErrorCode.VERSION, f"protocol version {hello.version} unsupported; use {p.PROTOCOL_VERSION}"
        if not verify_token(self.key, hello.source_server_id, hello.token):
            return p.ErrorCode.AUTH, f"invalid replication token for {hello.source_server_id!r}"
        if not 0 < len(hello.disks) <= MAX_DISKS:
            return p.ErrorCode.BAD_DISK, f"a HELLO must list 1 to {MAX_DISKS} disks"
        names = [d.device_name for d in hello.disks]
        if len(set(names)) != len(names) or any(not 0 < d.size <= MAX_DISK_SIZE for d in hello.disks):
            return p.ErrorCode.BAD_DISK, "duplicate device names or invalid disk sizes"
        with self._live_lock:
            if self._live.get(hello.source_server_id, 0) >= SESSIONS_PER_SOURCE:
                return p.ErrorCode.BUSY, "an earlier session of this source server is still ending; retry"
        return None

    def _admit(self, conn: socket.socket, peer: str, hello: p.Hello) -> None:
        """Called by the gate with a verified HELLO: the session gets its thread (and its buffers) now."""
        sid = hello.source_server_id

        def serve() -> None:
            try:
                Session(self, conn, peer, hello).run()
            finally:
                self._session_ended(sid)

        with self._live_lock:  # counted before the gate verifies another HELLO (it runs both in its thread)
            self._live[sid] = self._live.get(sid, 0) + 1
        thread = threading.Thread(target=serve, name=f"{self.config.server_id}-session", daemon=True)
        try:
            thread.start()
        except BaseException:
            self._session_ended(sid)
            raise
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _session_ended(self, source_server_id: str) -> None:
        with self._live_lock:
            left = self._live.pop(source_server_id) - 1
            if left:
                self._live[source_server_id] = left

    def attach(self, source_server_id: str, session: Session) -> SourceState:
        """Bind ``session`` to its source server, superseding an older session of the same server."""
        with self._sources_lock:
            source = self._sources.get(source_server_id)
            if source is None or source.closed:
                source = SourceState(source_server_id, SourceStaging(self.config.data_dir, source_server_id))
                self._sources[source_server_id] = source
            old, source.session = source.session, session
            source.idle_since = None
            session.source = source
            session.previous = old
        if old is not None:
            log.info("%s: new session supersedes %s", source_server_id, old.peer)
            old.supersede()
        return source

    def detach(self, source: SourceState, session: Session) -> None:
        with self._sources_lock:
            if source.session is session:
                source.session = None
                source.idle_since = time.monotonic()

    def _release_idle(self) -> None:
        """Close the staging of source servers whose agent left RELEASE_AFTER ago, so that another
        replication server can take them over (a source server moved by a change of its replication
        settings, the lock on its staging released); what was staged since the last snapshot is
        snapshotted first when periodic snapshots are on (the agent may never come back, and a launch
        then uses the newest snapshot). A new session opens the staging again."""
        now = time.monotonic()
        with self._sources_lock:
            idle = [s for s in self._sources.values()
                    if s.session is None and s.idle_since is not None and now - s.idle_since >= RELEASE_AFTER]
        for source in idle:
            with source.lock:
                if source.session is not None or source.closed:
                    continue
                if self.config.snapshot_interval > 0 and not source.staging.in_flight \
                        and source.staging.has_changes():
                    try:
                        _, taken_at = self.take_snapshot(source)
                        self._apply_retention(source, taken_at)
                    except RehostError as exc:
                        log.error("%s: snapshot before release failed: %s", source.source_server_id, exc.message)
            with self._sources_lock, source.lock:
                if source.session is not None or source.closed:
                    continue
                source.closed = True
                source.staging.close()
                if self._sources.get(source.source_server_id) is source:
                    del self._sources[source.source_server_id]
            log.info("%s: staging released (no session)", source.source_server_id)

    # -- snapshots ---------------------------------------------------------------------------------------

    def take_snapshot(self, source: SourceState) -> tuple[str, datetime]:
        """Snapshot all of ``source``'s disks as staged now. The caller holds ``source.lock``."""
        taken_at = self.clock()
        volumes = {v.device_name: (v.path, v.size, v.dirty_chunks()) for v in source.staging.volumes}
        if not volumes:
            raise p.ServerError(p.ErrorCode.SNAPSHOT, "no disks staged yet")
        try:
            snap_id = self.snapshots.create(source.source_server_id, volumes, taken_at)
        except RehostError as exc:
            raise ReplicationError(f"snapshot of {source.source_server_id} failed: {exc.message}") from exc
        source.staging.snapshot_done()
        source.last_snapshot = time.monotonic()
        log.info("%s: snapshot %s of %d disk(s)", source.source_server_id, snap_id, len(volumes))
        return snap_id, taken_at

    def _apply_retention(self, source: SourceState, now: datetime) -> None:
        # Only after periodic snapshots: the store's policy keeps one snapshot per 10 minutes, so applying
        # it right after an agent-requested snapshot would delete the one taken a minute earlier that a
        # launch job may be converting.
        try:
            deleted = self.snapshots.apply_retention(source.source_server_id, now)
        except RehostError as exc:  # retention failing must not fail snapshots
            log.warning("%s: retention failed: %s", source.source_server_id, exc.message)
            return
        if deleted:
            log.info("%s: retention deleted %s", source.source_server_id, ", ".join(deleted))

    def _timer_loop(self) -> None:
        interval = self.config.snapshot_interval  # 0: no periodic snapshots, idle sources still released
        tick = min(RELEASE_AFTER, max(0.2, interval / 4)) if interval > 0 else RELEASE_AFTER
        while not self.stopping.wait(tick):
            self._release_idle()
            if interval <= 0:
                continue
            with self._sources_lock:
                sources = list(self._sources.values())
            for source in sources:
                if time.monotonic() - source.last_snapshot < interval:
                    continue
                with source.lock:
                    if source.closed:
                        continue
                    # only at a FLUSH boundary: staged data between two FLUSHes may be half a write
                    if source.staging.in_flight or not source.staging.has_changes():
                        continue
                    try:
                        _, taken_at = self.take_snapshot(source)
                        self._apply_retention(source, taken_at)
                    except RehostError as exc:
                        log.error("%s: periodic snapshot failed: %s", source.source_server_id, exc.message)
                        source.last_snapshot = time.monotonic()  # retry after another interval
