"""Snapshots taken by the replication server: their exports equal the staged bytes, incrementally and across
restarts; HAVE and REF fill staging from the chunk store."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path

from rehost.chunkstore.snapshots import SnapshotStore
from rehost.replication import protocol as p
from rehost.replication.server import ReplicationServer, ServerConfig
from rehost.replication.tls import server_context

from .conftest import Env, ServerProcess, client
from .test_server import OTHER, SID, MiB, file_sha, make_disk, send_disk, sha


def export_sha(env: Env, tmp: Path, sid: str, snap_id: str, device: str = "/dev/sda") -> str:
    out = tmp / f"{snap_id}-{device.replace('/', '_')}.raw"
    with SnapshotStore.open(env.data_dir, create=False) as store:
        store.export(sid, snap_id, device, out)
    return file_sha(out)


def test_snapshot_export_equals_staging_incrementally(
    env: Env, server: ReplicationServer, tmp_path: Path
) -> None:
    disk_a, disk_b = make_disk(5 * MiB + 777, seed=5), make_disk(2 * MiB, seed=6)
    disks = [p.DiskInfo("/dev/sda", len(disk_a)), p.DiskInfo("/dev/sdb", len(disk_b))]
    with client(env, server.address) as c:
        c.hello(SID, env.token(SID), disks)
        send_disk(c, 0, disk_a, piece=p.CHUNK_SIZE)
        send_disk(c, 1, disk_b)
        first = c.snapshot(10, "cmd-first")
        assert first.snapshot_id.startswith("snap-") and first.request_id == "cmd-first"
        # change a few chunks (one of them the partial last chunk) and snapshot again
        changed = bytearray(disk_a)
        for off in (0, 3 * p.CHUNK_SIZE + 5, len(disk_a) - 100):
            changed[off : off + 50] = b"Z" * len(changed[off : off + 50])
            c.write(0, off, bytes(changed[off : off + 50]))
        c.write(1, MiB, bytes(p.CHUNK_SIZE))  # a zero write is a change too
        changed_b = bytearray(disk_b)
        changed_b[MiB : MiB + p.CHUNK_SIZE] = bytes(p.CHUNK_SIZE)
        second = c.snapshot(11, "cmd-second")
        hello = None
    assert export_sha(env, tmp_path, SID, first.snapshot_id) == sha(disk_a)
    assert export_sha(env, tmp_path, SID, first.snapshot_id, "/dev/sdb") == sha(disk_b)
    assert (
        export_sha(env, tmp_path, SID, second.snapshot_id)
        == sha(bytes(changed))
        == file_sha(env.staging(SID))
    )
    assert export_sha(env, tmp_path, SID, second.snapshot_id, "/dev/sdb") == sha(bytes(changed_b))
    # SNAPSHOT is also a FLUSH: the resume info says so
    with client(env, server.address) as c:
        hello = c.hello(SID, env.token(SID), disks)
    assert [d.durable_seq for d in hello.disks] == [11, 11]


def test_have_and_ref_fill_staging_from_the_store(env: Env, server: ReplicationServer) -> None:
    data = make_disk(3 * MiB, seed=7)
    with client(env, server.address) as c:
        _stage(env, c, data)
        c.snapshot(1, "seed")
    chunks = [data[o : o + p.CHUNK_SIZE] for o in range(0, len(data), p.CHUNK_SIZE)]
    entries = [(i, hashlib.sha256(chunk).digest()) for i, chunk in enumerate(chunks)]
    entries.append((len(chunks) - 1, hashlib.sha256(b"never stored").digest()))  # unknown digest
    with client(env, server.address) as c:
        c.hello(OTHER, env.token(OTHER), [p.DiskInfo("/dev/sda", len(data))])
        held = c.have(0, entries)
        zero = bytes(p.CHUNK_SIZE)
        assert held[:-1] == [chunk != zero for chunk in chunks]  # zero chunks are never stored
        assert held[-1] is False
        c.write_ref(0, 0, 4096, hashlib.sha256(chunks[1]).digest() if chunks[1] != zero else entries[-2][1])
        c.flush(1)
    expected = bytearray(data)
    ref_chunk = chunks[1] if chunks[1] != zero else chunks[-1]
    expected[:4096] = ref_chunk[:4096]
    assert file_sha(env.staging(OTHER)) == sha(bytes(expected))


def test_ref_to_missing_chunk_is_refused(env: Env, server: ReplicationServer) -> None:
    with client(env, server.address) as c:
        c.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", MiB)])
        c.write_ref(0, 0, p.CHUNK_SIZE, hashlib.sha256(b"nope").digest())
        try:
            c.flush(1)
            raise AssertionError("REF to a missing chunk was accepted")
        except p.ServerError as exc:
            assert exc.code == p.ErrorCode.MISSING_CHUNK


def test_dirty_set_survives_kill9(env: Env, server_process: ServerProcess, tmp_path: Path) -> None:
    data = make_disk(2 * MiB, seed=8)
    disks = [p.DiskInfo("/dev/sda", len(data))]
    server_process.start()
    with client(env, server_process.address) as c:
        c.hello(SID, env.token(SID), disks)
        send_disk(c, 0, data)
        c.snapshot(1, "base")
        c.write(0, 5 * p.CHUNK_SIZE, b"flushed" * 100)
        c.flush(2)
        server_process.kill(signal.SIGKILL)
    server_process.start()
    with client(env, server_process.address) as c:
        assert c.hello(SID, env.token(SID), disks).disks[0].durable_seq == 2
        snap = c.snapshot(3, "after-restart")  # nothing resent: the persisted dirty set must cover chunk 5
    expected = bytearray(data)
    expected[5 * p.CHUNK_SIZE : 5 * p.CHUNK_SIZE + 700] = b"flushed" * 100
    assert export_sha(env, tmp_path, SID, snap.snapshot_id) == sha(bytes(expected))


def test_unflushed_writes_at_kill9_make_the_next_snapshot_complete(
    env: Env, server_process: ServerProcess, tmp_path: Path
) -> None:
    data = make_disk(2 * MiB, seed=9)
    disks = [p.DiskInfo("/dev/sda", len(data))]
    server_process.start()
    with client(env, server_process.address) as c:
        c.hello(SID, env.token(SID), disks)
        send_disk(c, 0, data)
        c.snapshot(1, "base")
        c.write(0, 9 * p.CHUNK_SIZE, b"unflushed" * 100)
        c.ping()  # the write has been applied (replies come in order) but was never flushed
        server_process.kill(signal.SIGKILL)
    server_process.start()
    with client(env, server_process.address) as c:
        assert c.hello(SID, env.token(SID), disks).disks[0].durable_seq == 1
        snap = c.snapshot(2, "after-crash")
    # whatever of the unflushed write survived, the snapshot matches the staging volume exactly
    assert export_sha(env, tmp_path, SID, snap.snapshot_id) == file_sha(env.staging(SID))


def _stage(env: Env, c: p.ReplicationClient, data: bytes) -> None:
    """HELLO for one disk of ``data``'s size, then all of ``data`` in every encoding."""
    c.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", len(data))])
    send_disk(c, 0, data)


def _timed_server(env: Env, server_id: str, interval: float) -> ReplicationServer:
    srv = ReplicationServer(ServerConfig(data_dir=env.data_dir, server_id=server_id, port=0,
                                         snapshot_interval=interval), server_context(env.data_dir))
    srv.start()
    return srv


def _snapshots_within(env: Env, seconds: float) -> list:
    deadline = time.monotonic() + seconds
    snaps: list = []
    while not snaps and time.monotonic() < deadline:
        time.sleep(0.2)
        with SnapshotStore.open(env.data_dir) as store:
            snaps = store.list(SID)
    return snaps


def test_periodic_snapshot_at_flush_boundary(env: Env, tmp_path: Path) -> None:
    srv = _timed_server(env, "rs-timer", 0.5)
    try:
        data = make_disk(MiB, seed=10)
        with client(env, srv.address) as c:
            _stage(env, c, data)
            c.flush(1)
            snaps = _snapshots_within(env, 60)
        assert snaps, "no periodic snapshot was taken"
        assert export_sha(env, tmp_path, SID, snaps[0].snapshot_id) == sha(data)
    finally:
        srv.stop(timeout=10)


def test_a_source_left_without_a_session_is_snapshotted_and_released(env: Env, tmp_path: Path) -> None:
    """When the agent goes away, the replication server snapshots what it staged since the last snapshot
    (the agent may never come back) and releases the staging volumes, which another replication server
    (the source server moved) can then open; a new session here opens them again."""
    from rehost.replication.staging import SourceStaging, StagingBusy

    srv = _timed_server(env, "rs-release", 3600)
    try:
        data = make_disk(MiB, seed=11)
        with client(env, srv.address) as c:
            _stage(env, c, data)
            c.flush(1)
            with SnapshotStore.open(env.data_dir) as store:
                assert store.list(SID) == []  # the hourly timer has not fired
        snaps = _snapshots_within(env, 30)
        assert snaps and export_sha(env, tmp_path, SID, snaps[0].snapshot_id) == sha(data)
        staging = None
        deadline = time.monotonic() + 30
        while staging is None and time.monotonic() < deadline:  # the lock is released right after
            try:
                staging = SourceStaging(env.data_dir, SID)
            except StagingBusy:
                time.sleep(0.1)
        assert staging is not None, "the staging volumes stayed locked"
        staging.close()
        with client(env, srv.address) as c:  # and the server itself takes them again
            hello = c.hello(SID, env.token(SID), [p.DiskInfo("/dev/sda", len(data))])
            assert [(d.durable_seq, d.is_new) for d in hello.disks] == [(1, False)]
    finally:
        srv.stop(timeout=10)
    assert file_sha(env.staging(SID)) == sha(data)
