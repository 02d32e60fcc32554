"""The replication wire protocol: every message round-trips, and bad frames are refused."""

from __future__ import annotations

import ast
import hashlib
import os
import socket
import struct
import sys
import threading
from pathlib import Path

import pytest

from rehost.errors import ProtocolError
from rehost.replication import protocol as p
from rehost.replication.auth import server_token, verify_token

SAMPLES: list[p.Message] = [
    p.Hello(
        "s-1234567890abcdef0", "ab" * 32, [p.DiskInfo("/dev/sda", 10 << 30), p.DiskInfo("/dev/nvme0n1", 4096)]
    ),
    p.Hello("s-1", "t", [], version=7),
    p.HelloOk(
        "rs-0001", [p.DiskResume(42, 0), p.DiskResume(0, p.DISK_NEW)], encodings=p.available_encodings()
    ),
    p.Write(1, 1 << 40, 5, p.Encoding.RAW, b"hello"),
    p.Write(0, 0, 65536, p.Encoding.ZERO, b""),
    p.Write(0, 65536, 65536, p.Encoding.REF, hashlib.sha256(b"x").digest()),
    p.Write(0, 0, 3, p.Encoding.ZLIB, b"\x78\x01whatever"),
    p.Have(9, 1, [(0, b"\x01" * 32), (2**40, b"\x02" * 32)]),
    p.Have(10, 0, []),
    p.HaveReply.from_flags(9, [True, False, True, True, False, False, False, False, True]),
    p.Flush(2**63),
    p.FlushAck(17),
    p.Snapshot(18, "cmd-abc"),
    p.SnapshotOk(18, "cmd-abc", "snap-0123456789abcdef0", 1_700_000_000_123),
    p.Ping(5),
    p.Pong(5),
    p.Error(p.ErrorCode.AUTH, "bad token for s-1 \u2013 refused"),
]


def test_samples_cover_every_message_type() -> None:
    assert {m.TYPE for m in SAMPLES} == set(p.MessageType)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: p.Message) -> None:
    frame = p.encode(msg)
    assert frame[:4] == p.MAGIC and frame[4] == msg.TYPE
    decoded = p.decode(frame)
    assert type(decoded) is type(msg)
    assert decoded == msg
    assert p.encode(decoded) == frame


def test_have_reply_bitmap() -> None:
    flags = [i % 3 == 0 for i in range(21)]
    reply = p.decode(p.encode(p.HaveReply.from_flags(1, flags)))
    assert isinstance(reply, p.HaveReply) and reply.flags() == flags


@pytest.mark.parametrize(
    "frame, reason",
    [
        (b"XXXX" + bytes(8), "magic"),
        (p.HEADER.pack(p.MAGIC, 99, 0, 0, 0), "unknown message type"),
        (p.HEADER.pack(p.MAGIC, p.MessageType.PING, 1, 0, 8) + bytes(8), "flags"),
        (p.HEADER.pack(p.MAGIC, p.MessageType.PING, 0, 0, 4) + bytes(4), "truncated"),
        (p.HEADER.pack(p.MAGIC, p.MessageType.PING, 0, 0, 9) + bytes(9), "trailing"),
        (p.HEADER.pack(p.MAGIC, p.MessageType.WRITE, 0, 0, p.MAX_PAYLOAD + 1), "exceeds"),
        (
            p.encode(p.Write(0, 0, 6, p.Encoding.RAW, b"hello")).replace(
                b"\x00\x00\x00\x06", b"\x00\x00\x00\x07"
            ),
            "RAW",
        ),
        (p.encode_header(p.MessageType.WRITE, 15) + struct.pack("!HBQI", 0, 77, 0, 0), "encoding"),
        (p.encode(p.Write(0, 0, 65536, p.Encoding.REF, b"\x00" * 31)), "digest"),
        (p.encode(p.Write(0, 0, 65536, p.Encoding.ZERO, b"x")), "ZERO"),
        (p.encode(p.Have(1, 0, [(0, b"\x00" * 32)]))[:-1], "length"),
        (p.encode_header(p.MessageType.ERROR, 4) + b"\x00\x01\x00\x02", "truncated"),
        (p.encode_header(p.MessageType.ERROR, 5) + b"\x00\x01\x00\x01\xff", "UTF-8"),
    ],
)
def test_malformed_frames_raise(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        p.decode(frame)


def test_cannot_encode_oversized_frame() -> None:
    with pytest.raises(ProtocolError):
        p.encode(p.Write(0, 0, p.MAX_DATA + 8192, p.Encoding.RAW, bytes(p.MAX_DATA + 8192)))


@pytest.mark.parametrize("encoding", [p.Encoding.ZLIB, p.Encoding.ZSTD, p.Encoding.LZ4])
def test_block_codecs(encoding: p.Encoding) -> None:
    data = (b"rehost replicates blocks " * 4000)[:65536]
    enc, payload = p.encode_block(data, encoding)
    assert enc is encoding and len(payload) < len(data)
    assert bytes(p.decompress(enc, memoryview(payload), len(data))) == data
    with pytest.raises(ProtocolError):
        p.decompress(enc, payload, len(data) - 1)  # wrong length is refused, never truncated silently
    with pytest.raises(ProtocolError):
        p.decompress(enc, b"\x00garbage" * 10, len(data))


def test_encode_block_zero_and_incompressible() -> None:
    assert p.encode_block(bytes(65536), p.Encoding.ZSTD) == (p.Encoding.ZERO, b"")
    assert p.encode_block(memoryview(bytes(4096))) == (p.Encoding.ZERO, b"")
    noise = os.urandom(65536)
    enc, payload = p.encode_block(noise, p.Encoding.ZLIB)
    assert enc is p.Encoding.RAW and payload == noise


def _socketpair_reader(chunks: list[bytes]) -> p.FrameReader:
    a, b = socket.socketpair()

    def feed() -> None:
        for chunk in chunks:
            a.sendall(chunk)
        a.close()

    threading.Thread(target=feed, daemon=True).start()
    return p.FrameReader(b)


def test_frame_reader_reads_a_stream_of_frames() -> None:
    big = os.urandom(p.MAX_DATA)
    msgs = [p.Ping(1), p.Write(0, 0, len(big), p.Encoding.RAW, big), p.Flush(2)] * 3
    stream = b"".join(p.encode(m) for m in msgs)
    # odd-sized pieces so frames straddle reads and the buffer must compact
    pieces = [stream[i : i + 99991] for i in range(0, len(stream), 99991)]
    reader = _socketpair_reader(pieces)
    for want in msgs:
        got = reader.read()
        assert type(got) is type(want)
        if isinstance(got, p.Write):
            assert hashlib.sha256(got.payload).digest() == hashlib.sha256(big).digest()
        else:
            assert got == want
    assert reader.read() is None


def test_frame_reader_refuses_oversized_and_truncated() -> None:
    reader = _socketpair_reader([p.HEADER.pack(p.MAGIC, p.MessageType.WRITE, 0, 0, p.MAX_PAYLOAD + 1)])
    with pytest.raises(ProtocolError, match="exceeds"):
        reader.read()
    reader = _socketpair_reader([p.encode(p.Flush(3))[:-2]])
    with pytest.raises(ProtocolError, match="inside a frame"):
        reader.read()


def test_tokens() -> None:
    key = b"k" * 32
    token = server_token(key, "s-aaaaaaaaaaaaaaaaa")
    assert len(token) == 64 and int(token, 16) >= 0
    assert verify_token(key, "s-aaaaaaaaaaaaaaaaa", token)
    assert not verify_token(key, "s-bbbbbbbbbbbbbbbbb", token)
    assert not verify_token(b"x" * 32, "s-aaaaaaaaaaaaaaaaa", token)
    assert not verify_token(key, "s-aaaaaaaaaaaaaaaaa", "\u00e9" * 64)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """All nodes except annotations (which ``from __future__ import annotations`` never evaluates)."""
    out: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        for name, value in ast.iter_fields(node):
            if name in ("annotation", "returns"):
                continue
            children = value if isinstance(value, list) else [value]
            stack.extend(c for c in children if isinstance(c, ast.AST))
    return out


AGENT_MODULES = ["protocol.py", "auth.py", "__init__.py"]
SRC = Path(__file__).resolve().parents[2] / "src" / "rehost"


@pytest.mark.parametrize("name", AGENT_MODULES)
def test_agent_side_modules_are_python38_and_stdlib_only(name: str) -> None:
    source = (SRC / "replication" / name).read_text()
    tree = ast.parse(source, feature_version=(3, 8))  # rejects match, 3.9+ grammar
    allowed_optional = {"zstandard", "lz4"}
    for node in _runtime_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for mod in names:
                top = mod.split(".")[0]
                assert top in sys.stdlib_module_names or top in allowed_optional or mod == "rehost.errors", (
                    mod
                )
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            # `X | Y` of types outside annotations needs 3.10; only ints may be or-ed at run time here
            assert not isinstance(node.left, ast.Name) or node.left.id not in {"str", "int", "bytes", "None"}
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            # list[int] & co. outside annotations need 3.9
            assert node.value.id not in {"list", "dict", "tuple", "type", "set", "frozenset"}, ast.dump(node)
    ast.parse((SRC / "errors.py").read_text(), feature_version=(3, 8))
