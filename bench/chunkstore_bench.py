"""Snapshot throughput of the chunk store (`rehost.chunkstore`).

Builds two 1 GiB sparse staging images: "realistic" (a tar stream of /usr/lib written into the image at
a few places, the rest holes: about 900 MiB of data) and "random" (1 GiB of incompressible bytes). For
each, times ``SnapshotStore.create`` of a full snapshot into a fresh store (so every chunk is hashed,
compressed and written, with fsync), an incremental snapshot with 1% of the chunks dirty, a second full
snapshot into the same store (every chunk is a dedup hit), and a raw export. Prints medians in MiB/s of
the disk size.

    .venv/bin/python bench/chunkstore_bench.py --runs 3 [--size-mib 1024] [--workdir /tmp]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rehost.chunkstore import CHUNK_SIZE
from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource

MiB = 1024 * 1024
SID = "s-0000000000000bench"


def realistic_image(path: Path, size: int) -> int:
    """Write a tar of /usr/lib into ``path`` in four extents separated by holes; return data bytes."""
    extent = (size - 4 * 24 * MiB) // 4  # leave 24 MiB holes between the extents
    written = 0
    tar = subprocess.Popen(
        ["tar", "-cf", "-", "-C", "/usr", "lib"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert tar.stdout is not None
    with open(path, "wb") as f:
        f.truncate(size)
        for k in range(4):
            f.seek(k * (extent + 24 * MiB) + 24 * MiB)
            left = extent
            while left:
                block = tar.stdout.read(min(left, 4 * MiB))
                if not block:
                    break
                f.write(block)
                left -= len(block)
                written += len(block)
    tar.kill()
    tar.wait()
    return written


def random_image(path: Path, size: int) -> int:
    rng = random.Random(1)
    with open(path, "wb") as f:
        for _ in range(size // (16 * MiB)):
            f.write(rng.randbytes(16 * MiB))
    return size


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def drop_cache(path: Path) -> None:
    """Evict the image from the page cache where allowed, so reads are not all memory copies."""
    try:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    except OSError:
        pass


def bench_image(workdir: Path, image: Path, size: int, runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {
        "full": [],
        "incremental 1%": [],
        "full, all dedup": [],
        "export raw": [],
    }
    n = size // CHUNK_SIZE
    for run in range(runs):
        data_dir = workdir / f"data-{run}"
        data_dir.mkdir()
        try:
            with SnapshotStore.open(data_dir) as store:
                drop_cache(image)
                results["full"].append(
                    timed(lambda: store.create(SID, {"/dev/sda": VolumeSource(image, size, None)}))
                )
                dirty = set(random.Random(run).sample(range(n), n // 100))
                with open(image, "r+b") as f:  # rewrite the dirty chunks with fresh content
                    for c in dirty:
                        f.seek(c * CHUNK_SIZE)
                        f.write(os.urandom(CHUNK_SIZE // 2))
                incremental = {"/dev/sda": VolumeSource(image, size, dirty)}
                results["incremental 1%"].append(timed(lambda: store.create(SID, incremental)))  # noqa: B023
                results["full, all dedup"].append(
                    timed(
                        lambda: store.create(
                            "s-0000000000000copy", {"/dev/sda": VolumeSource(image, size, None)}
                        )
                    )
                )
                snap = store.latest(SID)
                assert snap is not None
                out = workdir / "export.raw"
                results["export raw"].append(
                    timed(lambda: store.export(SID, snap.snapshot_id, "/dev/sda", out))  # noqa: B023
                )
                out.unlink()
                stats = store.chunks.stats()
                print(
                    f"    run {run}: {stats.chunks} chunks, {stats.raw_bytes / MiB:.0f} MiB raw -> "
                    f"{stats.pack_bytes / MiB:.0f} MiB in {stats.packs} packs",
                    flush=True,
                )
        finally:
            shutil.rmtree(data_dir)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    size = args.size_mib * MiB
    print(f"cpus: {os.cpu_count()}, disk size {args.size_mib} MiB, runs {args.runs}")
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="chunkstore-bench-") as tmp:
        workdir = Path(tmp)
        for label, make in (("realistic (/usr/lib tar)", realistic_image), ("random", random_image)):
            image = workdir / "disk.img"
            data = make(image, size)
            print(f"{label}: {data / MiB:.0f} MiB of data in a {size // MiB} MiB sparse image", flush=True)
            for what, times in bench_image(workdir, image, size, args.runs).items():
                med = statistics.median(times)
                print(
                    f"  {what:<18} median {size / MiB / med:8.0f} MiB/s  ({med:.2f} s; runs {', '.join(f'{t:.2f}' for t in times)})"
                )
            image.unlink()


if __name__ == "__main__":
    main()
