"""Small file-system helpers shared by the control plane, the replication servers and the agent (which\ncarries this module: standard library only, Python 3.8)."""

from __future__ import annotations

import os
import stat
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


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private(data_dir: Path) -> None:
    """Create ``data_dir`` (mode 0700) if missing and take every group and other permission off it and off
    everything already in it (directories, files, sockets; symbolic links are left alone): the data
    directory holds the database, keys, TLS private keys and every source server's disks, which only the
    user running rehost may read. Files created afterwards get 0600 from the processes' umask (077, set by
    the CLI) or their explicit mode."""
    data_dir = Path(data_dir)
    data_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(data_dir, PRIVATE_DIR_MODE)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                    os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
            except FileNotFoundError:
                continue  # removed meanwhile (a replication server or job at work)


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist, and make it 0600 if it does: for files
    another library creates (SQLite gives its -wal and -shm files the database file's own mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return Path(path)
