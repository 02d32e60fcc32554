"""Files made of byte ranges of other files, served through FUSE (the host has no device-mapper).

A logical volume spread over several segments or physical volumes is, for the loop driver, one file:
`MappedFiles` mounts a small FUSE file system whose every file is a list of `rehost.conversion.lvm.Extent`
(reads and writes go straight to the disk files with ``pread``/``pwrite``), so ``losetup`` can attach it
and the kernel can mount the file system in it. The FUSE loop runs in a thread of this process.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from rehost.conversion.blockdev import CommandFailed, run
from rehost.conversion.lvm import Extent
from rehost.errors import ConversionError

log = logging.getLogger(__name__)

# libfuse's fuse_main, which fusepy runs, installs its own handlers for SIGHUP, SIGINT and SIGTERM and
# ignores SIGPIPE while it runs, and on its way out sets to the default action every one it finds still
# its own, SIGPIPE included, which Python itself ignores: a process that mounted a map would then die of
# the next write to a closed socket, and lose its own SIGTERM handling. The dispositions in force before
# the first map is mounted are put back once its loop runs and again after the last map is gone.
_FUSE_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)
_libc = ctypes.CDLL(None, use_errno=True)
_signals_lock = threading.Lock()
_signals_saved: dict[int, ctypes.Array[ctypes.c_char]] = {}
_maps_open = 0


def _dispositions() -> dict[int, ctypes.Array[ctypes.c_char]]:
    """The kernel's action for each of `_FUSE_SIGNALS`, as opaque ``struct sigaction`` buffers."""
    out = {}
    for sig in _FUSE_SIGNALS:
        buf = ctypes.create_string_buffer(256)  # struct sigaction is 152 bytes on x86_64 glibc
        if _libc.sigaction(int(sig), None, buf) != 0:
            raise OSError(ctypes.get_errno(), "sigaction")
        out[int(sig)] = buf
    return out


def _restore_signals() -> None:
    for sig, buf in _signals_saved.items():
        _libc.sigaction(sig, buf, None)


def _map_opening() -> None:
    global _maps_open
    with _signals_lock:
        if _maps_open == 0:
            _signals_saved.clear()
            _signals_saved.update(_dispositions())
        _maps_open += 1


def _map_running() -> None:
    with _signals_lock:
        _restore_signals()


def _map_closed() -> None:
    global _maps_open
    with _signals_lock:
        _restore_signals()
        _maps_open -= 1


class ReadSource(Protocol):
    """A read-only file's bytes from elsewhere (a snapshot's disk in the chunk store)."""

    size: int

    def pread(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class _Source:
    """A `ReadSource` as a mapped file: reads served (one at a time), writes refused."""

    def __init__(self, source: ReadSource) -> None:
        self.source, self.size = source, source.size
        self.fds: dict[Path, int] = {}
        self._lock = threading.Lock()

    def io(self, offset: int, length: int, data: bytes | None = None) -> bytes | int:
        if data is not None:
            raise OSError(errno.EROFS, "read-only")
        with self._lock:
            return self.source.pread(offset, max(0, min(length, self.size - offset)))

    def close(self) -> None:
        self.source.close()


class _Mapped:
    def __init__(self, extents: Sequence[Extent], read_only: bool = False) -> None:
        self.extents = list(extents)
        self.starts = []
        pos = 0
        for e in self.extents:
            self.starts.append(pos)
            pos += e.length
        self.size = pos
        self.read_only = read_only
        self.fds = {p: os.open(p, os.O_RDONLY if read_only else os.O_RDWR) for p in {e.path for e in self.extents}}

    def io(self, offset: int, length: int, data: bytes | None = None) -> bytes | int:
        out, done = [], 0
        while done < length and offset + done < self.size:
            pos = offset + done
            i = bisect.bisect_right(self.starts, pos) - 1
            e = self.extents[i]
            within = pos - self.starts[i]
            n = min(length - done, e.length - within)
            fd = self.fds[e.path]
            if data is None:
                chunk = os.pread(fd, n, e.offset + within)
                out.append(chunk.ljust(n, b"\0"))
            else:
                os.pwrite(fd, data[done:done + n], e.offset + within)
            done += n
        return b"".join(out) if data is None else done

    def close(self) -> None:
        for fd in self.fds.values():
            if not self.read_only:
                os.fsync(fd)
            os.close(fd)


class MappedFiles:
    """Mount ``files`` (name -> extents, or a `ReadSource`) at ``mountpoint`` until `close`; ``path(name)``
    is each file. ``read_only`` opens the extents' files read-only and refuses writes."""

    def __init__(self, mountpoint: Path, files: Mapping[str, Sequence[Extent] | ReadSource], *,
                 read_only: bool = False) -> None:
        from fuse import FUSE, FuseOSError, Operations  # fusepy, over the host's libfuse2

        self.mountpoint = Path(mountpoint)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, _Mapped | _Source] = {
            name: _Source(f) if hasattr(f, "pread") else _Mapped(f, read_only)  # type: ignore[arg-type]
            for name, f in files.items()}
        files_ = self.files
        now = time.time()

        running = threading.Event()

        class Ops(Operations):  # type: ignore[misc]
            use_ns = True

            def init(self, path: str) -> None:  # called by the loop, after fuse_main set its handlers
                running.set()

            def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
                if path == "/":
                    return {"st_mode": stat.S_IFDIR | 0o700, "st_nlink": 2, "st_atime": now, "st_mtime": now,
                            "st_ctime": now}
                f = files_.get(path[1:])
                if f is None:
                    raise FuseOSError(errno.ENOENT)
                return {"st_mode": stat.S_IFREG | (0o400 if read_only else 0o600), "st_nlink": 1, "st_size": f.size, "st_atime": now,
                        "st_mtime": now, "st_ctime": now}

            def readdir(self, path: str, fh: Any) -> list[str]:
                return [".", "..", *files_]

            def open(self, path: str, flags: int) -> int:
                if path[1:] not in files_:
                    raise FuseOSError(errno.ENOENT)
                return 0

            def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
                try:
                    return files_[path[1:]].io(offset, size)  # type: ignore[return-value]
                except Exception as exc:  # a chunk that fails its check: the read fails, nothing is served
                    log.error("read of %s at %d failed: %s", path, offset, exc)
                    raise FuseOSError(errno.EIO) from exc

            def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
                f = files_[path[1:]]
                if read_only or isinstance(f, _Source):
                    raise FuseOSError(errno.EROFS)
                if offset + len(data) > f.size:
                    raise FuseOSError(errno.ENOSPC)
                return f.io(offset, len(data), data)  # type: ignore[return-value]

            def truncate(self, path: str, length: int, fh: Any = None) -> None:
                if length != files_[path[1:]].size:
                    raise FuseOSError(errno.EPERM)

            def flush(self, path: str, fh: Any) -> None:
                return None

            def fsync(self, path: str, datasync: int, fh: Any) -> None:
                for fd in files_[path[1:]].fds.values():
                    if not read_only:
                        os.fsync(fd)

        self._thread = threading.Thread(
            target=lambda: FUSE(Ops(), str(self.mountpoint), foreground=True, nothreads=False,
                                direct_io=False, fsname="rehost-lvm"),
            name="rehost-fusemap", daemon=True)
        _map_opening()
        self._thread.start()
        deadline = time.monotonic() + 10
        while not (running.is_set() and os.path.ismount(self.mountpoint)):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread.join(timeout=5)
                _map_closed()
                self._close_files()
                raise ConversionError(f"could not mount the FUSE map at {self.mountpoint} (is /dev/fuse there?)")
            time.sleep(0.02)
        _map_running()

    def path(self, name: str) -> Path:
        return self.mountpoint / name

    def _close_files(self) -> None:
        for f in self.files.values():
            f.close()

    def close(self) -> None:
        for attempt in range(20):  # a loop device just detached may hold the file a moment longer
            if not os.path.ismount(self.mountpoint):
                break
            try:
                run(["umount", str(self.mountpoint)], timeout=60)
                break
            except CommandFailed as exc:
                if attempt == 19:
                    log.error("unmounting the FUSE map %s failed: %s", self.mountpoint, exc)
                    run(["umount", "--lazy", str(self.mountpoint)], timeout=60)
                time.sleep(0.1 * (attempt + 1))
        self._thread.join(timeout=30)
        _map_closed()
        self._close_files()
