"""Staging volumes written directly (O_DIRECT from reused aligned buffers) where the file system allows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rehost.replication.staging import StagingVolume, WriteBuffer

MiB = 1024 * 1024


def _volume(path: Path, size: int) -> StagingVolume:
    return StagingVolume("/dev/sda", path, size, 0, False, True)


def test_aligned_writes_bypass_the_page_cache_on_ext4(tmp_path: Path) -> None:
    vol = _volume(tmp_path / "a.img", 8 * MiB)
    try:
        assert vol.direct_fd >= 0
        buf = WriteBuffer()
        data = os.urandom(4 * MiB)
        vol.write_aligned(MiB, buf.load(data))
        assert vol.read(MiB, 4 * MiB) == data  # the page cache stays coherent with the direct write
        assert vol.dirty_chunks() == list(range(16, 80))  # the next snapshot reads these 64 KiB chunks
    finally:
        vol.close()


@pytest.mark.parametrize("where", ["tmp", "shm"])
def test_direct_or_not_the_bytes_are_exact(tmp_path: Path, where: str) -> None:
    """On a file system without O_DIRECT (tmpfs on older kernels) writes fall back to the page cache."""
    root = tmp_path if where == "tmp" else Path("/dev/shm")
    if not root.is_dir():
        pytest.skip("no /dev/shm")
    path = root / f"rehost-staging-test-{os.getpid()}.img"
    size = 2 * MiB + 512
    vol = _volume(path, size)
    try:
        buf = WriteBuffer()
        expected = bytearray(size)
        # direct; unaligned; small (buffered); direct with a buffered tail at the disk's end
        for offset, length in [(0, MiB), (MiB + 512, 4096), (8192, 12288), (size - 262656, 262656)]:
            data = os.urandom(length)
            expected[offset : offset + length] = data
            vol.write_aligned(offset, buf.load(data))
        os.fdatasync(vol.fd)
        assert vol.read(0, size) == bytes(expected)
    finally:
        vol.close()
        path.unlink(missing_ok=True)


def test_a_write_larger_than_the_buffer_is_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        WriteBuffer(4096).load(bytes(8192))
