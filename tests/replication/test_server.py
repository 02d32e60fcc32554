"""The replication server over real TLS on loopback: staging content, durability, authentication, refusal
of bad frames."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import struct
import zlib
from pathlib import Path

import pytest

from rehost.errors import ReplicationError
from rehost.replication import protocol as p
from rehost.replication.server import ReplicationServer
from rehost.replication.staging import disk_key

from .conftest import Env, ServerProcess, client, raw_tls

SID = "s-0123456789abcdef0"
OTHER = "s-fedcba98765432100"
MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    return sha(path.read_bytes())


def make_disk(size: int, seed: int = 1) -> bytes:
    """Random, compressible text and zero regions: every encoding gets used."""
    rng = random.Random(seed)
    out = bytearray(size)
    pos = 0
    while pos < size:
        kind = rng.choice(["random", "text", "zero"])
        n = min(size - pos, rng.choice([4096, 65536, 300_000]))
        if kind == "random":
            out[pos : pos + n] = rng.randbytes(n)
        elif kind == "text":
            out[pos : pos + n] = (b"the quick brown fox %d " % pos * (n // 20 + 1))[:n]
        pos += n
    return bytes(out)


def send_disk(c: p.ReplicationClient, disk: int, data: bytes, piece: int = MiB) -> set[p.Encoding]:
    used = set()
    encodings = [p.Encoding.RAW, p.Encoding.ZSTD, p.Encoding.LZ4, p.Encoding.ZLIB]
    for i, off in enumerate(range(0, len(data), piece)):
        used.add(c.write(disk, off, data[off : off + piece], encodings[i % len(encodings)]))
    return used


def test_disk_key() -> None:
    assert disk_key("/dev/sda") == "dev_sda"
    assert disk_key("/dev/nvme0n1") == "dev_nvme0n1"
    assert disk_key("/dev/mapper/vg-root") == "dev_mapper_vg-root"
    with pytest.raises(ReplicationError):
        disk_key("/../")


@pytest.mark.timeout(120)
def test_tls_write_to_subprocess_is_byte_identical(env: Env, server_process: ServerProcess) -> None:
    server_process.start()
    disk_a = make_disk(8 * MiB + 12345, seed=1)  # not a multiple of the chunk size
    disk_b = make_disk(3 * MiB, seed=2)
    with client(env, server_process.address) as c:
        hello = c.hello(
            SID, env.token(SID), [p.DiskInfo("/dev/sda", len(disk_a)), p.DiskInfo("/dev/sdb", len(disk_b))]
        )
        assert [d.is_new for d in hello.disks] == [True, True]
        used = send_disk(c, 0, disk_a, piece=p.CHUNK_SIZE) | send_disk(c, 1, disk_b, piece=p.MAX_DATA)
        assert {p.Encoding.ZERO, p.Encoding.ZSTD, p.Encoding.RAW} <= used
        c.flush(1)
        assert c.ping() >= 0
    assert file_sha(env.staging(SID, "dev_sda")) == sha(disk_a)
    assert file_sha(env.staging(SID, "dev_sdb")) == sha(disk_b)
    assert server_process.kill(signal.SIGTERM) == 0  # clean shutdown on SIGTERM


@pytest.mark.timeout(120)
def test_flush_ack_is_durable_across_kill9(env: Env, server_process: ServerProcess) -> None:
    server_process.start()
    data = make_disk(4 * MiB, seed=3)
    disks = [p.DiskInfo("/dev/sda", len(data))]
    with client(env, server_process.address) as c:
        c.hello(SID, env.token(SID), disks)
        send_disk(c, 0, data)
        c.flush(41)
        server_process.kill(signal.SIGKILL)  # right after the ack: no chance for a clean close
    server_process.start()
    with client(env, server_process.address) as c:
        hello = c.hello(SID, env.token(SID), disks)
        assert hello.disks == [p.DiskResume(41, 0)]  # resumes, no full resync
        c.write(0, 0, b"\x07" * 4096)
        c.flush(42)
    assert file_sha(env.staging(SID)) == sha(b"\x07" * 4096 + data[4096:])


def test_wrong_and_foreign_tokens_are_refused(env: Env, server: ReplicationServer) -> None:
    disks = [p.DiskInfo("/dev/sda", MiB)]
    with client(env, server.address) as c:
        c.hello(SID, env.token(SID), disks)
        c.write(0, 0, b"A" * 4096)
        c.flush(1)
    for sid, token in [(SID, "0" * 64), (SID, env.token(OTHER)), (OTHER, env.token(SID)), (SID, "")]:
        c = client(env, server.address)
        with pytest.raises(p.ServerError) as err:
            c.hello(sid, token, disks)
        assert err.value.code == p.ErrorCode.AUTH
        with pytest.raises(ReplicationError):  # and the session is over
            c.write(0, 0, b"B" * 4096)
            c.flush(2)
    assert not (env.data_dir / "staging" / OTHER).exists()
    assert file_sha(env.staging(SID)) == sha(b"A" * 4096 + bytes(MiB - 4096))


def test_bad_version_is_refused(env: Env, server: ReplicationServer) -> None:
    sock = raw_tls(env, server.address)
    sock.sendall(p.encode(p.Hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", MiB)], version=99)))
    reply = p.FrameReader(sock).read()
    assert isinstance(reply, p.Error) and reply.code == p.ErrorCode.VERSION


def _hello_frame(env: Env, size: int = MiB) -> bytes:
    return p.encode(p.Hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", size)]))


def _write_frame(
    payload: bytes, offset: int = 0, encoding: p.Encoding = p.Encoding.RAW, length: int = -1
) -> bytes:
    length = len(payload) if length < 0 else length
    body = struct.pack("!HBQI", 0, int(encoding), offset, length) + payload
    return p.encode_header(p.MessageType.WRITE, len(body)) + body


BAD_FRAMES = {
    # the header alone must be refused (the server closes before reading a payload it would not accept)
    "oversized": p.HEADER.pack(p.MAGIC, p.MessageType.WRITE, 0, 0, p.MAX_PAYLOAD + 1) + b"\xff" * 64,
    "unknown type": p.HEADER.pack(p.MAGIC, 200, 0, 0, 4) + b"\xff" * 4,
    "bad magic": b"GET / HTTP/1.1\r\n\r\n",
    "not accepted": p.encode(p.FlushAck(1)),
    "second hello": None,  # filled in by the test (needs the token)
    "corrupt zlib": _write_frame(b"\x78\x9c" + b"\xff" * 100, encoding=p.Encoding.ZLIB, length=4096),
    "wrong length": _write_frame(zlib.compress(b"\xff" * 8192), encoding=p.Encoding.ZLIB, length=4096),
    "beyond disk": _write_frame(b"\xff" * 4096, offset=MiB - 2048),
    "bad disk index": p.encode(p.Write(3, 0, 4, p.Encoding.RAW, b"\xff" * 4)),
    "truncated write": _write_frame(b"\xff" * 4096)[:-100],
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_malformed_frames_close_and_write_nothing(env: Env, server: ReplicationServer, name: str) -> None:
    frame = BAD_FRAMES[name] if name != "second hello" else _hello_frame(env)
    assert frame is not None
    sock = raw_tls(env, server.address)
    reader = p.FrameReader(sock)
    sock.sendall(_hello_frame(env))
    assert isinstance(reader.read(), p.HelloOk)
    sock.sendall(frame)
    if name == "truncated write":
        sock.close()  # the stream ends inside the frame
    else:
        reply = reader.read()
        assert isinstance(reply, p.Error) and reply.code == p.ErrorCode.PROTOCOL, reply
        assert reader.read() is None  # closed
    # the server applied nothing of the bad frame: a good client sees an untouched, all-zero disk
    with client(env, server.address) as c:
        c.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", MiB)])
        c.flush(1)
    assert file_sha(env.staging(SID)) == sha(bytes(MiB))


def test_write_before_hello_is_refused(env: Env, server: ReplicationServer) -> None:
    sock = raw_tls(env, server.address)
    reader = p.FrameReader(sock)
    sock.sendall(_write_frame(b"\xff" * 4096))
    reply = reader.read()
    assert isinstance(reply, p.Error) and reply.code == p.ErrorCode.PROTOCOL
    assert reader.read() is None
    assert not (env.data_dir / "staging" / SID).exists()


def test_plaintext_client_gets_nothing(env: Env, server: ReplicationServer) -> None:
    c = p.ReplicationClient(server.address[0], server.address[1], use_tls=False, timeout=10).connect()
    with pytest.raises(ReplicationError):
        c.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", MiB)])
    assert not (env.data_dir / "staging" / SID).exists()


def test_new_session_supersedes_old(env: Env, server: ReplicationServer) -> None:
    disks = [p.DiskInfo("/dev/sda", MiB)]
    old = client(env, server.address)
    old.hello(SID, env.token(SID), disks)
    new = client(env, server.address)
    new.hello(SID, env.token(SID), disks)
    new.write(0, 0, b"N" * 4096)
    new.flush(5)
    with pytest.raises(p.ServerError) as err:
        for _ in range(50):  # the old session is told to go away at its next frame or poll
            old.write(0, 0, b"O" * 4096)
            old.flush(6)
    assert err.value.code == p.ErrorCode.SUPERSEDED
    new.close()
    assert file_sha(env.staging(SID)) == sha(b"N" * 4096 + bytes(MiB - 4096))


def test_resized_disk_starts_new(env: Env, server: ReplicationServer) -> None:
    with client(env, server.address) as c:
        c.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", MiB)])
        c.write(0, 0, b"x" * 4096)
        c.flush(3)
    with client(env, server.address) as c:
        hello = c.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", 2 * MiB), p.DiskInfo("/dev/sdb", MiB)])
        assert [(d.durable_seq, d.is_new) for d in hello.disks] == [(0, True), (0, True)]
    assert env.staging(SID).stat().st_size == 2 * MiB
    assert file_sha(env.staging(SID)) == sha(bytes(2 * MiB))


def test_zero_writes_keep_staging_sparse(env: Env, server: ReplicationServer) -> None:
    size = 64 * MiB
    with client(env, server.address) as c:
        c.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", size)])
        c.write(0, 0, os.urandom(p.MAX_DATA))
        c.flush(1)
        for off in range(0, size, p.MAX_DATA):
            assert c.write(0, off, bytes(p.MAX_DATA)) is p.Encoding.ZERO
        c.flush(2)
    path = env.staging(SID)
    assert file_sha(path) == sha(bytes(size))
    assert path.stat().st_blocks * 512 < MiB  # the random data's blocks were punched out again


def test_second_server_on_same_staging_is_refused(
    env: Env, server: ReplicationServer, server_process: ServerProcess
) -> None:
    server_process.start()
    disks = [p.DiskInfo("/dev/sda", MiB)]
    with client(env, server_process.address) as c:
        c.hello(SID, env.token(SID), disks)
        c.write(0, 0, b"1" * 4096)
        c.flush(1)
        with client(env, server.address) as other, pytest.raises(p.ServerError) as err:
            other.hello(SID, env.token(SID), disks)
        assert err.value.code == p.ErrorCode.BUSY
    assert file_sha(env.staging(SID)) == sha(b"1" * 4096 + bytes(MiB - 4096))


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--id", "rs bad!"], 2, "invalid replication server ID"),
        (["--id", "rs-1", "--snapshot-interval", "-1"], 2, "must not be negative"),
        (["--id", "rs-1", "--port", "{busy}"], 1, "cannot listen"),
    ],
)
def test_cli_errors_are_one_line(env: Env, extra: list[str], code: int, message: str) -> None:
    import socket
    import subprocess

    from .conftest import REHOST

    with socket.create_server(("127.0.0.1", 0)) as busy:
        args = [a.replace("{busy}", str(busy.getsockname()[1])) for a in extra]
        proc = subprocess.run(
            REHOST + ["replication-server", "--data-dir", str(env.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == code
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("rehost: error:") and message in proc.stderr


def test_sigterm_mid_stream_stops_cleanly_and_keeps_acked_data(
    env: Env, server_process: ServerProcess
) -> None:
    server_process.start()
    size = 16 * MiB
    disks = [p.DiskInfo("/dev/sda", size)]
    block = bytes(range(256)) * 256  # 64 KiB
    acked = 0
    with client(env, server_process.address) as c:
        c.hello(SID, env.token(SID), disks)
        with pytest.raises(p.ServerError) as err:
            for seq in range(1, 100_000):
                c.write(0, (seq * p.CHUNK_SIZE) % size, block)
                c.flush(seq)
                acked = seq
                if seq == 20:
                    assert server_process.proc is not None
                    server_process.proc.send_signal(signal.SIGTERM)
        assert err.value.code == p.ErrorCode.SHUTDOWN
    assert server_process.kill(signal.SIGTERM) == 0
    server_process.start()
    with client(env, server_process.address) as c:
        assert c.hello(SID, env.token(SID), disks).disks[0].durable_seq >= acked >= 20


def test_two_source_servers_stream_at_once(env: Env, server: ReplicationServer) -> None:
    a, b = make_disk(2 * MiB, seed=11), make_disk(2 * MiB, seed=12)
    ca, cb = client(env, server.address), client(env, server.address)
    ca.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", len(a))])
    cb.hello(OTHER, env.token(OTHER), [p.DiskInfo("/dev/sda", len(b))])
    for off in range(0, len(a), p.CHUNK_SIZE):  # interleaved
        ca.write(0, off, a[off : off + p.CHUNK_SIZE])
        cb.write(0, off, b[off : off + p.CHUNK_SIZE])
    ca.flush(1)
    cb.flush(1)
    ca.close()
    cb.close()
    assert file_sha(env.staging(SID)) == sha(a)
    assert file_sha(env.staging(OTHER)) == sha(b)


def test_unaligned_writes_and_a_disk_end_off_4k_are_staged_exactly(env: Env, server: ReplicationServer) -> None:
    """Staging writes go through O_DIRECT where they are 4 KiB aligned and buffered where not (an odd
    offset, the tail of a disk whose size is not a multiple of 4 KiB): the bytes are exact either way."""
    size = 3 * MiB + 512
    expected = bytearray(size)
    writes = [(512, 8192), (4096, MiB + 100), (2 * MiB, MiB + 512), (size - 1000, 1000), (0, 4096)]
    with client(env, server.address) as c:
        c.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", size)])
        for seq, (offset, length) in enumerate(writes, 1):
            data = os.urandom(length)
            expected[offset : offset + length] = data
            c.write(0, offset, data, p.Encoding.RAW)
            c.flush(seq)
    assert file_sha(env.staging(SID)) == sha(bytes(expected))
