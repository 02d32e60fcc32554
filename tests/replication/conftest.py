"""Fixtures for replication tests: a data directory with key and TLS material, servers in-process or as a
real ``rehost replication-server`` subprocess, and TLS clients."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rehost.replication import protocol as p
from rehost.replication.auth import load_or_create_key, server_token
from rehost.replication.server import ReplicationServer, ServerConfig
from rehost.replication.tls import ensure_tls, server_context

REHOST = [sys.executable, "-m", "rehost.cli.main"]


@dataclass
class Env:
    data_dir: Path
    key: bytes
    ca_pem: str

    def token(self, source_server_id: str) -> str:
        return server_token(self.key, source_server_id)

    def staging(self, source_server_id: str, device: str = "dev_sda") -> Path:
        return self.data_dir / "staging" / source_server_id / f"{device}.img"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return Env(data_dir, load_or_create_key(data_dir), ensure_tls(data_dir))


@contextlib.contextmanager
def running(env: Env, **settings: Any) -> Iterator[ReplicationServer]:
    """A real server (TLS, staging, chunk store) in this process, on a free loopback port; ``settings``
    override ``ServerConfig``'s."""
    config = ServerConfig(
        **{"data_dir": env.data_dir, "server_id": "rs-inproc", "port": 0, "snapshot_interval": 0, **settings}
    )
    srv = ReplicationServer(config, server_context(env.data_dir))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(timeout=10)


@pytest.fixture
def server(env: Env) -> Iterator[ReplicationServer]:
    with running(env) as srv:
        yield srv


def client(env: Env, address: tuple[str, int]) -> p.ReplicationClient:
    return p.ReplicationClient(address[0], address[1], ca_pem=env.ca_pem, timeout=30).connect()


def raw_tls(env: Env, address: tuple[str, int]) -> ssl.SSLSocket:
    """A bare TLS connection for sending hand-made frames."""
    ctx = p.client_context(env.ca_pem)
    sock = socket.create_connection(address, timeout=30)
    return ctx.wrap_socket(sock, server_hostname=address[0])


@dataclass
class ServerProcess:
    """``rehost replication-server`` as a subprocess; stderr is collected in ``lines``."""

    env: Env
    server_id: str = "rs-test0001"
    snapshot_interval: float = 0
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    address: tuple[str, int] = ("127.0.0.1", 0)
    lines: list[str] = field(default_factory=list)

    def start(self) -> ServerProcess:
        cmd = REHOST + ["replication-server", "--data-dir", str(self.env.data_dir), "--id", self.server_id]
        cmd += ["--port", "0", "--snapshot-interval", str(self.snapshot_interval), *self.extra_args]
        self.lines = []
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        ready = threading.Event()

        def drain() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                if line.startswith("listening on "):
                    host, port = line.split()[-1].rsplit(":", 1)
                    self.address = (host, int(port))
                    ready.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + 60
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError("replication server did not start:\n" + "\n".join(self.lines))
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        code = self.proc.wait(timeout=60)
        return code


@pytest.fixture
def server_process(env: Env) -> Iterator[ServerProcess]:
    proc = ServerProcess(env)
    try:
        yield proc
    finally:
        proc.kill()
