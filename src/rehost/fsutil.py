"""Small file-system helpers shared by the control plane, the replication servers and the agent (which\ncarries this module: standard library only, Python 3.8)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def temp_name(path: str | Path) -> str:
    """A temporary name beside ``path`` that no other process or thread writing the same file uses, so two
    writers (an agent and a reinstall over its state directory, say) never rename each other's file."""
    path = Path(path)
    return str(path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"))


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new content, never a mix, and the new
    content is durable once this returns: a temporary file created with ``mode``, fsync, rename, and an
    fsync of the directory. Safe against concurrent writers in other processes (each has its own
    temporary name; the last rename wins)."""
    path = Path(path)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
