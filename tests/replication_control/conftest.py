"""Fixtures for replication driven by the control plane: a real `rehost server` with short monitor
intervals, real agents (the one-file installer, in the foreground) on image files, and a byte-counting TCP
relay between the agents and the replication servers.

The helpers of the agent tests (images, hashes, the installer flags, `wait_for`) are reused, not copied.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.conftest import MiB, make_image, sha_file  # noqa: F401 - re-exported for the tests
from agent.test_install_e2e import (  # noqa: F401 - re-exported
    PY,
    flags,
    read_install,
    replication_server_processes,
    staging_matches,
    wait_for,
)
from helpers import RunningServer, free_port
from rehost.agent.bundle import build_installer

# The control plane looks for dead replication servers and silent agents every second, and calls an
# agent silent after 6 s, so a test sees STALLED in seconds rather than minutes; a launch job waits 10 s
# for the agent's snapshot before it falls back to the previous one.
SILENCE = 6.0
SNAPSHOT_TIMEOUT = 10.0


@pytest.fixture(scope="session")
def installer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_installer(tmp_path_factory.mktemp("bundle") / "rehost-replication-installer-init")


class ControlPlane(RunningServer):
    """A `rehost server` process and the MGN client of its admin."""

    key: tuple[str, str]
    mgn: Any

    def server(self, sid: str) -> dict[str, Any]:
        return self.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]

    def replication(self, sid: str) -> dict[str, Any]:
        return self.server(sid).get("dataReplicationInfo", {})

    def state(self, sid: str) -> str:
        return str(self.replication(sid).get("dataReplicationState"))

    def wait_state(self, sid: str, *states: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until the server's dataReplicationState is one of `states`; returns dataReplicationInfo."""
        return wait_for(lambda: (info := self.replication(sid)).get("dataReplicationState") in states and info,
                        timeout=timeout, what=f"{sid} in {states} (now {self.state(sid)})")

    def replication_servers(self) -> dict[str, int]:
        """Running `rehost replication-server` processes of this data directory: {rs-id: pid}."""
        return replication_server_processes(self.data_dir)

    def rs_log(self, rs_id: str) -> str:
        path = self.data_dir / "logs" / f"{rs_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _start_control_plane(tmp_path: Path, *extra: str, replication_port: int | None = None) -> ControlPlane:
    data = tmp_path / "data"
    data.mkdir()
    cp = ControlPlane(data, free_port(), extra_args=(
        "--replication-port", str(replication_port or free_port()), "--monitor-interval", "1", "--agent-silence-seconds", str(SILENCE),
        "--job-snapshot-timeout", str(SNAPSHOT_TIMEOUT), *extra))
    cp.start()
    cp.key = cp.access_key()
    cp.mgn = cp.client(cp.key)
    cp.mgn.initialize_service()
    return cp


def _stop_control_plane(cp: ControlPlane) -> None:
    try:
        cp.stop()
    finally:
        # A replication server this test's control plane started and did not stop (it was killed mid-way):
        # found by its --data-dir, so no other test's process is touched.
        for pid in cp.replication_servers().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = _start_control_plane(tmp_path)
    try:
        yield cp
    finally:
        _stop_control_plane(cp)


@pytest.fixture
def relayed_control_plane(tmp_path: Path) -> Iterator[tuple[ControlPlane, Relay]]:
    """A control plane whose agents reach the replication server through a byte-counting relay: agents are
    told 127.0.0.2 (``--advertise-replication-host``), the relay listens there on the replication port and
    forwards to the replication server on 127.0.0.1."""
    port = free_port()
    relay = Relay(("127.0.0.2", port), ("127.0.0.1", port)).start()
    cp = _start_control_plane(tmp_path, "--advertise-replication-host", "127.0.0.2", replication_port=port)
    try:
        yield cp, relay
    finally:
        relay.stop()
        _stop_control_plane(cp)


class Relay:
    """A TCP relay on loopback that counts the bytes agents send to the replication server (the TLS
    records, as on the wire). Each accepted connection gets its own upstream connection."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        self.listen, self.upstream = listen, upstream
        self.sent = 0  # agent -> replication server
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.create_server(listen)
        self._sock.settimeout(0.2)

    def start(self) -> Relay:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                down, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                down.close()  # the replication server is down: the agent sees a refused session
                continue
            up.settimeout(None)
            down.settimeout(None)
            threading.Thread(target=self._pipe, args=(down, up, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, down, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if count:
                    with self._lock:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


class Agent:
    """A real agent in the foreground: installed by the one-file installer, restarted with its `agent`
    command from the same state directory."""

    def __init__(self, installer: Path, cp: ControlPlane, device: str, state_dir: Path, *extra: str) -> None:
        self.installer, self.cp, self.device, self.state_dir = installer, cp, device, state_dir
        self.log = state_dir.parent / f"agent-{state_dir.name}.log"
        self.proc = subprocess.Popen(
            [PY, "-I", str(installer), *flags(cp, cp.key, "--no-prompt", "--devices", device,
                                              "--state-dir", str(state_dir), "--foreground",
                                              # one machine, several source servers: told apart by this ID
                                              "--user-provided-id", f"{state_dir.name}-{id(self)}", *extra)],
            stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True)
        self.sid, _ = read_install(self.proc, self.log)

    def kill(self) -> None:
        """kill -9: no clean shutdown, no last report."""
        self.proc.kill()
        self.proc.wait(timeout=30)

    def restart(self) -> None:
        assert self.proc.poll() is not None
        self.proc = subprocess.Popen([PY, "-I", str(self.installer), "agent", "--state-dir", str(self.state_dir)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))

    def stop(self) -> int:
        """SIGTERM and wait; the exit code (0 when the agent shut down cleanly)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a test may have stopped it
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    """Agents a test starts; each is stopped at the end, whatever happened."""
    started: list[Agent] = []
    try:
        yield started
    finally:
        for agent in started:
            agent.stop()


def wait_quiet(seconds: float) -> None:
    """Let the agent's rescans run a few times (to show that something does NOT happen)."""
    time.sleep(seconds)
