"""Cross-process locks on the chunk store: ``flock`` on one lock file.

Writers of chunks and manifests, and readers that follow manifests to chunks, hold the lock shared;
garbage collection holds it exclusive, so it never removes a chunk that a snapshot being created or a
stream being read still needs. ``flock`` (not ``fcntl``'s record locks) because its locks belong to an
open file description: two holders in one process are as separate as two processes, and closing one
descriptor does not drop another's lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rehost.errors import StorageError

_POLL = 0.05


class StoreLock:
    """The lock file of one chunk store (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def acquire(self, exclusive: bool, timeout: float | None = None) -> int:
        """Take the lock and return the descriptor that holds it (give it to ``release``).

        Waits up to ``timeout`` seconds (forever if None) and then raises StorageError.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self.path}: {exc.strerror}") from exc
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        what = "exclusive" if exclusive else "shared"
                        raise StorageError(
                            f"chunk store is busy: could not take the {what} lock within {timeout:g} s"
                        ) from None
                    time.sleep(_POLL)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def release(fd: int) -> None:
        """Drop the lock held by ``fd`` (closing the descriptor releases it)."""
        os.close(fd)

    @contextmanager
    def shared(self, timeout: float | None = None) -> Iterator[None]:
        fd = self.acquire(False, timeout)
        try:
            yield
        finally:
            self.release(fd)

    @contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[None]:
        fd = self.acquire(True, timeout)
        try:
            yield
        finally:
            self.release(fd)
