"""Helpers for the chunk store tests: sparse disk images with random and zero regions."""

from __future__ import annotations

import random
from pathlib import Path

from helpers import sha256_file  # noqa: F401 - re-exported for the chunk store tests
from rehost.chunkstore import CHUNK_SIZE
from rehost.chunkstore.backends.posixfs import PosixFS
from rehost.chunkstore.snapshots import SnapshotStore
from rehost.chunkstore.store import ChunkStore


def make_image(path: Path, size: int, regions: list[tuple[int, bytes]]) -> Path:
    """A sparse file of ``size`` bytes holding ``regions`` (offset, data); everything else is a hole."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in regions:
            f.seek(offset)
            f.write(data)
    return path


def rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def mixed_image(path: Path, seed: int = 1) -> Path:
    """8 MiB + 1000 bytes: random regions, compressible text, explicit zero writes, holes, and a
    partial last chunk."""
    text = b"".join(b"line %d of a log file\n" % i for i in range(20000))[: 3 * CHUNK_SIZE]
    return make_image(
        path,
        8 * 1024 * 1024 + 1000,
        [
            (0, rand(CHUNK_SIZE * 2 + 100, seed)),  # crosses chunk boundaries
            (5 * CHUNK_SIZE, text),
            (10 * CHUNK_SIZE, bytes(4 * CHUNK_SIZE)),  # zeros written as data, not holes
            (20 * CHUNK_SIZE + 7, rand(50_000, seed + 1)),
            (8 * 1024 * 1024 - 10, rand(1010, seed + 2)),  # into the partial last chunk
        ],
    )


def small_pack_store(data_dir: Path, pack_target: int = 256 * 1024) -> SnapshotStore:
    """A store whose packs fill after a few chunks, so tests see many packs."""
    root = data_dir / "chunks"
    return SnapshotStore(ChunkStore(PosixFS(root), root, pack_target=pack_target))
