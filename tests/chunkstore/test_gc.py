"""Garbage collection: unreferenced chunks go, referenced ones stay, packs are compacted."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rehost.chunkstore import CHUNK_SIZE
from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource
from rehost.errors import SnapshotError, StorageError

from .helpers import make_image, rand, sha256_file, small_pack_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _pack_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "chunks" / "packs").rglob("*") if p.is_file()]


def _digests(path: Path) -> set[bytes]:
    data = path.read_bytes()
    chunks = (data[o : o + CHUNK_SIZE] for o in range(0, len(data), CHUNK_SIZE))
    return {hashlib.sha256(c).digest() for c in chunks if c.count(0) != len(c)}


def test_gc_removes_unreferenced_chunks_and_keeps_referenced(data_dir: Path, tmp_path: Path) -> None:
    store = small_pack_store(data_dir)
    try:
        # Snapshot 1: chunks 0-31 random (set X). Snapshot 2: chunks 0-7 kept, 8-31 rewritten (set Y).
        img = make_image(tmp_path / "a.img", 32 * CHUNK_SIZE, [(0, rand(32 * CHUNK_SIZE, 1))])
        old = store.create("s-1", {"/dev/sda": VolumeSource(img, 32 * CHUNK_SIZE, None)}, T0)
        old_digests = _digests(img)
        with open(img, "r+b") as f:
            f.seek(8 * CHUNK_SIZE)
            f.write(rand(24 * CHUNK_SIZE, 2))
        new = store.create(
            "s-1",
            {"/dev/sda": VolumeSource(img, 32 * CHUNK_SIZE, set(range(8, 32)))},
            T0 + timedelta(hours=1),
        )
        new_digests = _digests(img)
        assert store.chunks.stats().chunks == 56
        bytes_before = sum(p.stat().st_size for p in _pack_files(data_dir))

        assert store.gc().chunks_removed == 0  # both snapshots still reference everything

        store.delete("s-1", old.snapshot_id)
        stats = store.gc()

        assert stats.chunks_removed == 24
        assert store.chunks.held(old_digests | new_digests) == new_digests
        assert stats.packs_deleted + stats.packs_rewritten > 0
        assert sum(p.stat().st_size for p in _pack_files(data_dir)) < bytes_before * 0.7
        out = tmp_path / "out.raw"
        store.export("s-1", new.snapshot_id, "/dev/sda", out)
        assert sha256_file(out) == sha256_file(img)
        assert store.verify().ok
    finally:
        store.close()


def test_gc_compacts_a_pack_with_little_live_data(
    store: SnapshotStore, tmp_path: Path, data_dir: Path
) -> None:
    img = make_image(tmp_path / "a.img", 40 * CHUNK_SIZE, [(0, rand(40 * CHUNK_SIZE, 1))])
    keep = make_image(tmp_path / "b.img", 2 * CHUNK_SIZE, [(0, img.read_bytes()[: 2 * CHUNK_SIZE])])
    first = store.create("s-1", {"/dev/sda": VolumeSource(img, 40 * CHUNK_SIZE, None)}, T0)
    store.create("s-2", {"/dev/sda": VolumeSource(keep, 2 * CHUNK_SIZE, None)}, T0)  # shares 2 chunks
    assert len(_pack_files(data_dir)) == 1
    store.delete("s-1", first.snapshot_id)

    stats = store.gc()

    assert (stats.chunks_removed, stats.packs_rewritten) == (38, 1)
    files = _pack_files(data_dir)
    assert len(files) == 1 and files[0].stat().st_size < 3 * CHUNK_SIZE
    with store.open_reader("s-2", store.list("s-2")[0].snapshot_id, "/dev/sda") as r:
        assert r.read() == keep.read_bytes()


def test_gc_deletes_packs_left_by_a_crash(store: SnapshotStore, data_dir: Path) -> None:
    chunk = rand(CHUNK_SIZE, 7)
    digest = hashlib.sha256(chunk).digest()
    store.chunks.put(digest, chunk)
    store.chunks.flush()  # durable but referenced by no manifest: garbage
    orphan = data_dir / "chunks" / "packs" / "ff" / ("ff" * 16)
    orphan.parent.mkdir(parents=True, exist_ok=True)  # a real pack's ID may start with ff too (1 in 256)
    orphan.write_bytes(b"a pack whose index commit never happened")

    stats = store.gc()

    assert not orphan.exists()
    assert stats.chunks_removed == 1 and not store.chunks.has(digest)
    assert _pack_files(data_dir) == []


def test_gc_waits_for_readers_and_refuses_damaged_manifests(store: SnapshotStore, tmp_path: Path) -> None:
    img = make_image(tmp_path / "a.img", CHUNK_SIZE, [(0, b"x")])
    snap = store.create("s-1", {"/dev/sda": VolumeSource(img, CHUNK_SIZE, None)}, T0)
    with store.open_reader("s-1", snap.snapshot_id, "/dev/sda"):
        with pytest.raises(StorageError, match="busy"):
            store.gc(timeout=0.2)
    manifest = tmp_path / "data" / "chunks" / "manifests" / "s-1" / snap.snapshot_id
    os.truncate(manifest, 5)
    with pytest.raises(SnapshotError, match="gc refused"):
        store.gc()
    assert store.chunks.stats().chunks == 1  # nothing collected


def test_a_failed_create_leaves_no_snapshot_and_only_garbage(store: SnapshotStore, tmp_path: Path) -> None:
    good = make_image(tmp_path / "a.img", 8 * CHUNK_SIZE, [(0, rand(8 * CHUNK_SIZE, 1))])
    volumes = {
        "/dev/sda": VolumeSource(good, 8 * CHUNK_SIZE, None),
        "/dev/sdb": VolumeSource(tmp_path / "vanished.img", CHUNK_SIZE, None),
    }
    with pytest.raises(SnapshotError):
        store.create("s-1", volumes, T0)
    assert store.list("s-1") == []
    store.chunks.flush()  # whatever the failed create stored is now durable, and unreferenced
    assert store.chunks.stats().chunks == 8
    assert store.gc().chunks_removed == 8
    assert store.chunks.stats().chunks == 0


def test_cli_gc(
    store: SnapshotStore, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehost.cli.main import main

    img = make_image(tmp_path / "a.img", 4 * CHUNK_SIZE, [(0, rand(4 * CHUNK_SIZE, 1))])
    first = store.create("s-1", {"/dev/sda": VolumeSource(img, 4 * CHUNK_SIZE, None)}, T0)
    with open(img, "r+b") as f:
        f.write(rand(CHUNK_SIZE, 2))
    store.create("s-1", {"/dev/sda": VolumeSource(img, 4 * CHUNK_SIZE, {0})}, T0 + timedelta(minutes=1))
    store.delete("s-1", first.snapshot_id)
    assert main(["snapshot", "gc", "--data-dir", str(data_dir)]) == 0
    assert "removed 1 chunks" in capsys.readouterr().out
    assert store.chunks.stats().chunks == 4


def test_a_lost_index_is_rebuilt_from_the_packs(data_dir: Path, tmp_path: Path) -> None:
    img = make_image(
        tmp_path / "a.img", 40 * CHUNK_SIZE, [(0, rand(20 * CHUNK_SIZE, 1)), (30 * CHUNK_SIZE, b"x" * 9999)]
    )
    store = small_pack_store(data_dir)
    snap = store.create("s-1", {"/dev/sda": VolumeSource(img, 40 * CHUNK_SIZE, None)}, T0)
    before = store.chunks.stats()
    store.close()
    for f in (data_dir / "chunks").glob("index.db*"):
        f.unlink()

    reopened = SnapshotStore.open(data_dir)
    try:
        after = reopened.chunks.stats()
        assert (after.chunks, after.packs, after.pack_bytes) == (
            before.chunks,
            before.packs,
            before.pack_bytes,
        )
        assert reopened.gc().chunks_removed == 0  # nothing taken for garbage
        out = tmp_path / "out.raw"
        reopened.export("s-1", snap.snapshot_id, "/dev/sda", out)
        assert sha256_file(out) == sha256_file(img)
        assert reopened.verify().ok
    finally:
        reopened.close()
