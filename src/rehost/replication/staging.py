"""Staging volumes: one sparse file per source disk, plus what the next snapshot must include.

Layout under ``D/staging/<source-server-id>/``::

    <disk_key>.img     the disk's bytes, a sparse file exactly the disk's size
    <disk_key>.dirty   bitmap of the CHUNK_SIZE chunks written since the last snapshot (bit i = chunk i)
    state.json         per disk: size, durable_seq, all_dirty; and whether writes are in flight

Guarantees a caller can rely on:

* ``commit(seq)`` returns only after the data of every write before it and the dirty bitmaps are on stable
  storage (fdatasync, then atomic replace + fsync of the metadata), recording ``seq`` as each disk's
  ``durable_seq``.
* Writes of DIRECT_MIN (256 KiB) and more reach the file with O_DIRECT from page-aligned buffers the
  caller reuses (`WriteBuffer`) where the file system allows, so a stream of writes does not churn the
  page cache: on a virtual machine whose host takes back freed guest memory, every fresh page-cache page
  is a host fault, and buffered writes into a new staging file ran 2-6x slower than direct ones
  (BENCHMARKS.md, "Replication"). Reads go through the page cache, which the kernel keeps coherent with
  direct writes.
* After a crash, the dirty set on disk covers every chunk written since the last snapshot: writes after the
  last commit are resent by the agent (their seq is above ``durable_seq``), and a crash with writes in
  flight marks every disk ``all_dirty`` so nothing unrecorded can be missed by the next snapshot.

Not thread-safe: the replication server serialises access per source server with a lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import logging
import mmap
import os
import re
from collections.abc import Sequence
from pathlib import Path

from rehost.errors import ReplicationError
from rehost.fsutil import atomic_write
from rehost.replication.protocol import CHUNK_SIZE, DISK_NEW, MAX_DATA, BytesLike, DiskInfo, DiskResume, zeros

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
DIRECT_ALIGN = 4096  # offsets and lengths of O_DIRECT writes (any logical block size up to 4 KiB)
# Smaller writes (scattered chunks and blocks: rescans, tracked writes) go through the page cache, where
# they cost no device round trip each and are written together at the next commit: a stream of 64 KiB
# writes ran at 0.51 GiB/s buffered against 0.39 GiB/s direct.
DIRECT_MIN = 256 * 1024
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int


class StagingBusy(ReplicationError):
    """Another process holds this source server's staging volumes."""


def disk_key(device_name: str) -> str:
    """The file-name form of a device name: ``/dev/sda`` -> ``dev_sda``, ``/dev/mapper/vg-root`` ->
    ``dev_mapper_vg-root``. Anything but letters, digits, ``.``, ``-`` and ``_`` becomes ``_``."""
    key = re.sub(r"[^A-Za-z0-9._-]", "_", device_name.strip("/").replace("/", "_"))
    if not key or key.strip(".") == "":
        raise ReplicationError(f"invalid device name {device_name!r}")
    return key


def staging_dir(data_dir: Path, source_server_id: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", source_server_id):
        raise ReplicationError(f"invalid source server ID {source_server_id!r}")
    return Path(data_dir) / "staging" / source_server_id


class WriteBuffer:
    """A page-aligned buffer (an anonymous mapping) for `StagingVolume.write_aligned`: a
    write's bytes are copied in, then written with O_DIRECT. A buffer is reused write after write, so its
    pages stay resident."""

    def __init__(self, size: int = MAX_DATA) -> None:
        self._map = mmap.mmap(-1, size)
        self.size = size

    def load(self, data: BytesLike) -> memoryview:
        """A view of the buffer holding a copy of ``data`` (valid until the next ``load``)."""
        n = len(data)
        if n > self.size:
            raise ValueError(f"{n} bytes do not fit a {self.size}-byte write buffer")
        self._map[:n] = data
        return memoryview(self._map)[:n]


class StagingVolume:
    """One disk's staging file, opened read-write. Offsets are checked by the caller (the server)."""

    def __init__(
        self, device_name: str, path: Path, size: int, durable_seq: int, all_dirty: bool, new: bool
    ) -> None:
        self.device_name = device_name
        self.path = path
        self.size = size
        self.durable_seq = durable_seq
        self.all_dirty = all_dirty
        self.new = new
        self.chunks = (size + CHUNK_SIZE - 1) // CHUNK_SIZE
        self.dirty = bytearray((self.chunks + 7) // 8)
        self.dirty_saved = False  # the .dirty file matches ``dirty``
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if new or os.fstat(self.fd).st_size != size:
                os.ftruncate(self.fd, 0)  # a new or resized disk starts empty (and sparse)
                os.ftruncate(self.fd, size)
        except OSError:
            os.close(self.fd)
            raise
        self.direct_fd = _open_direct(path)  # -1 where the file system has no O_DIRECT

    @property
    def dirty_path(self) -> Path:
        return self.path.with_suffix(".dirty")

    def load_dirty(self) -> bool:
        """Read the persisted dirty bitmap; False if it is missing or does not fit this disk."""
        try:
            data = self.dirty_path.read_bytes()
        except FileNotFoundError:
            return False
        if len(data) != len(self.dirty):
            return False
        self.dirty[:] = data
        self.dirty_saved = True
        return True

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        written = os.pwrite(self.fd, data, offset)
        if written != len(data):  # pwrite on a regular file writes all unless the disk is full
            raise OSError(errno.ENOSPC, f"short write to {self.path}")
        self.mark_dirty(offset, len(data))

    def write_aligned(self, offset: int, data: memoryview) -> None:
        """Write ``data``, a view of a `WriteBuffer`: when it is at least DIRECT_MIN bytes, its 4 KiB-aligned
        part with O_DIRECT where the file system allows and a remainder (the end of a disk whose size is not
        a multiple of 4 KiB) buffered; smaller writes buffered."""
        n = len(data) - len(data) % DIRECT_ALIGN
        if self.direct_fd < 0 or offset % DIRECT_ALIGN or n < DIRECT_MIN:
            self.write(offset, data)
            return
        try:
            written = os.pwrite(self.direct_fd, data[:n], offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # the device wants a larger alignment than 4 KiB: buffered from now on
            log.info("%s: O_DIRECT refused (%s); writing through the page cache", self.path, exc)
            os.close(self.direct_fd)
            self.direct_fd = -1
            self.write(offset, data)
            return
        if written != n:
            raise OSError(errno.ENOSPC, f"short write to {self.path}")
        if n < len(data):
            self.write(offset + n, data[n:])
        self.mark_dirty(offset, len(data))

    def write_zeros(self, offset: int, length: int) -> None:
        """Make ``length`` bytes at ``offset`` zero, punching a hole where the file system allows (staging
        volumes stay sparse)."""
        if _fallocate is not None and length > 0:
            mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
            if _fallocate(self.fd, mode, offset, length) == 0:
                self.mark_dirty(offset, length)
                return
        pos, end = offset, offset + length
        while pos < end:
            n = min(end - pos, CHUNK_SIZE * 16)
            self.write(pos, zeros(n) if n <= CHUNK_SIZE else bytes(n))
            pos += n
        self.mark_dirty(offset, length)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def mark_dirty(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        self.dirty_saved = False
        first, last = offset // CHUNK_SIZE, (offset + length - 1) // CHUNK_SIZE
        dirty = self.dirty
        for chunk in range(first, last + 1):
            dirty[chunk >> 3] |= 1 << (chunk & 7)

    def dirty_chunks(self) -> list[int] | None:
        """Chunk indexes written since the last snapshot, or None when any chunk may have changed."""
        if self.all_dirty:
            return None
        out: list[int] = []
        for byte_index, byte in enumerate(self.dirty):
            if byte:
                base = byte_index << 3
                out.extend(base + bit for bit in range(8) if byte & (1 << bit))
        return out

    def has_changes(self) -> bool:
        return self.all_dirty or any(self.dirty)

    def close(self) -> None:
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
            self.direct_fd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SourceStaging:
    """The staging volumes of one source server and their persisted state."""

    def __init__(self, data_dir: Path, source_server_id: str) -> None:
        self.source_server_id = source_server_id
        self.dir = staging_dir(data_dir, source_server_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        # one writer per source server, across processes: a second replication server must not interleave
        self._lock_fd = os.open(
            self.dir / "lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600
        )
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            raise StagingBusy(
                f"the staging volumes of {source_server_id} are in use by another process"
            ) from exc
        self.volumes: list[StagingVolume] = []
        self.in_flight = False  # writes since the last commit (persisted, see module docstring)
        self._state = self._read_state()
        self._open_known()

    # -- state -------------------------------------------------------------------------------------------

    def _read_state(self) -> dict[str, object]:
        try:
            state = json.loads((self.dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return {"disks": {}, "in_flight": False}
        except (OSError, ValueError) as exc:
            raise ReplicationError(f"unreadable staging state {self.dir / STATE_FILE}: {exc}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("disks"), dict):
            raise ReplicationError(f"unexpected staging state in {self.dir / STATE_FILE}")
        return state

    def _open_known(self) -> None:
        """Open the volumes of the last HELLO, restoring dirty sets (all dirty after an unclean stop)."""
        unclean = bool(self._state.get("in_flight"))
        disks = self._state["disks"]
        assert isinstance(disks, dict)
        for device, info in disks.items():
            path = self.dir / f"{disk_key(device)}.img"
            if not path.exists():
                continue  # somebody removed it: the next HELLO re-creates it as new
            vol = StagingVolume(
                device, path, int(info["size"]), int(info["durable_seq"]), bool(info["all_dirty"]), False
            )
            if not vol.load_dirty() or unclean:
                vol.all_dirty = True
            self.volumes.append(vol)
        if unclean:
            log.warning(
                "%s: staging was not cleanly committed; its next snapshot reads every chunk",
                self.source_server_id,
            )
            self._persist()  # record the all_dirty flags before anything else happens

    def _persist(self) -> None:
        state = {
            "disks": {
                v.device_name: {"size": v.size, "durable_seq": v.durable_seq, "all_dirty": v.all_dirty}
                for v in self.volumes
            },
            "in_flight": self.in_flight,
        }
        atomic_write(self.dir / STATE_FILE, json.dumps(state, indent=1).encode())
        _fsync_dir(self.dir)
        self._state = state

    # -- sessions ----------------------------------------------------------------------------------------

    def attach(self, disks: Sequence[DiskInfo]) -> list[DiskResume]:
        """Make the volumes match a HELLO's disks (in its order) and return their resume info.

        A disk seen before with the same size keeps its data and ``durable_seq``; a new or resized one is
        (re)created empty with ``durable_seq`` 0 and the DISK_NEW flag, and the agent must send it whole.
        """
        known = {v.device_name: v for v in self.volumes}
        volumes = []
        for disk in disks:
            vol = known.pop(disk.device_name, None)
            if vol is not None and vol.size == disk.size:
                vol.new = False
            else:
                if vol is not None:
                    vol.close()
                path = self.dir / f"{disk_key(disk.device_name)}.img"
                vol = StagingVolume(disk.device_name, path, disk.size, 0, True, True)
            volumes.append(vol)
        for gone in known.values():  # no longer reported by the agent: out of snapshots, file kept
            gone.close()
        self.volumes = volumes
        self._persist()
        return [DiskResume(v.durable_seq, DISK_NEW if v.new else 0) for v in volumes]

    def before_write(self) -> None:
        """Call before the first write after a commit: records that writes are in flight."""
        if not self.in_flight:
            self.in_flight = True
            self._persist()

    def commit(self, seq: int) -> None:
        """Make everything written so far durable and record ``seq`` (see the module docstring)."""
        self._make_durable(seq)

    def _make_durable(self, seq: int | None) -> None:
        for vol in self.volumes:
            os.fdatasync(vol.fd)
        for vol in self.volumes:
            if not vol.dirty_saved:
                atomic_write(vol.dirty_path, bytes(vol.dirty))
                vol.dirty_saved = True
            if seq is not None:
                vol.durable_seq = max(vol.durable_seq, seq)
        self.in_flight = False
        self._persist()

    def snapshot_done(self) -> None:
        """The snapshot store now holds the volumes as they are: start a new dirty set."""
        for vol in self.volumes:
            vol.dirty[:] = bytes(len(vol.dirty))
            vol.all_dirty = False
            atomic_write(vol.dirty_path, bytes(vol.dirty))
            vol.dirty_saved = True
        self._persist()

    def has_changes(self) -> bool:
        return any(v.has_changes() for v in self.volumes)

    def close(self) -> None:
        """Close the volumes and release the lock. Writes after the last commit are made durable with their
        dirty sets first (``durable_seq`` stays: the agent resends them anyway), so that whoever opens the
        staging next need not read every chunk for its next snapshot."""
        if self.in_flight and self._lock_fd >= 0:
            try:
                self._make_durable(None)
            except OSError as exc:  # left marked in flight: the next open treats every chunk as dirty
                log.warning("%s: staging not closed cleanly: %s", self.source_server_id, exc)
        for vol in self.volumes:
            vol.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1


def _open_direct(path: Path) -> int:
    """A second descriptor of ``path`` for O_DIRECT writes, or -1 where that is not supported."""
    flags = getattr(os, "O_DIRECT", 0)
    if not flags:
        return -1
    try:
        return os.open(path, os.O_WRONLY | flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
