"""The guest edits of conversion, on plain directory trees (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehost.conversion import linux
from rehost.errors import ConversionError

UUIDS = {1: "1111-root", 2: "2222-swap"}
DISKS = {"/dev/sda"}


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_static_mac_pinned_network_becomes_dhcp(tmp_path: Path) -> None:
    write(tmp_path, "etc/systemd/network/10-lan0.link", "[Match]\nMACAddress=52:54:00:12:34:56\n[Link]\nName=lan0\n")
    write(tmp_path, "etc/systemd/network/99-other.link", "[Match]\nOriginalName=*\n")
    write(tmp_path, "etc/udev/rules.d/70-persistent-net.rules", 'SUBSYSTEM=="net", ATTR{address}=="x", NAME="eth7"\n')
    write(tmp_path, "etc/network/interfaces", "auto lan0\niface lan0 inet static\n  address 192.168.7.10/24\n")
    write(tmp_path, "etc/network/interfaces.d/eth1", "auto eth1\niface eth1 inet static\n")
    write(tmp_path, "etc/netplan/01-static.yaml", "network: {}\n")
    linux.fix_network(tmp_path)
    assert not (tmp_path / "etc/systemd/network/10-lan0.link").exists()
    assert (tmp_path / "etc/systemd/network/99-other.link").exists()  # not hardware-bound: kept
    assert not (tmp_path / "etc/udev/rules.d/70-persistent-net.rules").exists()
    interfaces = (tmp_path / "etc/network/interfaces").read_text()
    assert "iface eth0 inet dhcp" in interfaces and "static" not in interfaces
    assert not list((tmp_path / "etc/network/interfaces.d").iterdir())
    assert "192.168.7.10" in (tmp_path / "etc/network/interfaces.rehost-source").read_text()
    assert "dhcp4: true" in (tmp_path / "etc/netplan/50-rehost.yaml").read_text()


def test_static_networkd_config_becomes_dhcp(tmp_path: Path) -> None:
    write(tmp_path, "etc/systemd/network/20-wired.network", "[Match]\nName=enp1s0\n[Network]\nAddress=10.1.1.5/24\n")
    linux.fix_network(tmp_path)
    assert not (tmp_path / "etc/systemd/network/20-wired.network").exists()
    assert "DHCP=yes" in (tmp_path / "etc/systemd/network/80-rehost-dhcp.network").read_text()


def test_os_release_required(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="unknown operating system"):
        linux.os_release(tmp_path)
    write(tmp_path, "usr/lib/os-release", 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").symlink_to("../usr/lib/os-release")
    assert linux.os_release(tmp_path)["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
