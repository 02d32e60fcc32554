"""Port 1500 until a connection's HELLO is verified: one thread and one selector for all such connections.

The gate accepts connections, runs their TLS handshakes and reads their first frame without blocking, and
hands a connection to ``admit`` (which starts its session thread and only then allocates the session's
buffers) once ``verify`` accepted its HELLO. What holds before that:

* The first frame must be a HELLO of at most ``MAX_HELLO`` bytes. Any other type, a longer announced length
  or a bad header is refused as soon as the 12-byte header is in, before anything it announces is read or
  allocated; so is a payload that does not decode and a HELLO ``verify`` rejects (wrong version, token or
  disks). A refusal is ERROR(code), then the connection is closed after discarding for ``LINGER`` seconds
  (at most ``LINGER_LIMIT`` bytes) what the peer still sends, so that the ERROR is not destroyed by a reset.
* The TLS handshake and the HELLO must both arrive within ``handshake_timeout`` of the accept: a silent or
  slow client is closed then.
* At most ``max_pending`` connections are in the gate (lingering ones included). Another one arriving
  closes the oldest of the address that holds the most of them: a flood of idle or garbage connections
  closes its own first, and from anywhere it delays a legitimate agent by its own handshake only, instead
  of locking it out until the flood's timeouts expire.
* Every connection that ends in the gate logs one line (why), at most ``LOG_RATE`` a second: beyond that a
  flood is summed up in one line a second instead of filling the log. Nothing is stored for it.

Memory: a connection in the gate holds its socket and TLS state (CPython's socket objects, OpenSSL's SSL
object and record buffers), a 12-byte header and at most one ``MAX_HELLO``-byte payload buffer, no thread:
measured in the server process, 10 KiB for a silent TCP connection, 15 KiB once TLS-handshaken, 80 KiB with
a 64 KiB HELLO half received. Bound: ``max_pending`` × 128 KiB = 8 MiB with the default 64, whatever the
number of clients (tests/replication/test_port_hardening.py: 400 such connections add under 24 MiB of RSS;
before the gate each idle connection cost 8 MiB). The kernel's socket buffers and its listen backlog are
not in the process.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable

from rehost.errors import ProtocolError
from rehost.replication import protocol as p

log = logging.getLogger(__name__)

MAX_HELLO = 65536  # a HELLO naming 64 disks with 255-byte device names is 17 KiB
LINGER = 2.0  # seconds a refused connection is read (and discarded) before it is closed
LINGER_LIMIT = 1 << 20  # bytes
POLL = 0.5  # seconds between checks of the stop flag
LOG_RATE = 20  # lines a second about connections refused or closed; the rest are counted

Verify = Callable[[p.Hello], "tuple[p.ErrorCode, str] | None"]
Admit = Callable[[socket.socket, str, p.Hello], None]


class _Conn:
    """One connection in the gate."""

    __slots__ = ("sock", "host", "peer", "deadline", "stage", "buf", "got", "left", "events")

    def __init__(self, sock: socket.socket, host: str, peer: str, deadline: float, stage: str) -> None:
        self.sock = sock
        self.host = host
        self.peer = peer
        self.deadline = deadline
        self.stage = stage  # "handshake", "header", "body", "linger"
        self.buf = bytearray(p.HEADER_SIZE)
        self.got = 0
        self.left = LINGER_LIMIT
        self.events = selectors.EVENT_READ


class Gate:
    """Runs in its own thread (``run``) until ``stopping`` is set; then closes what it holds."""

    def __init__(
        self,
        listener: socket.socket,
        ssl_context: ssl.SSLContext | None,
        verify: Verify,
        admit: Admit,
        stopping: threading.Event,
        *,
        max_pending: int = 64,
        handshake_timeout: float = 10.0,
    ) -> None:
        self._listener = listener
        self._ssl_context = ssl_context
        self._verify = verify
        self._admit = admit
        self._stopping = stopping
        self.max_pending = max_pending
        self.handshake_timeout = handshake_timeout
        self._selector = selectors.DefaultSelector()
        self._pending: dict[_Conn, None] = {}  # oldest first
        self._scratch = bytearray(65536)  # where lingering connections' bytes are discarded
        self._paused_until = 0.0  # accepting paused (after accept failed, e.g. out of descriptors)
        self._log_window = 0.0  # when the current second of log lines began
        self._logged = 0  # lines in it
        self._unlogged = 0  # connections closed without a line of their own since the last summary

    def run(self) -> None:
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if self._paused_until and now >= self._paused_until:
                    self._paused_until = 0.0
                    self._selector.register(self._listener, selectors.EVENT_READ)
                timeout = min([POLL] + [c.deadline - now for c in self._pending])
                for key, _ in self._selector.select(max(0.0, timeout)):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.data in self._pending:  # not closed by an earlier event of this round
                        self._step(key.data)
                self._expire(time.monotonic())
                self._log(None)
        finally:
            for conn in list(self._pending):
                self._close(conn)
            self._selector.close()

    # -- accepting ---------------------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(self.max_pending):  # a bounded batch, then the other connections get their turn
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # reset by the peer while in the backlog
                continue
            except OSError as exc:  # out of descriptors or buffers: give one back, pause accepting
                log.error("accept failed: %s", exc)
                if self._pending:
                    self._drop(next(iter(self._pending)), "closed: accept failed")
                self._selector.unregister(self._listener)
                self._paused_until = time.monotonic() + POLL
                return
            peer = f"{addr[0]}:{addr[1]}"
            if len(self._pending) >= self.max_pending:
                self._drop(self._victim(), f"closed: {self.max_pending} connections are not authenticated "
                           "yet, the oldest of the address holding the most goes")
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                if self._ssl_context is not None:
                    sock = self._ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError as exc:
                self._log("%s: closed: %s", peer, exc)
                sock.close()
                continue
            stage = "handshake" if self._ssl_context is not None else "header"
            conn = _Conn(sock, addr[0], peer, time.monotonic() + self.handshake_timeout, stage)
            self._pending[conn] = None
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _victim(self) -> _Conn:
        counts = Counter(c.host for c in self._pending)  # in order of first appearance: ties go to the oldest
        host = max(counts, key=counts.__getitem__)
        return next(c for c in self._pending if c.host == host)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._pending if c.deadline <= now]:
            if conn.stage == "linger":
                self._close(conn)
            else:
                self._drop(conn, f"closed: no TLS handshake and HELLO within {self.handshake_timeout:g} s")

    # -- one connection ----------------------------------------------------------------------------------

    def _step(self, conn: _Conn) -> None:
        try:
            if conn.stage == "linger":
                self._discard(conn)
                return
            if conn.stage == "handshake":
                assert isinstance(conn.sock, ssl.SSLSocket)
                try:
                    conn.sock.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    raise
                except OSError as exc:
                    self._drop(conn, f"TLS handshake failed: {exc}")
                    return
                conn.stage = "header"
            self._receive(conn)
        except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            self._want(conn, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
        except ProtocolError as exc:
            self._refuse(conn, p.ErrorCode.PROTOCOL, str(exc))
        except OSError as exc:
            if conn.stage == "linger":
                self._close(conn)
            else:
                self._drop(conn, f"connection lost: {exc}")
        except Exception:  # a bug must cost this connection, not the gate (and with it every agent)
            log.exception("%s: internal error", conn.peer)
            self._close(conn)

    def _receive(self, conn: _Conn) -> None:
        """Read the first frame as far as it has arrived; refuse, or admit it once complete."""
        while True:
            if conn.got < len(conn.buf):
                n = conn.sock.recv_into(memoryview(conn.buf)[conn.got :], len(conn.buf) - conn.got)
                if n == 0:
                    self._drop(conn, "closed by the peer before authenticating")
                    return
                conn.got += n
                continue
            if conn.stage == "header":
                msg_type, length = p.decode_header(conn.buf)
                if msg_type is not p.MessageType.HELLO:
                    raise ProtocolError(f"expected HELLO, got {msg_type.name}")
                if length > MAX_HELLO:
                    raise ProtocolError(f"a HELLO of {length} bytes exceeds {MAX_HELLO}")
                conn.stage, conn.buf, conn.got = "body", bytearray(length), 0
                continue
            hello = p.decode_payload(p.MessageType.HELLO, memoryview(conn.buf))
            assert isinstance(hello, p.Hello)
            refusal = self._verify(hello)
            if refusal is not None:
                self._refuse(conn, *refusal)
                return
            self._forget(conn)
            self._admit(conn.sock, conn.peer, hello)
            return

    def _want(self, conn: _Conn, events: int) -> None:
        if conn.events != events:
            conn.events = events
            self._selector.modify(conn.sock, events, conn)

    def _refuse(self, conn: _Conn, code: p.ErrorCode, message: str) -> None:
        """Log, send ERROR (best effort: a fresh connection's send buffer has room), then linger."""
        self._log("%s: %s: %s", conn.peer, code.name, message)
        try:
            conn.sock.send(p.encode(p.Error(code, message)))
            socket.socket.shutdown(conn.sock, socket.SHUT_WR)  # the plain socket's: SSLSocket's drops TLS
        except OSError:
            self._close(conn)
            return
        conn.stage, conn.buf, conn.deadline = "linger", bytearray(), time.monotonic() + LINGER
        self._want(conn, selectors.EVENT_READ)

    def _discard(self, conn: _Conn) -> None:
        while True:
            n = socket.socket.recv_into(conn.sock, self._scratch)  # the raw bytes: nothing is decrypted
            conn.left -= n
            if n == 0 or conn.left <= 0:
                self._close(conn)
                return

    def _drop(self, conn: _Conn, reason: str) -> None:
        self._log("%s: %s", conn.peer, reason)
        self._close(conn)

    def _log(self, fmt: str | None, *args: object) -> None:
        """A warning about one connection, unless LOG_RATE lines were logged this second; ``fmt`` None only
        sums up the connections not logged once their second is over."""
        now = time.monotonic()
        if now - self._log_window >= 1.0:
            if self._unlogged:
                log.warning("%d more connections closed before authenticating (over %d a second: not logged "
                            "one by one)", self._unlogged, LOG_RATE)
            self._log_window, self._logged, self._unlogged = now, 0, 0
        if fmt is None:
            return
        if self._logged < LOG_RATE:
            self._logged += 1
            log.warning(fmt, *args)
        else:
            self._unlogged += 1

    def _forget(self, conn: _Conn) -> None:
        self._pending.pop(conn, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def _close(self, conn: _Conn) -> None:
        self._forget(conn)
        try:
            conn.sock.close()
        except OSError:
            pass
