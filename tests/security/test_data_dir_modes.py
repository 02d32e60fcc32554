"""The data directory is its user's alone: 0700, and every file in it (database and its WAL, keys, TLS
material, chunk index, manifests, packs, staging volumes, logs) without any group or other permission.

The end-to-end case runs a real `rehost server` on a data directory an older rehost left world-readable,
replicates a real agent's disk until the server is READY_FOR_TEST (so a replication server, its TLS keys,
staging volumes and a snapshot in the chunk store exist), and walks the directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import free_port
from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource
from rehost.db.store import Store
from rehost.fsutil import make_private
from replication_control.conftest import (  # noqa: F401  (installer: session fixture)
    SILENCE,
    Agent,
    ControlPlane,
    MiB,
    _stop_control_plane,
    installer,
    make_image,
    wait_for,
)


def leaks(data_dir: Path) -> list[str]:
    """Every path under ``data_dir`` (itself included) with a group or other permission bit."""
    found = []
    for path in [data_dir, *data_dir.rglob("*")]:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # removed meanwhile
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            found.append(f"{path.relative_to(data_dir.parent)} {stat.filemode(st.st_mode)}")
    return found


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """This process's umask at the common 022, so only explicit modes keep files private."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_database_and_chunk_index_are_private_without_umask(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "data"
    make_private(data)
    store = Store(f"sqlite:///{data / 'rehost.db'}")
    with store.transaction() as conn:
        store.set_meta(conn, "probe", "1")
    disk = make_image(tmp_path / "disk.img", 4 * MiB, [(0, MiB)])
    with SnapshotStore.open(data) as chunks:
        chunks.create("s-0123456789abcdef0", {"/dev/sda": VolumeSource(disk, disk.stat().st_size, None)})
        names = {p.name for p in data.rglob("*")}  # while open: the -wal files exist
        assert {"rehost.db-wal", "rehost.db-shm", "index.db", "index.db-wal"} <= names, names
        assert leaks(data) == []
    assert leaks(data) == []
    store.close()


def test_make_private_fixes_an_existing_directory(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "data"
    (data / "old" / "deeper").mkdir(parents=True, mode=0o755)
    (data / "rehost.db").write_text("x")
    (data / "old" / "deeper" / "key.pem").write_text("x")
    (data / "run.sh").write_text("x")
    (data / "run.sh").chmod(0o755)
    os.symlink("/etc/hostname", data / "link")
    assert leaks(data)
    make_private(data)
    assert leaks(data) == []
    assert stat.S_IMODE((data / "run.sh").stat().st_mode) == 0o700  # the owner keeps what it had
    assert stat.S_IMODE(os.stat("/etc/hostname").st_mode) & 0o044  # a link's target is not touched


def test_a_running_server_keeps_its_data_directory_private(installer: Path, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "account.json").write_text('{"accountId": "123456789012"}')
    (data / "account.json").chmod(0o644)  # as an older rehost wrote it

    cp = ControlPlane(data, free_port(), extra_args=(
        "--replication-port", str(free_port()), "--monitor-interval", "1",
        "--agent-silence-seconds", str(SILENCE)))
    agent = None
    try:
        cp.start()
        cp.key = cp.access_key()
        cp.mgn = cp.client(cp.key)
        cp.mgn.initialize_service()
        image = make_image(tmp_path / "disk.img", 16 * MiB, [(0, 4 * MiB)])
        agent = Agent(installer, cp, str(image), tmp_path / "a")
        wait_for(lambda: cp.server(agent.sid)["lifeCycle"]["state"] == "READY_FOR_TEST", what="READY_FOR_TEST")
        names = {p.name for p in data.rglob("*")}
        # the parts that hold state or secrets are all there to be checked
        for expected in ("rehost.db", "rehost.db-wal", "index.db", "index.db-wal", "account.json", "lock"):
            assert expected in names, (expected, sorted(names))
        assert any(p.suffix == ".img" for p in (data / "staging").rglob("*")), "no staging volume"
        assert any(p.is_file() for p in (data / "chunks" / "manifests").rglob("*")), "no manifest"
        assert any(p.is_file() for p in (data / "chunks" / "packs").rglob("*")), "no pack"
        assert any(p.suffix == ".log" for p in (data / "logs").iterdir()), "no replication server log"
        for key in ("secret.key", "replication.key", "console.key", "ca.key"):  # IAM, tokens, console, TLS
            assert key in names, (key, sorted(names))
        assert leaks(data) == []
    finally:
        if agent is not None:
            agent.stop()
        _stop_control_plane(cp)
    assert leaks(data) == []
