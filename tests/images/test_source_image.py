"""The demo/test source image: a real Debian that boots on IDE + e1000 and not on virtio (before conversion)."""

from __future__ import annotations

import http.server
import shutil
import threading
import time
from pathlib import Path

import pytest

from rehost.conversion.blockdev import loop_device, mounted, read_partitions
from rehost.images.builder import SITE_MARKER, cached_tree, debian_mirror
from rehost.images.sourcevm import boot_source_vm

from .fixtures import CACHE_DIR, MARKER, ssh


def test_mirror_comes_from_apt_config(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert debian_mirror(tmp_path) == "http://other.example/debian"


def copy(image: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "disk.img"
    shutil.copyfile(image, dst)
    return dst


@pytest.mark.root
@pytest.mark.slow
def test_image_names_its_disk_as_its_own_hardware_does(minimal_image: Path, tmp_path: Path) -> None:
    label, parts = read_partitions(minimal_image)
    assert label == "dos" and len(parts) == 1 and parts[0].bootable
    assert cached_tree(CACHE_DIR, "minimal").exists()  # the second build reused the cached tree
    with loop_device(minimal_image, offset=parts[0].offset, size=parts[0].size, read_only=True) as dev, \
            mounted(dev, tmp_path / "root", read_only=True) as root:
        assert (root / "etc/fstab").read_text().split("\n")[1].startswith("/dev/sda1 / ext4")
        assert "root=/dev/sda1" in (root / "boot/extlinux/extlinux.conf").read_text()
        assert "MACAddress=52:54:00:12:34:56" in (root / "etc/systemd/network/10-lan0.link").read_text()
        assert "inet static" in (root / "etc/network/interfaces").read_text()
        assert (root / "etc/hostname").read_text().strip() == "legacy-web-01"


@pytest.mark.root
@pytest.mark.slow
def test_boots_on_ide_and_e1000_and_serves_its_site(minimal_image: Path, tmp_path: Path) -> None:
    # A host service the guest may reach (as the agent reaches the control plane), and one it may not.
    allowed = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    denied = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    for srv in (allowed, denied):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    vm = boot_source_vm(copy(minimal_image, tmp_path), tmp_path / "run",
                        host_services={8080: allowed.server_address[1]})
    try:
        body = vm.wait_http(300, expect=MARKER)
        assert SITE_MARKER in body
        assert "hello from the host" in ssh(minimal_image, vm.ssh_port, "wget -qO- http://10.0.2.100:8080/")
        port = denied.server_address[1]
        out = ssh(minimal_image, vm.ssh_port, f"wget -T 5 -t 1 -qO- http://10.0.2.2:{port}/ || echo unreachable")
        assert out.strip() == "unreachable"  # restrict=on: nothing but the forwarded services
        # The writer keeps adding content, so a later snapshot holds more than the first one.
        first = vm.wait_http(60, path="/journal.txt")
        deadline = time.monotonic() + 60
        while vm.wait_http(60, path="/journal.txt") == first and time.monotonic() < deadline:
            time.sleep(2)
        assert vm.wait_http(60, path="/journal.txt") != first
        assert "root=/dev/sda1" in vm.console()
    finally:
        vm.stop()
        allowed.shutdown()
        denied.shutdown()
    assert not vm.alive()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.root
@pytest.mark.slow
def test_does_not_boot_on_virtio_before_conversion(minimal_image: Path, tmp_path: Path) -> None:
    vm = boot_source_vm(copy(minimal_image, tmp_path), tmp_path / "run", disk_bus="virtio", nic="virtio-net-pci")
    try:
        deadline = time.monotonic() + 240
        while "ALERT!" not in vm.console() and time.monotonic() < deadline:
            time.sleep(1)
        console = vm.console()
    finally:
        vm.stop()
    assert "ALERT!  /dev/sda1 does not exist" in console
    assert "login:" not in console
    assert "virtio_blk" not in console and "vda" not in console  # no driver: the disk never appeared
