"""Changed-block tracking through tracefs on a real loop device with a mounted ext4 (root only)."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehost.agent.tracker import BlockTracker

from .conftest import MiB

pytestmark = pytest.mark.root

FIBMAP = 1
CHUNK = 65536


def physical_chunks(path: Path, fs_block: int = 4096) -> set[int]:
    """The device chunks holding a file's data, from the file system's own block map (FIBMAP)."""
    chunks = set()
    with open(path, "rb") as f:
        blocks = (os.fstat(f.fileno()).st_size + fs_block - 1) // fs_block
        for logical in range(blocks):
            phys = struct.unpack("i", fcntl.ioctl(f.fileno(), FIBMAP, struct.pack("i", logical)))[0]
            if phys:
                chunks.add(phys * fs_block // CHUNK)
    return chunks


@pytest.fixture
def mounted(loop_device: tuple[str, Path], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    device, _ = loop_device
    subprocess.run(["mkfs.ext4", "-q", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", device], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "noatime", device, str(mnt)], check=True)
    try:
        yield device, mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _dev(device: str) -> tuple[int, int]:
    st = os.stat(device)
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def test_tracker_sees_every_written_chunk(mounted: tuple[str, Path]) -> None:
    device, mnt = mounted
    tracker = BlockTracker({0: _dev(device)}).start()
    try:
        files = []
        for i in range(20):
            path = mnt / f"file{i}"
            with open(path, "wb") as f:
                f.write(os.urandom(256 * 1024 + i * 4096))
                f.flush()
                os.fsync(f.fileno())
            files.append(path)
        subprocess.run(["sync"], check=True)
        time.sleep(0.5)  # let the reader thread drain trace_pipe
        dirty = tracker.take_dirty(0)
        lost = tracker.take_lost(0)
    finally:
        tracker.stop()
    wanted = set().union(*(physical_chunks(p) for p in files))
    assert not lost
    assert wanted and wanted <= dirty.keys()
    # Its own instance is gone afterwards.
    assert not any(n.startswith(f"rehost-{os.getpid()}-") for n in os.listdir("/sys/kernel/tracing/instances"))


def test_tracker_ignores_reads_and_other_devices(mounted: tuple[str, Path], tmp_path: Path) -> None:
    device, mnt = mounted
    data = os.urandom(MiB)
    (mnt / "f").write_bytes(data)
    subprocess.run(["sync"], check=True)
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
    tracker = BlockTracker({0: _dev(device)}).start()
    try:
        with open(device, "rb") as f:  # reads of the tracked device
            f.read(8 * MiB)
        other = tmp_path / "other.bin"  # writes elsewhere
        with open(other, "wb") as f:
            f.write(os.urandom(MiB))
            os.fsync(f.fileno())
        time.sleep(0.5)
        dirty = tracker.take_dirty(0)
    finally:
        tracker.stop()
    assert dirty == {}


def test_lost_events_mark_the_disk_for_rescan(loop_device: tuple[str, Path]) -> None:
    """When the trace buffer overflows (nobody reads it), the tracker says so instead of missing writes."""
    device, _ = loop_device
    tracker = BlockTracker({0: _dev(device)}, buffer_kb=4).start()
    try:
        assert not tracker.take_lost(0)
        tracker._stop.set()  # the reader stops consuming; the 4 KiB per-CPU buffer must overrun
        assert tracker._thread is not None
        tracker._thread.join(timeout=5)
        fd = os.open(device, os.O_WRONLY | os.O_DIRECT)
        try:
            import mmap

            buf = mmap.mmap(-1, 4096)
            buf.write(os.urandom(4096))
            for i in range(1000):
                os.pwritev(fd, [buf], (i % 16000) * 4096)
        finally:
            os.close(fd)
        assert tracker._loss_counters() > 0  # the kernel's overrun/dropped counters saw the loss
        assert tracker.take_lost(0)
    finally:
        tracker.stop()
