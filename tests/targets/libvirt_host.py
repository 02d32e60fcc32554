"""A real libvirt host for the tests: libvirtd (and virtlogd) started inside a network namespace of the
test's own, so the NAT bridge, its dnsmasq and every guest stay there (machine.md's traffic rule); the
control plane reaches the daemon over its Unix socket, which the namespace does not hide.

libvirtd also gets a mount namespace of its own in which /dev/kvm is an inaccessible file: this machine's
/dev/kvm is root-only (no udev) and its KVM cannot boot a guest anyway, and libvirt, finding KVM usable for
its probe but not for the QEMU user, would otherwise probe QEMU again on every call (30 s and more). In
that namespace its qemu.conf is one of the test's that only turns off QEMU's private /dev (which would copy
/dev/kvm, no device there). The domains are type='qemu' (TCG) either way.

The network (``rehost-test``, 192.168.122.0/24, NAT) and the directory pool (``rehost-test``) are transient:
they go with the fixture. `in_ns` runs a command inside the namespace (to reach a guest).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NETWORK = "rehost-test"
POOL = "rehost-test"
NET_XML = f"""<network><name>{NETWORK}</name><forward mode='nat'/><bridge name='virbr-rht' stp='off'/>
<ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.10' end='192.168.122.250'/>
</dhcp></ip></network>"""
VIRTLOGD_SOCK = Path("/run/libvirt/virtlogd-sock")


@dataclass
class LibvirtHost:
    netns: str
    root: Path
    url: str
    pool_dir: Path

    def in_ns(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def virsh(self, *argv: str) -> str:
        proc = subprocess.run(["virsh", "-c", self.url, *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


def _wait(path: Path, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not create {path} within {timeout:g} s")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def libvirt_host() -> Iterator[LibvirtHost]:
    assert os.geteuid() == 0, "the libvirt tests need root (network namespaces, libvirtd)"
    assert shutil.which("libvirtd") and shutil.which("virtlogd"), "Debian's libvirt-daemon-system is not installed"
    # unique per fixture instance: each test module importing this fixture gets its own, in one pytest process
    netns = f"rehost-lv-{os.getpid()}-{secrets.token_hex(3)}"
    root = Path(tempfile.mkdtemp(prefix="rehost-libvirt-"))
    root.chmod(0o755)  # QEMU runs as libvirt-qemu: it must reach the pool's volumes
    (root / "run").mkdir()
    pool_dir = root / "pool"
    pool_dir.mkdir(mode=0o755)
    (root / "nokvm").touch(mode=0o000)
    (root / "qemu.conf").write_text('namespaces = [ ]\n')
    (root / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{root / "run"}"\nunix_sock_rw_perms = "0700"\nauth_unix_rw = "none"\n'
        f'auth_unix_ro = "none"\nlog_outputs = "3:file:{root / "libvirtd.log"}"\n')
    subprocess.run(["ip", "netns", "add", netns], check=True)
    virtlogd = None
    host = LibvirtHost(netns, root, f"qemu+unix:///system?socket={root / 'run' / 'libvirt-sock'}", pool_dir)
    try:
        host.in_ns("ip", "link", "set", "lo", "up")
        if not VIRTLOGD_SOCK.exists():
            virtlogd = subprocess.Popen(["ip", "netns", "exec", netns, "virtlogd"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
            _wait(VIRTLOGD_SOCK, "virtlogd")
        subprocess.run(["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f"mount --bind {root / 'nokvm'} /dev/kvm && mount --bind {root / 'qemu.conf'} /etc/libvirt/qemu.conf && "
                        f"exec libvirtd -d -f {root / 'libvirtd.conf'} "
                        f"-p {root / 'libvirtd.pid'}"], check=True, timeout=60)
        _wait(root / "run" / "libvirt-sock", "libvirtd")
        (root / "net.xml").write_text(NET_XML)
        host.virsh("net-create", str(root / "net.xml"))
        host.virsh("pool-create-as", POOL, "dir", "--target", str(pool_dir))
        yield host
    finally:
        for dom in subprocess.run(["virsh", "-c", host.url, "list", "--all", "--name"], capture_output=True,
                                  text=True).stdout.split():
            subprocess.run(["virsh", "-c", host.url, "destroy", dom], capture_output=True)
            subprocess.run(["virsh", "-c", host.url, "undefine", dom, "--nvram"], capture_output=True)
        subprocess.run(["virsh", "-c", host.url, "net-destroy", NETWORK], capture_output=True)
        subprocess.run(["virsh", "-c", host.url, "pool-destroy", POOL], capture_output=True)
        pidfile = root / "libvirtd.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().strip() or 0)
            if pid:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.1)
        if virtlogd is not None:
            virtlogd.terminate()
            virtlogd.wait(timeout=10)
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
