"""Fixtures for agent tests: image files as disks, a real in-process replication server (TLS, staging,
chunk store), loop devices (root), and a real `rehost server` control plane."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import sha256_file
from rehost.replication.auth import load_or_create_key, server_token
from rehost.replication.server import ReplicationServer, ServerConfig
from rehost.replication.staging import disk_key
from rehost.replication.tls import ensure_tls, server_context

MiB = 1 << 20


sha_file = sha256_file


def make_image(path: Path, size: int, regions: list[tuple[int, int]], seed: int = 1) -> Path:
    """A sparse image of `size` bytes with pseudo-random data in `regions` [(offset, length)], zeros elsewhere."""
    with open(path, "wb") as f:
        f.truncate(size)
        for i, (offset, length) in enumerate(regions):
            f.seek(offset)
            f.write(_pseudo_random(length, seed * 1000 + i))
    return path


def _pseudo_random(length: int, seed: int) -> bytes:
    """Incompressible, reproducible bytes."""
    return random.Random(seed).randbytes(length)


@dataclass
class RepEnv:
    data_dir: Path
    key: bytes
    ca_pem: str

    def token(self, source_server_id: str) -> str:
        return server_token(self.key, source_server_id)

    def staging(self, source_server_id: str, device_name: str) -> Path:
        return self.data_dir / "staging" / source_server_id / f"{disk_key(device_name)}.img"

    def start_server(self) -> ReplicationServer:
        config = ServerConfig(data_dir=self.data_dir, server_id="rs-agenttest", port=0, snapshot_interval=0)
        srv = ReplicationServer(config, server_context(self.data_dir))
        srv.start()
        return srv


@pytest.fixture
def rep_env(tmp_path: Path) -> RepEnv:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return RepEnv(data_dir, load_or_create_key(data_dir), ensure_tls(data_dir))


@pytest.fixture
def rep_server(rep_env: RepEnv) -> Iterator[ReplicationServer]:
    srv = rep_env.start_server()
    try:
        yield srv
    finally:
        srv.stop(timeout=10)


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A 64 MiB image attached to a fresh loop device (root only); detached afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices")
    image = tmp_path / "loop.img"
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    dev = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True)
    device = dev.stdout.strip()
    try:
        yield device, image
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
