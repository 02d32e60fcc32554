"""Snapshots: create/list/export round trips, incremental snapshots, dedup across servers, errors."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from rehost.chunkstore import CHUNK_SIZE
from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource
from rehost.errors import InvalidInput, NotFound, SnapshotError

from .helpers import make_image, mixed_image, rand, sha256_file

SID = "s-0123456789abcdef0"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_round_trip_two_disks_is_byte_identical_and_sparse(store: SnapshotStore, tmp_path: Path) -> None:
    a = mixed_image(tmp_path / "a.img", seed=1)
    b = make_image(tmp_path / "b.img", 3 * CHUNK_SIZE, [(CHUNK_SIZE, rand(CHUNK_SIZE, 9))])
    snap = store.create(
        SID,
        {
            "/dev/sda": VolumeSource(a, a.stat().st_size, None),
            "/dev/sdb": VolumeSource(b, b.stat().st_size, None),
        },
        T0,
    )
    assert snap.snapshot_id.startswith("snap-") and len(snap.snapshot_id) == 22
    assert snap.taken_at == T0
    assert snap.disks == {"/dev/sda": a.stat().st_size, "/dev/sdb": 3 * CHUNK_SIZE}
    assert store.list(SID) == [snap]
    assert store.get(SID, snap.snapshot_id) == snap

    for dev, src in (("/dev/sda", a), ("/dev/sdb", b)):
        out = tmp_path / f"out-{dev[-3:]}.raw"
        store.export(SID, snap.snapshot_id, dev, out)
        assert sha256_file(out) == sha256_file(src)
    # Holes stay holes: the 8 MiB export allocates about what the source holds, not 8 MiB.
    out_a = tmp_path / "out-sda.raw"
    assert out_a.stat().st_blocks * 512 < 2 * 1024 * 1024


def test_zero_chunks_are_never_stored(store: SnapshotStore, tmp_path: Path) -> None:
    img = make_image(tmp_path / "z.img", 16 * CHUNK_SIZE, [(0, bytes(16 * CHUNK_SIZE))])  # zeros as data
    snap = store.create(SID, {"/dev/sda": VolumeSource(img, img.stat().st_size, None)}, T0)
    assert store.chunks.stats().chunks == 0
    out = tmp_path / "z.raw"
    store.export(SID, snap.snapshot_id, "/dev/sda", out)
    assert out.read_bytes() == bytes(16 * CHUNK_SIZE)


def test_open_reader_reads_and_seeks_anywhere(store: SnapshotStore, tmp_path: Path) -> None:
    img = mixed_image(tmp_path / "a.img")
    data = img.read_bytes()
    snap = store.create(SID, {"/dev/sda": VolumeSource(img, len(data), None)}, T0)
    with store.open_reader(SID, snap.snapshot_id, "/dev/sda") as r:
        assert r.seekable() and r.readable()
        assert r.read() == data
        r.seek(CHUNK_SIZE - 3)
        assert r.read(10) == data[CHUNK_SIZE - 3 : CHUNK_SIZE + 7]  # across a chunk boundary
        r.seek(-500, 2)
        assert r.read() == data[-500:]
        assert r.read(10) == b""


def test_incremental_snapshot_reads_only_dirty_chunks(store: SnapshotStore, tmp_path: Path) -> None:
    img = make_image(tmp_path / "a.img", 64 * CHUNK_SIZE, [(0, rand(64 * CHUNK_SIZE, 5))])
    first = store.create(SID, {"/dev/sda": VolumeSource(img, 64 * CHUNK_SIZE, None)}, T0)
    before = img.read_bytes()
    assert store.chunks.stats().chunks == 64

    _write(img, 3 * CHUNK_SIZE + 100, b"new data in chunk 3")
    _write(img, 10 * CHUNK_SIZE, rand(CHUNK_SIZE, 6))
    # A write the caller does not declare dirty: an incremental snapshot must not read chunk 20 again.
    _write(img, 20 * CHUNK_SIZE, b"undeclared")
    second = store.create(
        SID, {"/dev/sda": VolumeSource(img, 64 * CHUNK_SIZE, {3, 10})}, T0 + timedelta(minutes=5)
    )
    assert store.chunks.stats().chunks == 66  # exactly the two dirty chunks were added

    expected = bytearray(img.read_bytes())
    expected[20 * CHUNK_SIZE : 21 * CHUNK_SIZE] = before[20 * CHUNK_SIZE : 21 * CHUNK_SIZE]
    with store.open_reader(SID, second.snapshot_id, "/dev/sda") as r:
        assert r.read() == bytes(expected)
    with store.open_reader(SID, first.snapshot_id, "/dev/sda") as r:
        assert r.read() == before  # the older snapshot is untouched
    assert [s.snapshot_id for s in store.list(SID)] == [second.snapshot_id, first.snapshot_id]


def test_incremental_snapshot_of_a_grown_disk_reads_the_new_tail(
    store: SnapshotStore, tmp_path: Path
) -> None:
    img = make_image(tmp_path / "a.img", 4 * CHUNK_SIZE + 10, [(0, rand(4 * CHUNK_SIZE + 10, 1))])
    store.create(SID, {"/dev/sda": VolumeSource(img, 4 * CHUNK_SIZE + 10, None)}, T0)
    with open(img, "r+b") as f:
        f.seek(4 * CHUNK_SIZE + 10)
        f.write(rand(3 * CHUNK_SIZE, 2))
    size = img.stat().st_size
    snap = store.create(SID, {"/dev/sda": VolumeSource(img, size, set())}, T0 + timedelta(minutes=1))
    with store.open_reader(SID, snap.snapshot_id, "/dev/sda") as r:
        assert r.read() == img.read_bytes()


def test_a_new_disk_in_an_incremental_snapshot_is_read_whole(store: SnapshotStore, tmp_path: Path) -> None:
    a = make_image(tmp_path / "a.img", 2 * CHUNK_SIZE, [(0, rand(100, 1))])
    b = make_image(tmp_path / "b.img", 2 * CHUNK_SIZE, [(CHUNK_SIZE, rand(100, 2))])
    store.create(SID, {"/dev/sda": VolumeSource(a, 2 * CHUNK_SIZE, None)}, T0)
    snap = store.create(
        SID,
        {
            "/dev/sda": VolumeSource(a, 2 * CHUNK_SIZE, set()),
            "/dev/sdb": VolumeSource(b, 2 * CHUNK_SIZE, set()),
        },
        T0 + timedelta(minutes=1),
    )
    with store.open_reader(SID, snap.snapshot_id, "/dev/sdb") as r:
        assert r.read() == b.read_bytes()


def test_identical_disks_of_two_servers_are_stored_once(store: SnapshotStore, tmp_path: Path) -> None:
    a = mixed_image(tmp_path / "a.img", seed=3)
    b = tmp_path / "b.img"
    b.write_bytes(a.read_bytes())
    store.create("s-aaaaaaaaaaaaaaaaa", {"/dev/sda": VolumeSource(a, a.stat().st_size, None)}, T0)
    after_first = store.chunks.stats()
    snap_b = store.create("s-bbbbbbbbbbbbbbbbb", {"/dev/xvda": VolumeSource(b, b.stat().st_size, None)}, T0)
    after_second = store.chunks.stats()
    assert after_second.chunks == after_first.chunks > 0
    assert after_second.pack_bytes == after_first.pack_bytes
    out = tmp_path / "b.raw"
    store.export("s-bbbbbbbbbbbbbbbbb", snap_b.snapshot_id, "/dev/xvda", out)
    assert sha256_file(out) == sha256_file(b)


def test_chunk_store_answers_dedup_queries(store: SnapshotStore, tmp_path: Path) -> None:
    chunk = rand(CHUNK_SIZE, 42)
    digest = hashlib.sha256(chunk).digest()
    assert not store.chunks.has(digest)
    store.chunks.put(digest, chunk)
    store.chunks.put(digest.hex(), chunk)  # idempotent, hex accepted
    store.chunks.flush()
    assert store.chunks.has(digest.hex())
    assert store.chunks.get(digest) == chunk
    assert store.chunks.missing([digest, hashlib.sha256(b"other").digest()]) == [
        hashlib.sha256(b"other").digest()
    ]
    # Another process (here: another open of the same directory) sees flushed chunks.
    other = SnapshotStore.open(tmp_path / "data")
    try:
        assert other.chunks.has(digest) and other.chunks.get(digest) == chunk
    finally:
        other.close()
    with pytest.raises(InvalidInput):
        store.chunks.put(digest, chunk[:-1] + b"x")  # data that does not hash to the digest


def test_taken_at_is_utc_and_list_is_newest_first(store: SnapshotStore, tmp_path: Path) -> None:
    img = make_image(tmp_path / "a.img", CHUNK_SIZE, [(0, b"x")])
    vol = {"/dev/sda": VolumeSource(img, CHUNK_SIZE, None)}
    plus2 = datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    s1 = store.create(SID, vol, plus2)  # 14:30+02:00 = 12:30 UTC
    s2 = store.create(SID, vol, T0)  # 12:00 UTC, older though created later
    s3 = store.create(SID, vol, T0 + timedelta(hours=1))
    assert s1.taken_at.tzinfo == UTC and s1.taken_at.hour == 12
    assert [s.snapshot_id for s in store.list(SID)] == [s3.snapshot_id, s1.snapshot_id, s2.snapshot_id]
    assert store.latest(SID) == s3


def test_unknown_server_snapshot_or_disk_is_not_found(store: SnapshotStore, tmp_path: Path) -> None:
    img = make_image(tmp_path / "a.img", CHUNK_SIZE, [(0, b"x")])
    snap = store.create(SID, {"/dev/sda": VolumeSource(img, CHUNK_SIZE, None)}, T0)
    assert store.list("s-ffffffffffffffff0") == []
    with pytest.raises(NotFound, match="snap-00000000000000000 of source server"):
        store.get(SID, "snap-00000000000000000")
    with pytest.raises(NotFound):
        store.get("s-ffffffffffffffff0", snap.snapshot_id)
    with pytest.raises(NotFound):
        store.get("../etc", "snap-00000000000000000")
    with pytest.raises(NotFound, match="no disk /dev/sdz"):
        store.export(SID, snap.snapshot_id, "/dev/sdz", tmp_path / "o.raw")
    with pytest.raises(NotFound):
        store.open_reader(SID, "not-a-snapshot", "/dev/sda")


def test_create_errors(store: SnapshotStore, tmp_path: Path) -> None:
    img = make_image(tmp_path / "a.img", 4 * CHUNK_SIZE, [(0, b"x")])
    with pytest.raises(SnapshotError, match="cannot read staging volume"):
        store.create(SID, {"/dev/sda": VolumeSource(tmp_path / "missing.img", CHUNK_SIZE, None)}, T0)
    store.create(SID, {"/dev/sda": VolumeSource(img, 4 * CHUNK_SIZE, None)}, T0)
    with pytest.raises(SnapshotError, match="out of range"):
        store.create(SID, {"/dev/sda": VolumeSource(img, 4 * CHUNK_SIZE, {4})}, T0)
    with pytest.raises(InvalidInput):
        store.create("bad/id", {"/dev/sda": VolumeSource(img, 4 * CHUNK_SIZE, None)}, T0)
    assert len(store.list(SID)) == 1  # failed creates left no snapshot


def test_staging_file_shorter_than_the_disk_reads_as_zeros(store: SnapshotStore, tmp_path: Path) -> None:
    img = make_image(tmp_path / "a.img", CHUNK_SIZE + 5, [(0, rand(CHUNK_SIZE + 5, 1))])
    snap = store.create(SID, {"/dev/sda": VolumeSource(img, 4 * CHUNK_SIZE, None)}, T0)
    with store.open_reader(SID, snap.snapshot_id, "/dev/sda") as r:
        assert r.read() == img.read_bytes() + bytes(3 * CHUNK_SIZE - 5)
