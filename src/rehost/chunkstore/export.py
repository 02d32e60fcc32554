"""Reading a snapshot disk back: a seekable stream, and export to a raw (sparse) or qcow2 file."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

from rehost.chunkstore import CHUNK_SIZE
from rehost.chunkstore.manifest import DiskTable
from rehost.chunkstore.store import ChunkStore
from rehost.errors import InvalidInput, SnapshotError, StorageError

FORMATS = ("raw", "qcow2")
_BATCH = 64  # chunks fetched in parallel per step of an export (4 MiB)


class SnapshotReader(io.RawIOBase):
    """A read-only, seekable view of one snapshot disk. Holes read as zeros.

    Holds the chunk store's shared lock (``lock_fd``) until closed, so garbage collection cannot remove
    a chunk under it: close it (or use it in a ``with`` block) when done.
    """

    def __init__(self, chunks: ChunkStore, table: DiskTable, lock_fd: int | None = None) -> None:
        super().__init__()
        self._chunks = chunks
        self._table = table
        self._lock_fd = lock_fd
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    @property
    def size(self) -> int:
        return self._table.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._table.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._pos >= self._table.size:
            return 0
        index, within = divmod(self._pos, CHUNK_SIZE)
        chunk = self._chunk(index)
        n = min(len(buffer), len(chunk) - within)
        memoryview(buffer)[:n] = chunk[within : within + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed and self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        super().close()

    def _chunk(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        digest = self._table.digest(index)
        if digest is None:
            data = bytes(self._table.chunk_length(index))
        else:
            try:
                data = self._chunks.get(digest)
            except StorageError as exc:
                raise SnapshotError(f"cannot read chunk {index} of the snapshot disk: {exc.message}") from exc
        self._cached = (index, data)
        return data


def export_disk(chunks: ChunkStore, table: DiskTable, output_path: Path, fmt: str) -> None:
    """Write a snapshot disk to ``output_path`` as ``raw`` (holes left unwritten, so a regular file is
    sparse) or ``qcow2`` (through ``qemu-img convert``). The caller holds the store lock shared."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r} (use one of: {', '.join(FORMATS)})")
    output_path = Path(output_path)
    if fmt == "raw":
        _export_raw(chunks, table, output_path)
        return
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise SnapshotError("qcow2 export needs qemu-img (Debian package qemu-utils)")
    tmp = output_path.with_name(f".{output_path.name}.raw-export")
    try:
        _export_raw(chunks, table, tmp)
        proc = subprocess.run(
            [qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(tmp), str(output_path)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise SnapshotError(f"qemu-img convert failed: {lines[-1] if lines else proc.returncode}")
    finally:
        tmp.unlink(missing_ok=True)


def _export_raw(chunks: ChunkStore, table: DiskTable, output_path: Path) -> None:
    try:
        fd = os.open(output_path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SnapshotError(f"cannot write {output_path}: {exc.strerror}") from exc
    try:
        # A block device (a loop device to convert in place) cannot be truncated: its holes are
        # written as zeros instead.
        is_device = stat.S_ISBLK(os.fstat(fd).st_mode)
        if not is_device:
            os.ftruncate(fd, 0)
            os.ftruncate(fd, table.size)
        pool = chunks.executor()
        for start in range(0, table.chunk_count, _BATCH):
            indexes = range(start, min(start + _BATCH, table.chunk_count))
            digests = [table.digest(i) for i in indexes]
            wanted = [(i, d) for i, d in zip(indexes, digests, strict=True) if d is not None]
            datas = pool.map(lambda item: chunks.get(item[1]), wanted)
            for (i, _), data in zip(wanted, datas, strict=True):
                os.pwrite(fd, data, i * CHUNK_SIZE)
            if is_device:
                for i, d in zip(indexes, digests, strict=True):
                    if d is None:
                        os.pwrite(fd, bytes(table.chunk_length(i)), i * CHUNK_SIZE)
        os.fsync(fd)
    except StorageError as exc:
        raise SnapshotError(f"cannot export the snapshot disk: {exc.message}") from exc
    except OSError as exc:
        raise SnapshotError(f"cannot write {output_path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
