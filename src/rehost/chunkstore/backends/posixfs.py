"""A backend on a local POSIX directory: one file per object.

Atomic, durable put: write a temporary file in the target directory, fsync it, rename it over the name,
fsync the directory. Temporary files carry a ``.tmp-`` infix, so ``list`` skips them and a crash leaves
only such litter, which ``cleanup_temporaries`` removes.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from rehost.chunkstore.backends.base import Backend, ObjectNotFound, check_name
from rehost.errors import StorageError

_TMP = ".tmp-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PosixFS(Backend):
    """Objects as files under ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(root)
        if create:
            try:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create chunk store directory {self.root}: {exc.strerror}"
                ) from exc
        elif not self.root.is_dir():
            raise StorageError(f"chunk store directory {self.root} does not exist")

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def _mkdirs(self, directory: Path) -> None:
        """Create ``directory`` and its missing parents, each made durable in its own parent."""
        missing: list[Path] = []
        d = directory
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                continue  # another process made it first
            _fsync_dir(d.parent)

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        path = self._path(name)
        tmp = path.with_name(f"{path.name}{_TMP}{secrets.token_hex(6)}")
        try:
            self._mkdirs(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write {name}: {exc.strerror or exc}") from exc

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        try:
            with open(path, "rb", buffering=0) as f:
                if length is None:
                    f.seek(offset)
                    return f.read()
                return os.pread(f.fileno(), length, offset)
        except FileNotFoundError as exc:
            raise ObjectNotFound(name) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {name}: {exc.strerror or exc}") from exc

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError as exc:
            raise ObjectNotFound(name) from exc
        except OSError as exc:
            raise StorageError(f"cannot delete {name}: {exc.strerror or exc}") from exc

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def list(self, namespace: str) -> Iterator[str]:
        path = self._path(namespace)
        try:
            entries = os.listdir(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return
            raise StorageError(f"cannot list {namespace}: {exc.strerror or exc}") from exc
        for entry in entries:
            if _TMP not in entry:
                yield entry

    def cleanup_temporaries(self, namespace: str) -> int:
        """Remove temporary files a crashed ``put`` left under ``namespace`` (recursively); count them."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self._path(namespace)):
            for f in files:
                if _TMP in f:
                    Path(dirpath, f).unlink(missing_ok=True)
                    removed += 1
        return removed
