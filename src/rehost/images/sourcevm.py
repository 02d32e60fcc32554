"""Boot a source server image as a VM on its own (non-virtio) hardware.

The source VM has an IDE disk (``/dev/sda`` in the guest) and an e1000 NIC with MAC `SOURCE_MAC`, as the
image expects. Networking is QEMU user mode with ``restrict=on``: ports 22 and 80 are forwarded from free
127.0.0.1 ports, and each entry of ``host_services`` makes a host loopback port reachable from the guest
at ``SERVICE_IP:port`` (the control plane, the replication server).
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rehost.errors import TargetError
from rehost.images.builder import SOURCE_MAC
from rehost.targets.qemuproc import QEMU, free_port, kill, pid_alive, qmp_socket, start_daemon, user_netdev

#: The address at which the guest reaches forwarded host services.
SERVICE_IP = "10.0.2.100"


@dataclass
class SourceVM:
    """A running source VM: its loopback ports, serial log and pid. `stop` ends it (idempotent)."""

    run_dir: Path
    pid: int
    ssh_port: int
    http_port: int
    serial_log: Path
    host_services: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def console(self) -> str:
        try:
            return self.serial_log.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return pid_alive(self.pid, str(self.run_dir))

    def stop(self) -> None:
        kill(self.pid, str(self.run_dir))

    def wait_http(self, timeout: float, path: str = "/", expect: str = "") -> str:
        """Wait for ``GET path`` on port 80 to answer 200 (containing ``expect``); return the body."""
        return wait_http(f"http://127.0.0.1:{self.http_port}{path}", timeout, expect, alive=self.alive)


def wait_http(url: str, timeout: float, expect: str = "", alive: object = None) -> str:
    """Poll ``url`` until it answers 200 with ``expect`` in the body; raise `TargetError` on timeout."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise TargetError(f"the VM exited before {url} answered")
        try:
            # A PHP page (the WordPress flavor) takes seconds under TCG on a loaded machine.
            with urllib.request.urlopen(url, timeout=60) as resp:
                body = resp.read().decode(errors="replace")
                if resp.status == 200 and expect in body:
                    return body
                last = f"HTTP {resp.status}"
        except (TimeoutError, OSError) as exc:
            last = str(exc)
        time.sleep(1)
    raise TargetError(f"{url} did not answer within {timeout:.0f} s (last: {last})")


def boot_source_vm(image: Path, run_dir: Path, *, memory_mib: int = 1024, vcpus: int = 1,
                   host_services: dict[int, int] | None = None, accel: str = "tcg",
                   disk_bus: str = "ide", nic: str = "e1000") -> SourceVM:
    """Boot ``image`` (raw, used in place) as the source server; return at once, while the guest boots.

    ``host_services`` maps guest port -> host loopback port, reachable in the guest at
    ``SERVICE_IP:guest_port``. ``disk_bus``/``nic`` exist so a test can show the image fails on virtio.
    Raises `TargetError` if QEMU cannot start.
    """
    run_dir = Path(run_dir).resolve()  # the pid check matches this path in QEMU's command line
    image = Path(image).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which(QEMU) is None:
        raise TargetError(f"{QEMU} is not installed")
    serial = run_dir / "serial.log"
    guestfwd = {f"{SERVICE_IP}:{g}": h for g, h in (host_services or {}).items()}
    drive = ["-drive", f"file={image},format=raw,if={disk_bus},cache=unsafe"]
    for attempt in range(3):
        ports = {22: free_port(), 80: free_port()}
        argv = [QEMU, "-name", "rehost-source", "-machine", "pc", "-accel", accel, "-cpu", "max",
                "-smp", str(vcpus), "-m", str(memory_mib), "-nodefaults", "-display", "none", "-vga", "none",
                *drive, "-netdev", user_netdev("net0", ports, guestfwd),
                "-device", f"{nic},netdev=net0,mac={SOURCE_MAC}",
                "-serial", f"file:{serial}", "-qmp", f"unix:{qmp_socket(run_dir)},server=on,wait=off"]
        try:
            pid = start_daemon(argv, run_dir)
        except TargetError as exc:
            if "forwarding" in str(exc) and attempt < 2:
                continue  # a port taken between choosing and binding it
            raise
        return SourceVM(run_dir=run_dir, pid=pid, ssh_port=ports[22], http_port=ports[80], serial_log=serial,
                        host_services=dict(host_services or {}))
    raise TargetError("no free loopback ports for the source VM")
