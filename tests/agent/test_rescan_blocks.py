"""The digest store's 4 KiB block entries: a rescan finds which blocks of a changed chunk differ, an old
(v1, chunk digests only) file is migrated without losing what it knew, and a foreign file is discarded."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

from rehost.agent import rescan
from rehost.agent.rescan import (
    BLOCK_SIZE,
    CHUNK_SIZE,
    FULL_MASK,
    PARTIAL_DIGEST,
    UNKNOWN_BLOCKS,
    UNKNOWN_DIGEST,
    DigestStore,
    DiskReader,
    chunk_digest,
    scan,
)

from .conftest import MiB, make_image


def record(store: DigestStore, reader: DiskReader) -> None:
    """What the sender does after FLUSH_ACK for a whole scan: every changed chunk's entries."""
    for c in scan(reader, store):
        store.set_entry(c.index, c.digest, c.blocks)
    store.commit()


def test_rescan_reports_the_changed_blocks_of_a_chunk(tmp_path: Path) -> None:
    image = make_image(tmp_path / "d.img", 2 * MiB, [(0, MiB)])
    store, reader = DigestStore(str(tmp_path / "d.digests"), 2 * MiB), DiskReader(str(image))
    first = list(scan(reader, store))
    assert all(c.mask == FULL_MASK for c in first)  # nothing known: whole chunks
    for c in first:
        store.set_entry(c.index, c.digest, c.blocks)
    store.commit()
    with open(image, "r+b") as f:
        for off in (3 * CHUNK_SIZE + 2 * BLOCK_SIZE, 3 * CHUNK_SIZE + 15 * BLOCK_SIZE + 7, 20 * CHUNK_SIZE + 5):
            f.seek(off)
            f.write(b"changed")  # 5 is in chunk 20, block 0, a zero area before: blocks are known there too
    store.close()
    store = DigestStore(str(tmp_path / "d.digests"), 2 * MiB)
    changed = {c.index: c.mask for c in scan(reader, store)}
    assert changed == {3: (1 << 2) | (1 << 15), 20: 1}
    reader.close()
    store.close()


def test_invalidated_chunk_is_compared_block_by_block(tmp_path: Path) -> None:
    image = make_image(tmp_path / "d.img", MiB, [(0, MiB)])
    store, reader = DigestStore(str(tmp_path / "d.digests"), MiB), DiskReader(str(image))
    record(store, reader)
    assert store.invalidate(4, 1 << 9)
    store.commit()
    store.close()
    store = DigestStore(str(tmp_path / "d.digests"), MiB)  # the invalidation is durable
    assert store.get(4) == PARTIAL_DIGEST
    (c,) = scan(reader, store)
    assert (c.index, c.mask) == (4, 1 << 9)  # the unknown block is resent, the others are known
    assert store.invalidate(0, FULL_MASK) and store.get(0) == PARTIAL_DIGEST
    assert store.blocks(0) == UNKNOWN_BLOCKS
    reader.close()
    store.close()
    # A chunk never sent has nothing to forget: no fsync is needed before sending it.
    fresh = DigestStore(str(tmp_path / "fresh.digests"), MiB)
    assert not fresh.invalidate(0, FULL_MASK) and fresh.get(0) == UNKNOWN_DIGEST
    fresh.close()


def write_v1(path: Path, size: int, image: Path) -> None:
    """A digest file as the previous agent version wrote it (chunk digests only)."""
    with open(image, "rb") as f:
        data = f.read()
    digests = b"".join(chunk_digest(data[o : o + CHUNK_SIZE]) for o in range(0, size, CHUNK_SIZE))
    header = struct.pack("<8s16sIQ", b"RHDG1\0\0\0", rescan._V1_ALGORITHM.encode(), CHUNK_SIZE, size)
    path.write_bytes(header + digests)


def test_v1_file_is_migrated_keeping_chunk_digests(tmp_path: Path) -> None:
    image = make_image(tmp_path / "d.img", MiB, [(0, MiB // 2)])
    path = tmp_path / "d.digests"
    write_v1(path, MiB, image)
    store, reader = DigestStore(str(path), MiB), DiskReader(str(image))
    assert not store.fresh and store.known_count() == 16
    assert store.blocks(0) == UNKNOWN_BLOCKS
    assert path.read_bytes()[:5] == b"RHDG2"
    assert list(scan(reader, store)) == []  # nothing changed: nothing to send after an upgrade
    with open(image, "r+b") as f:
        f.seek(CHUNK_SIZE + 100)
        f.write(os.urandom(10))
    (c,) = scan(reader, store)
    assert (c.index, c.mask) == (1, FULL_MASK)  # its blocks were never recorded: sent whole once
    reader.close()
    store.close()


def test_foreign_or_corrupt_file_starts_over(tmp_path: Path) -> None:
    image = make_image(tmp_path / "d.img", MiB, [(0, MiB)])
    path = tmp_path / "d.digests"
    write_v1(path, MiB, image)
    data = bytearray(path.read_bytes())
    data[8:24] = b"md5".ljust(16, b"\0")  # another algorithm
    path.write_bytes(bytes(data))
    store = DigestStore(str(path), MiB)
    assert store.fresh and store.get(0) == UNKNOWN_DIGEST
    store.close()
    path.write_bytes(path.read_bytes()[:-1])  # truncated v2
    store = DigestStore(str(path), MiB)
    assert store.fresh and store.known_count() == 0
    store.close()


def test_stdlib_fallback_without_xxhash(tmp_path: Path) -> None:
    """On a source without xxhash (the agent runs on the stdlib alone) the digests are truncated sha256, and
    a file written by an agent with the other algorithm starts over instead of being misread."""
    image = make_image(tmp_path / "d.img", MiB, [(0, MiB)])
    path = tmp_path / "d.digests"
    store = DigestStore(str(path), MiB)
    with DiskReaderCtx(image) as reader:
        record(store, reader)
    store.close()
    code = f"""
import sys
sys.modules["xxhash"] = None  # import fails as if not installed
from rehost.agent.rescan import FAST_ALGORITHM, FULL_MASK, DigestStore, DiskReader, scan
assert FAST_ALGORITHM == "sha256_128+64", FAST_ALGORITHM
store, reader = DigestStore({str(path)!r}, {MiB}), DiskReader({str(image)!r})
assert store.fresh
for c in scan(reader, store):
    store.set_entry(c.index, c.digest, c.blocks)
with open({str(image)!r}, "r+b") as f:
    f.seek(5 * 65536 + 3 * 4096)
    f.write(b"x")
print([(c.index, c.mask) for c in scan(reader, store)])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(5, 8)]"


class DiskReaderCtx:
    def __init__(self, path: Path) -> None:
        self.reader = DiskReader(str(path))

    def __enter__(self) -> DiskReader:
        return self.reader

    def __exit__(self, *exc: object) -> None:
        self.reader.close()


def test_digest_file_holds_block_entries_only_for_data(tmp_path: Path) -> None:
    """Block entries of zero and never-sent chunks are implied: the digest file of a mostly empty disk is
    sparse, and what it records survives a reopen."""
    image = make_image(tmp_path / "d.img", 256 * MiB, [(8 * MiB, 2 * MiB)])
    path = tmp_path / "d.digests"
    store = DigestStore(str(path), 256 * MiB)
    with DiskReaderCtx(image) as reader:
        record(store, reader)
        store.close()
        st = path.stat()
        assert st.st_size == 40 + 4096 * (16 + 128)  # apparent: every entry has its place
        assert st.st_blocks * 512 <= 128 * 1024  # allocated: chunk entries + 32 data chunks' block entries
        store = DigestStore(str(path), 256 * MiB)
        assert not store.fresh and list(scan(reader, store)) == []
        with open(image, "r+b") as f:
            f.seek(9 * MiB + 4096)
            f.write(b"y")
        assert [(c.index, c.mask) for c in scan(reader, store)] == [(9 * 16, 2)]
    store.close()
