"""The replication wire protocol (TCP, TLS 1.3) and a small blocking client.

Standard library only and Python 3.8 syntax: the agent carries this module. zstandard and lz4 are used
when importable; zlib always works.

Framing: every message is one frame, a fixed 12-byte header followed by ``length`` payload bytes::

    magic b"RHRP" | type u8 | flags u8 (0) | reserved u16 (0) | length u32      (network byte order)

``length`` is at most ``MAX_PAYLOAD``; a peer announcing more, an unknown type, non-zero flags or reserved
bits, or a payload that does not decode exactly is a protocol error: the receiver closes the connection
and applies nothing of that frame.

Conversation (the agent speaks first; one session per connection)::

    HELLO(version, source_server_id, token, disks)  -> HELLO_OK(resume info per disk) | ERROR
    WRITE(disk, offset, length, encoding, payload)     (no reply)
    HAVE(request_id, disk, [(chunk_index, digest)])  -> HAVE_REPLY(request_id, bitmap)
    FLUSH(seq)                                        -> FLUSH_ACK(seq), only once everything before is durable
    SNAPSHOT(seq, request_id)                         -> SNAPSHOT_OK(seq, request_id, snapshot_id, taken_at)
    PING(nonce)                                       -> PONG(nonce)
    ERROR(code, message)                                 either way; the sender then closes

Replies come in request order. ``seq`` numbers are chosen by the agent, strictly increasing across
sessions: HELLO_OK reports per disk the last ``seq`` the server holds durably, and the agent resends
whatever it wrote after that. A SNAPSHOT is also a FLUSH.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import socket
import ssl
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from rehost.errors import ProtocolError, ReplicationError

try:  # optional codecs: the server always has them, an agent may not
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the host
    _zstd = None  # type: ignore[assignment]
try:
    import lz4.block as _lz4
except ImportError:  # pragma: no cover - depends on the host
    _lz4 = None  # type: ignore[assignment]

PROTOCOL_VERSION = 1
MAGIC = b"RHRP"
HEADER = struct.Struct("!4sBBHI")
HEADER_SIZE = HEADER.size  # 12
CHUNK_SIZE = 65536  # == rehost.chunkstore.CHUNK_SIZE (repeated: the agent cannot import chunkstore)
MAX_DATA = 4 * 1024 * 1024  # largest uncompressed WRITE
MAX_PAYLOAD = MAX_DATA + 4096  # room for a WRITE's fixed fields; HAVE lists are bounded by it too
DIGEST_SIZE = 32  # sha256
DEFAULT_PORT = 1500

BytesLike = Union[bytes, bytearray, memoryview]  # noqa: UP007 - evaluated at run time on Python 3.8


class MessageType(enum.IntEnum):
    HELLO = 1
    HELLO_OK = 2
    WRITE = 3
    HAVE = 4
    HAVE_REPLY = 5
    FLUSH = 6
    FLUSH_ACK = 7
    SNAPSHOT = 8
    SNAPSHOT_OK = 9
    PING = 10
    PONG = 11
    ERROR = 12


class Encoding(enum.IntEnum):
    """How a WRITE's payload carries its ``length`` bytes."""

    RAW = 0  # the bytes themselves
    ZERO = 1  # all zero; empty payload
    REF = 2  # payload = sha256 of a chunk the server's chunk store holds (length <= CHUNK_SIZE)
    ZLIB = 3
    ZSTD = 4
    LZ4 = 5  # lz4 block format, no size prefix


class ErrorCode(enum.IntEnum):
    PROTOCOL = 1  # malformed or unexpected frame
    VERSION = 2  # unsupported protocol version
    AUTH = 3  # bad token
    BAD_DISK = 4  # disk index, offset or size out of range
    MISSING_CHUNK = 5  # REF to a chunk the store does not hold
    IO = 6  # the server could not write or sync its staging volume
    SNAPSHOT = 7  # the snapshot could not be taken
    SUPERSEDED = 8  # a newer session for the same source server took over
    SHUTDOWN = 9  # the server is stopping
    INTERNAL = 10
    BUSY = 11  # another replication server holds this source server's staging volumes


class ServerError(ReplicationError):
    """The peer sent ERROR(code, message)."""

    def __init__(self, code: int, message: str) -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"replication server error {name}: {message}")
        self.code = code
        self.remote_message = message


# ---------------------------------------------------------------------------------------------------------
# Field codecs


class _Reader:
    """Reads fields from a payload; any short read or trailing byte is a ProtocolError."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: BytesLike) -> None:
        self.buf = memoryview(buf)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise ProtocolError("truncated message")
        view = self.buf[self.pos : end]
        self.pos = end
        return view

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        return st.unpack(self.take(st.size))

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def text(self) -> str:
        raw = self.take(self.u16())
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("invalid UTF-8 in a string field") from exc

    def rest(self) -> memoryview:
        return self.take(len(self.buf) - self.pos)

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolError(f"{len(self.buf) - self.pos} unexpected trailing bytes")


_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ProtocolError("string field longer than 65535 bytes")
    return _U16.pack(len(raw)) + raw


# ---------------------------------------------------------------------------------------------------------
# Messages


class Message:
    """Base of all messages: ``encode_body()`` and ``decode_body(payload)`` are exact inverses."""

    TYPE: ClassVar[MessageType]

    def encode_body(self) -> BytesLike:
        raise NotImplementedError

    @classmethod
    def decode_body(cls, payload: memoryview) -> Message:
        raise NotImplementedError


@dataclass(frozen=True)
class DiskInfo:
    device_name: str
    size: int


@dataclass(frozen=True)
class Hello(Message):
    source_server_id: str
    token: str
    disks: Sequence[DiskInfo]
    version: int = PROTOCOL_VERSION
    TYPE: ClassVar[MessageType] = MessageType.HELLO

    def encode_body(self) -> bytes:
        parts = [_U16.pack(self.version), _text(self.source_server_id), _text(self.token)]
        parts.append(_U16.pack(len(self.disks)))
        for disk in self.disks:
            parts.append(_text(disk.device_name))
            parts.append(_U64.pack(disk.size))
        return b"".join(parts)

    @classmethod
    def decode_body(cls, payload: memoryview) -> Hello:
        r = _Reader(payload)
        version = r.u16()
        sid = r.text()
        token = r.text()
        disks = [DiskInfo(r.text(), r.u64()) for _ in range(r.u16())]
        r.end()
        return cls(sid, token, disks, version)


DISK_NEW = 1  # DiskResume.flags: the staging volume was (re)created empty; the agent must send everything


@dataclass(frozen=True)
class DiskResume:
    """What the server durably holds of one disk: everything the agent sent up to FLUSH/SNAPSHOT ``durable_seq``."""

    durable_seq: int
    flags: int = 0

    @property
    def is_new(self) -> bool:
        return bool(self.flags & DISK_NEW)


_RESUME = struct.Struct("!QB")


@dataclass(frozen=True)
class HelloOk(Message):
    server_id: str
    disks: Sequence[DiskResume]  # in HELLO's order
    chunk_size: int = CHUNK_SIZE
    max_data: int = MAX_DATA
    encodings: int = 0  # bit (1 << Encoding) set for each encoding the server decodes
    TYPE: ClassVar[MessageType] = MessageType.HELLO_OK

    def encode_body(self) -> bytes:
        parts = [_text(self.server_id), struct.pack("!III", self.chunk_size, self.max_data, self.encodings)]
        parts.append(_U16.pack(len(self.disks)))
        parts.extend(_RESUME.pack(d.durable_seq, d.flags) for d in self.disks)
        return b"".join(parts)

    @classmethod
    def decode_body(cls, payload: memoryview) -> HelloOk:
        r = _Reader(payload)
        server_id = r.text()
        chunk_size, max_data, encodings = r.unpack(struct.Struct("!III"))
        disks = [DiskResume(*r.unpack(_RESUME)) for _ in range(r.u16())]
        r.end()
        return cls(server_id, disks, chunk_size, max_data, encodings)

    def supports(self, encoding: Encoding) -> bool:
        return bool(self.encodings & (1 << int(encoding)))


_WRITE = struct.Struct("!HBQI")  # disk, encoding, offset, length


@dataclass(frozen=True)
class Write(Message):
    """``length`` bytes at ``offset`` of disk ``disk``. A decoded ``payload`` is a view into the receiver's
    buffer, valid only until its next read."""

    disk: int
    offset: int
    length: int
    encoding: Encoding
    payload: BytesLike = b""
    TYPE: ClassVar[MessageType] = MessageType.WRITE

    def encode_body(self) -> bytes:
        return _WRITE.pack(self.disk, int(self.encoding), self.offset, self.length) + bytes(self.payload)

    def encode_parts(self) -> tuple[bytes, BytesLike]:
        """Fixed fields and payload, so a sender can avoid copying large payloads."""
        return _WRITE.pack(self.disk, int(self.encoding), self.offset, self.length), self.payload

    @classmethod
    def decode_body(cls, payload: memoryview) -> Write:
        r = _Reader(payload)
        disk, enc, offset, length = r.unpack(_WRITE)
        try:
            encoding = Encoding(enc)
        except ValueError as exc:
            raise ProtocolError(f"unknown encoding {enc}") from exc
        data = r.rest()
        if length > MAX_DATA:
            raise ProtocolError(f"WRITE of {length} bytes exceeds {MAX_DATA}")
        if encoding is Encoding.RAW and len(data) != length:
            raise ProtocolError("RAW payload size differs from length")
        if encoding is Encoding.ZERO and len(data) != 0:
            raise ProtocolError("ZERO write carries a payload")
        if encoding is Encoding.REF and (len(data) != DIGEST_SIZE or length > CHUNK_SIZE):
            raise ProtocolError("REF write needs a 32-byte digest and length <= CHUNK_SIZE")
        return cls(disk, offset, length, encoding, data)


_HAVE_ENTRY = struct.Struct("!Q32s")


@dataclass(frozen=True)
class Have(Message):
    """Asks which chunks (``CHUNK_SIZE``-aligned, by index, with their sha256) the store already holds;
    the server copies those it holds into the staging volume itself."""

    request_id: int
    disk: int
    entries: Sequence[tuple[int, bytes]]  # (chunk_index, digest)
    TYPE: ClassVar[MessageType] = MessageType.HAVE

    def encode_body(self) -> bytes:
        parts = [struct.pack("!IHI", self.request_id, self.disk, len(self.entries))]
        parts.extend(_HAVE_ENTRY.pack(index, bytes(digest)) for index, digest in self.entries)
        return b"".join(parts)

    @classmethod
    def decode_body(cls, payload: memoryview) -> Have:
        r = _Reader(payload)
        request_id, disk, count = r.unpack(struct.Struct("!IHI"))
        if count * _HAVE_ENTRY.size != len(payload) - r.pos:
            raise ProtocolError("HAVE entry count does not match its size")
        entries = [(int(i), bytes(d)) for i, d in _HAVE_ENTRY.iter_unpack(r.rest())]
        return cls(request_id, disk, entries)


@dataclass(frozen=True)
class HaveReply(Message):
    """``bitmap`` bit i (byte i // 8, bit i % 8, least significant first) is set when the store held entry i
    of the HAVE and the server has filled it into staging."""

    request_id: int
    count: int
    bitmap: bytes
    TYPE: ClassVar[MessageType] = MessageType.HAVE_REPLY

    @classmethod
    def from_flags(cls, request_id: int, flags: Sequence[bool]) -> HaveReply:
        bitmap = bytearray((len(flags) + 7) // 8)
        for i, held in enumerate(flags):
            if held:
                bitmap[i >> 3] |= 1 << (i & 7)
        return cls(request_id, len(flags), bytes(bitmap))

    def flags(self) -> list[bool]:
        return [bool(self.bitmap[i >> 3] & (1 << (i & 7))) for i in range(self.count)]

    def encode_body(self) -> bytes:
        return struct.pack("!II", self.request_id, self.count) + self.bitmap

    @classmethod
    def decode_body(cls, payload: memoryview) -> HaveReply:
        r = _Reader(payload)
        request_id, count = r.unpack(struct.Struct("!II"))
        bitmap = bytes(r.take((count + 7) // 8))
        r.end()
        return cls(request_id, count, bitmap)


class _SeqMessage(Message):
    seq: int

    def encode_body(self) -> bytes:
        return _U64.pack(self.seq)

    @classmethod
    def decode_body(cls, payload: memoryview) -> Message:
        r = _Reader(payload)
        seq = r.u64()
        r.end()
        return cls(seq)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Flush(_SeqMessage):
    seq: int
    TYPE: ClassVar[MessageType] = MessageType.FLUSH


@dataclass(frozen=True)
class FlushAck(_SeqMessage):
    seq: int
    TYPE: ClassVar[MessageType] = MessageType.FLUSH_ACK


@dataclass(frozen=True)
class Ping(_SeqMessage):
    seq: int  # a nonce echoed by PONG
    TYPE: ClassVar[MessageType] = MessageType.PING


@dataclass(frozen=True)
class Pong(_SeqMessage):
    seq: int
    TYPE: ClassVar[MessageType] = MessageType.PONG


@dataclass(frozen=True)
class Snapshot(Message):
    seq: int
    request_id: str  # e.g. the control plane's command ID, echoed back
    TYPE: ClassVar[MessageType] = MessageType.SNAPSHOT

    def encode_body(self) -> bytes:
        return _U64.pack(self.seq) + _text(self.request_id)

    @classmethod
    def decode_body(cls, payload: memoryview) -> Snapshot:
        r = _Reader(payload)
        seq, request_id = r.u64(), r.text()
        r.end()
        return cls(seq, request_id)


@dataclass(frozen=True)
class SnapshotOk(Message):
    seq: int
    request_id: str
    snapshot_id: str
    taken_at_ms: int  # UTC, milliseconds since the epoch
    TYPE: ClassVar[MessageType] = MessageType.SNAPSHOT_OK

    def encode_body(self) -> bytes:
        return (
            _U64.pack(self.seq)
            + _text(self.request_id)
            + _text(self.snapshot_id)
            + _U64.pack(self.taken_at_ms)
        )

    @classmethod
    def decode_body(cls, payload: memoryview) -> SnapshotOk:
        r = _Reader(payload)
        result = cls(r.u64(), r.text(), r.text(), r.u64())
        r.end()
        return result


@dataclass(frozen=True)
class Error(Message):
    code: int
    message: str
    TYPE: ClassVar[MessageType] = MessageType.ERROR

    def encode_body(self) -> bytes:
        return _U16.pack(self.code) + _text(self.message[:4000])

    @classmethod
    def decode_body(cls, payload: memoryview) -> Error:
        r = _Reader(payload)
        result = cls(r.u16(), r.text())
        r.end()
        return result


MESSAGES: dict[MessageType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        HelloOk,
        Write,
        Have,
        HaveReply,
        Flush,
        FlushAck,
        Snapshot,
        SnapshotOk,
        Ping,
        Pong,
        Error,
    )
}


# ---------------------------------------------------------------------------------------------------------
# Frames


def encode_header(msg_type: int, length: int) -> bytes:
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"message of {length} bytes exceeds the {MAX_PAYLOAD}-byte frame limit")
    return HEADER.pack(MAGIC, msg_type, 0, 0, length)


def encode(msg: Message) -> bytes:
    """The whole frame (header and payload) of ``msg``."""
    body = msg.encode_body()
    return encode_header(msg.TYPE, len(body)) + bytes(body)


def decode_header(header: BytesLike) -> tuple[MessageType, int]:
    """(type, payload length) of a 12-byte header; ProtocolError if it is not a valid header."""
    magic, msg_type, flags, reserved, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError("bad frame magic")
    if flags or reserved:
        raise ProtocolError("unsupported frame flags")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    try:
        return MessageType(msg_type), length
    except ValueError as exc:
        raise ProtocolError(f"unknown message type {msg_type}") from exc


def decode(frame: BytesLike) -> Message:
    """Decode one complete frame (inverse of ``encode``)."""
    view = memoryview(frame)
    if len(view) < HEADER_SIZE:
        raise ProtocolError("truncated frame header")
    msg_type, length = decode_header(view[:HEADER_SIZE])
    if len(view) != HEADER_SIZE + length:
        raise ProtocolError("frame length does not match its header")
    return decode_payload(msg_type, view[HEADER_SIZE:])


def decode_payload(msg_type: MessageType, payload: memoryview) -> Message:
    try:
        return MESSAGES[msg_type].decode_body(payload)
    except (struct.error, ValueError) as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(f"malformed {msg_type.name}: {exc}") from exc


class FrameReader:
    """Reads frames from a (TLS) socket into one preallocated buffer with ``recv_into``.

    The reader owns its buffer: the payload views in messages it returns (``Write.payload``) stay valid only
    until the next ``read()``. ``read()`` returns None on a clean end of stream between frames and raises
    ProtocolError for a bad header, an oversized length, a stream that ends inside a frame, or a payload that
    does not decode.
    """

    def __init__(self, sock: socket.socket, max_payload: int = MAX_PAYLOAD) -> None:
        self._sock = sock
        self._max_payload = max_payload
        self._buf = bytearray(2 * (HEADER_SIZE + max_payload))
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available from ``_start``; False on end of stream."""
        while self._end - self._start < need:
            if self._start + need > len(self._buf):  # compact: move the partial frame to the front
                pending = self._end - self._start
                self._view[:pending] = self._view[self._start : self._end]
                self._start, self._end = 0, pending
            n = self._sock.recv_into(self._view[self._end :])
            if n == 0:
                return False
            self._end += n
        return True

    @property
    def pending(self) -> bool:
        """Whether part of a frame has been received and not yet returned."""
        return self._end != self._start

    def read(self) -> Message | None:
        if not self._fill(HEADER_SIZE):
            if self._end != self._start:
                raise ProtocolError("connection closed inside a frame header")
            return None
        msg_type, length = decode_header(self._view[self._start : self._start + HEADER_SIZE])
        if length > self._max_payload:
            raise ProtocolError(
                f"frame of {length} bytes exceeds this reader's {self._max_payload}-byte limit"
            )
        if not self._fill(HEADER_SIZE + length):
            raise ProtocolError("connection closed inside a frame")
        begin = self._start + HEADER_SIZE
        self._start = begin + length
        if self._start == self._end:
            self._start = self._end = 0
        return decode_payload(msg_type, self._view[begin : begin + length])


def send(sock: socket.socket, msg: Message) -> None:
    """Send one frame; a large WRITE payload goes out without being copied into the frame."""
    if isinstance(msg, Write):
        fixed, payload = msg.encode_parts()
        size = len(fixed) + len(payload)
        if len(payload) > 262144:
            sock.sendall(encode_header(msg.TYPE, size) + fixed)
            sock.sendall(payload)
            return
        sock.sendall(b"".join((encode_header(msg.TYPE, size), fixed, payload)))
        return
    sock.sendall(encode(msg))


# ---------------------------------------------------------------------------------------------------------
# Block encodings


def available_encodings() -> int:
    """Bitmask of the encodings this process can decode (and encode)."""
    mask = (1 << Encoding.RAW) | (1 << Encoding.ZERO) | (1 << Encoding.REF) | (1 << Encoding.ZLIB)
    if _zstd is not None:
        mask |= 1 << Encoding.ZSTD
    if _lz4 is not None:
        mask |= 1 << Encoding.LZ4
    return mask


@functools.lru_cache(maxsize=8)
def zeros(length: int) -> bytes:
    """A cached all-zero bytes object; ``data == zeros(len(data))`` is the fast zero test (bytes, not views)."""
    return bytes(length)


def is_zero(data: BytesLike) -> bool:
    if isinstance(data, memoryview):
        data = data.tobytes()  # comparing views is slow; a copy plus memcmp is fast
    return data == zeros(len(data))


def compress(encoding: Encoding, data: BytesLike) -> bytes:
    if encoding is Encoding.ZLIB:
        return zlib.compress(data, 1)
    if encoding is Encoding.ZSTD and _zstd is not None:
        return _zstd.ZstdCompressor(level=1).compress(data)  # type: ignore[no-any-return]
    if encoding is Encoding.LZ4 and _lz4 is not None:
        return _lz4.compress(data, store_size=False)  # type: ignore[no-any-return]
    raise ProtocolError(f"cannot compress with {encoding.name} here")


def decompress(encoding: Encoding, payload: BytesLike, length: int) -> BytesLike:
    """The ``length`` raw bytes a RAW/ZERO/ZLIB/ZSTD/LZ4 payload stands for; ProtocolError if the payload does
    not decode to exactly ``length`` bytes. RAW returns ``payload`` itself (no copy)."""
    try:
        if encoding is Encoding.RAW:
            out: BytesLike = payload
        elif encoding is Encoding.ZERO:
            out = zeros(length) if length <= CHUNK_SIZE else bytes(length)
        elif encoding is Encoding.ZLIB:
            d = zlib.decompressobj()
            out = d.decompress(payload, length)
            if d.unconsumed_tail or not d.eof:
                raise ProtocolError("ZLIB payload is larger than its length")
        elif encoding is Encoding.ZSTD and _zstd is not None:
            out = _zstd.ZstdDecompressor().decompress(payload, max_output_size=length)
        elif encoding is Encoding.LZ4 and _lz4 is not None:
            out = _lz4.decompress(payload, uncompressed_size=length)
        else:
            raise ProtocolError(f"unsupported encoding {encoding.name}")
    except ProtocolError:
        raise
    except Exception as exc:  # each codec raises its own error type for corrupt input
        raise ProtocolError(f"corrupt {encoding.name} payload: {exc}") from exc
    if len(out) != length:
        raise ProtocolError(f"{encoding.name} payload decodes to {len(out)} bytes, not {length}")
    return out


def encode_block(data: BytesLike, preferred: Encoding = Encoding.RAW) -> tuple[Encoding, BytesLike]:
    """Pick the cheapest encoding for a block: ZERO for all-zero data, else ``preferred`` compression when it
    actually shrinks the data, else RAW."""
    if is_zero(data):
        return Encoding.ZERO, b""
    if preferred in (Encoding.ZLIB, Encoding.ZSTD, Encoding.LZ4):
        packed = compress(preferred, data)
        if len(packed) < len(data):
            return preferred, packed
    return Encoding.RAW, data


def chunk_digest(data: BytesLike) -> bytes:
    """The chunk ID used by the chunk store and HAVE: sha256 of the raw bytes."""
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------------------------------------
# Client


def client_context(ca_pem: str | None) -> ssl.SSLContext:
    """A TLS 1.3 client context trusting ``ca_pem`` (the replication CA), or the system roots if None."""
    ctx = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


@dataclass
class ReplicationClient:
    """A blocking agent-side session. Not thread-safe: one thread drives one client.

    ``connect`` opens the TLS connection, ``hello`` authenticates and returns the resume info. WRITEs are
    pipelined (no reply); ``flush``/``have``/``snapshot``/``ping`` wait for their reply. Every method raises
    ``ServerError`` when the server answered ERROR (``.code`` is an ``ErrorCode``), ``ProtocolError`` for
    a malformed reply and ``ReplicationError`` for a lost connection; after any of them the client is closed.
    """

    host: str
    port: int = DEFAULT_PORT
    ca_pem: str | None = None
    server_hostname: str | None = None
    timeout: float = 120.0
    use_tls: bool = True
    hello_ok: HelloOk | None = field(default=None, init=False)
    _sock: socket.socket | None = field(default=None, init=False, repr=False)
    _reader: FrameReader | None = field(default=None, init=False, repr=False)
    _next_request: int = field(default=1, init=False, repr=False)

    def connect(self) -> ReplicationClient:
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.use_tls:
                ctx = client_context(self.ca_pem)
                sock: socket.socket = ctx.wrap_socket(raw, server_hostname=self.server_hostname or self.host)
            else:
                sock = raw
        except (OSError, ssl.SSLError) as exc:
            raise ReplicationError(
                f"cannot connect to replication server {self.host}:{self.port}: {exc}"
            ) from exc
        self._sock = sock
        # replies are small (a HAVE_REPLY bitmap at most): no need for a 4 MiB buffer on the agent side
        self._reader = FrameReader(sock, max_payload=256 * 1024)
        return self

    def __enter__(self) -> ReplicationClient:
        return self if self._sock is not None else self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._reader = None

    # -- sending and receiving ---------------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        if self._sock is None:
            raise ReplicationError("replication client is not connected")
        try:
            send(self._sock, msg)
        except (OSError, ssl.SSLError) as exc:
            err = self._pending_error()
            self.close()
            if err is not None:
                raise err from exc
            raise ReplicationError(f"replication connection lost: {exc}") from exc

    def _pending_error(self) -> ServerError | None:
        """After a failed send, the server may have said why before closing."""
        try:
            if self._sock is not None and self._reader is not None:
                self._sock.settimeout(2.0)
                msg = self._reader.read()
                if isinstance(msg, Error):
                    return ServerError(msg.code, msg.message)
        except Exception:  # best effort only
            return None
        return None

    def receive(self, expected: type[Message]) -> Message:
        if self._reader is None:
            raise ReplicationError("replication client is not connected")
        try:
            msg = self._reader.read()
        except ProtocolError:
            self.close()
            raise
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise ReplicationError(f"replication connection lost: {exc}") from exc
        if msg is None:
            self.close()
            raise ReplicationError("replication server closed the connection")
        if isinstance(msg, Error):
            self.close()
            raise ServerError(msg.code, msg.message)
        if not isinstance(msg, expected):
            self.close()
            raise ProtocolError(f"expected {expected.TYPE.name}, got {msg.TYPE.name}")
        return msg

    # -- the conversation --------------------------------------------------------------------------------

    def hello(self, source_server_id: str, token: str, disks: Sequence[DiskInfo]) -> HelloOk:
        self.send(Hello(source_server_id, token, list(disks)))
        reply = self.receive(HelloOk)
        assert isinstance(reply, HelloOk)
        self.hello_ok = reply
        return reply

    def write(self, disk: int, offset: int, data: BytesLike, preferred: Encoding = Encoding.RAW) -> Encoding:
        """Send ``data`` for ``offset`` of disk ``disk`` (at most MAX_DATA bytes); returns the encoding used."""
        if (
            preferred is not Encoding.RAW
            and self.hello_ok is not None
            and not self.hello_ok.supports(preferred)
        ):
            preferred = Encoding.RAW
        encoding, payload = encode_block(data, preferred)
        self.send(Write(disk, offset, len(data), encoding, payload))
        return encoding

    def write_ref(self, disk: int, offset: int, length: int, digest: bytes) -> None:
        """Tell the server to copy a chunk its store holds (``digest``) to ``offset``."""
        self.send(Write(disk, offset, length, Encoding.REF, digest))

    def have(self, disk: int, entries: Sequence[tuple[int, bytes]]) -> list[bool]:
        """For each (chunk_index, sha256): True when the server's store held it and it is now in staging."""
        request_id = self._next_request
        self._next_request += 1
        self.send(Have(request_id, disk, list(entries)))
        reply = self.receive(HaveReply)
        assert isinstance(reply, HaveReply)
        if reply.request_id != request_id or reply.count != len(entries):
            raise ProtocolError("HAVE_REPLY does not answer the HAVE")
        return reply.flags()

    def flush(self, seq: int) -> None:
        """Return once the server holds everything sent so far durably, recorded as ``seq``."""
        self.send(Flush(seq))
        reply = self.receive(FlushAck)
        if getattr(reply, "seq", None) != seq:
            raise ProtocolError("FLUSH_ACK for another sequence number")

    def snapshot(self, seq: int, request_id: str, timeout: float = 3600.0) -> SnapshotOk:
        """Flush, then have the server snapshot all of this source server's disks at this point.

        The first snapshot of a server reads every staged chunk (minutes for large disks), hence its own
        ``timeout`` for the reply."""
        self.send(Snapshot(seq, request_id))
        if self._sock is not None:
            self._sock.settimeout(max(timeout, self.timeout))
        try:
            reply = self.receive(SnapshotOk)
        finally:
            if self._sock is not None:
                self._sock.settimeout(self.timeout)
        assert isinstance(reply, SnapshotOk)
        if reply.seq != seq or reply.request_id != request_id:
            raise ProtocolError("SNAPSHOT_OK answers another request")
        return reply

    def ping(self) -> float:
        """Round-trip time in seconds."""
        nonce = self._next_request
        self._next_request += 1
        start = time.monotonic()
        self.send(Ping(nonce))
        reply = self.receive(Pong)
        if getattr(reply, "seq", None) != nonce:
            raise ProtocolError("PONG for another PING")
        return time.monotonic() - start
