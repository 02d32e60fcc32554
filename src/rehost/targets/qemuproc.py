"""Running QEMU as a daemon: free loopback ports, start with a pidfile, talk QMP, stop.

QEMU is started with ``-daemonize``: it is not our child, so it outlives the process that started it (the
control plane can restart and re-attach by pid and QMP socket). A pid is trusted only while
``/proc/<pid>/cmdline`` still names the run directory, so a recycled pid is never mistaken for a VM.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rehost.errors import TargetError

QEMU = "qemu-system-x86_64"


#: Unix socket paths are limited to 107 bytes (sun_path); longer run directories get theirs elsewhere.
_SUN_PATH_MAX = 107
_SHORT_SOCKET_DIR = Path("/run/rehost")


def qmp_socket(run_dir: Path) -> Path:
    """The QMP socket of the VM whose files live in ``run_dir``: ``run_dir/qmp.sock`` when that path fits in
    a Unix socket address, else a short path derived from ``run_dir`` (so a restarted control plane finds
    the same socket again)."""
    path = Path(run_dir) / "qmp.sock"
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(Path(run_dir).resolve())).hexdigest()[:24]
    base = _SHORT_SOCKET_DIR if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base / f"qmp-{digest}.sock"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (QEMU's hostfwd cannot report one it chose)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_daemon(argv: Sequence[str], run_dir: Path, *, timeout: float = 60) -> int:
    """Start QEMU daemonized with its pidfile in ``run_dir``; return its pid.

    ``argv`` must not contain -daemonize/-pidfile. QEMU's parent exits only once the VM is set up, so an
    error (a port taken, a bad disk) is raised here as `TargetError` with QEMU's own message.
    """
    pidfile = run_dir / "qemu.pid"
    pidfile.unlink(missing_ok=True)
    full = [*argv, "-daemonize", "-pidfile", str(pidfile)]
    try:
        proc = subprocess.run(full, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetError(f"could not start QEMU: {exc}") from exc
    if proc.returncode != 0:
        raise TargetError(f"QEMU failed to start: {proc.stderr.decode(errors='replace').strip()[-800:]}")
    for _ in range(50):
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(pidfile.read_text().strip())
        time.sleep(0.1)
    raise TargetError("QEMU started but wrote no pidfile")


def pid_alive(pid: int | None, marker: str) -> bool:
    """Whether ``pid`` is a live QEMU whose command line contains ``marker`` (its run directory)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if status.split(") ", 1)[-1].startswith("Z"):
        return False
    return marker.encode() in cmdline


def kill(pid: int, marker: str, *, grace: float = 5.0) -> None:
    """SIGTERM then SIGKILL the QEMU ``pid`` (only if it still is the one named by ``marker``)."""
    if not pid_alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, marker, grace):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, marker, 5.0)


def wait_gone(pid: int, marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return True
        time.sleep(0.1)
    return not pid_alive(pid, marker)


class QMP:
    """A minimal QMP client over a unix socket: one command at a time, events skipped."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
            self._file = self._sock.makefile("rwb")
            self._read()  # greeting
            self.command("qmp_capabilities")
        except (OSError, ValueError) as exc:
            self._sock.close()
            raise TargetError(f"QMP at {path} is not answering: {exc}") from exc

    def _read(self) -> dict[str, Any]:
        while True:
            line = self._file.readline()
            if not line:
                raise TargetError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return dict(msg)

    def command(self, name: str, **arguments: Any) -> Any:
        """Run a QMP command and return its ``return`` value; raise `TargetError` on a QMP error."""
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._file.write(json.dumps(msg).encode() + b"\n")
            self._file.flush()
            reply = self._read()
        except (OSError, ValueError) as exc:
            if name == "quit":
                return None  # QEMU may close the socket before answering quit
            raise TargetError(f"QMP {name} failed: {exc}") from exc
        if "error" in reply:
            raise TargetError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self._sock.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def user_netdev(netdev_id: str, hostfwd: dict[int, int], guestfwd: dict[str, int] | None = None) -> str:
    """A ``-netdev user`` value with ``restrict=on``: the guest reaches only what is forwarded.

    ``hostfwd`` maps guest TCP port -> host loopback port; ``guestfwd`` maps "guest-ip:port" -> host
    loopback port (the guest connects to guest-ip:port and lands on 127.0.0.1:port on the host).
    """
    parts = [f"user,id={netdev_id},restrict=on"]
    for guest_port, host_port in sorted(hostfwd.items()):
        parts.append(f"hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}")
    for guest_addr, host_port in sorted((guestfwd or {}).items()):
        # cmd: spawns the relay for every connection the guest opens; a tcp: chardev would connect once,
        # when QEMU starts, and carry a single guest connection.
        parts.append(f"guestfwd=tcp:{guest_addr}-cmd:{sys.executable} -m rehost.targets.relay {host_port}")
    return ",".join(parts)
