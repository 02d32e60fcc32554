"""Network fixers on directory trees: every stack's static, MAC-pinned configuration becomes DHCP on eth0;
plan() lists what fix() does, a second fix() changes nothing, and unrelated configuration stays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rehost.conversion.network import FIXERS, fix_network, plan_network

MAC = "52:54:00:12:34:56"


def write(root: Path, rel: str, text: str, mode: int = 0o644) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    p.chmod(mode)
    return p


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text()


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def ifupdown(root: Path) -> None:
    write(root, "etc/systemd/network/10-lan0.link", f"[Match]\nMACAddress={MAC}\n\n[Link]\nName=lan0\n")
    write(root, "etc/network/interfaces",
          "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
          "allow-hotplug lan0\niface lan0 inet static\n    address 10.0.2.15/24\n    gateway 10.0.2.2\n"
          "    dns-nameservers 10.0.2.3\n    dns-search example.internal\n    post-up echo up\n")
    write(root, "etc/network/interfaces.d/backup-nic", "auto eth1\niface eth1 inet static\n    address 192.168.9.4/24\n")


def ifupdown_bridge(root: Path) -> None:
    write(root, "etc/network/interfaces",
          "auto lo\niface lo inet loopback\n\niface enp3s0 inet manual\n\nauto br0\niface br0 inet static\n"
          "    bridge_ports enp3s0\n    address 10.1.0.5/24\n    gateway 10.1.0.1\n"
          "iface br0 inet6 static\n    address fd00::5/64\n")


def networkd(root: Path) -> None:
    write(root, "etc/systemd/network/10-lan0.link", f"[Match]\nMACAddress={MAC}\n\n[Link]\nName=lan0\nMTUBytes=1500\n")
    write(root, "etc/systemd/network/99-default.link", "[Match]\nOriginalName=*\n\n[Link]\nNamePolicy=kernel\n")
    write(root, "etc/systemd/network/20-lan0.network",
          f"[Match]\nMACAddress={MAC}\n\n[Network]\nAddress=10.1.1.5/24\nGateway=10.1.1.1\nDNS=10.1.1.2\n"
          "Domains=example.internal\nIPv6AcceptRA=no\n\n[Route]\nDestination=10.9.0.0/16\nGateway=10.1.1.254\n")
    write(root, "etc/systemd/network/30-wg0.network", "[Match]\nName=wg0\n\n[Network]\nAddress=10.200.0.1/24\n")


def netplan(root: Path) -> None:
    write(root, "etc/netplan/01-netcfg.yaml", yaml.safe_dump({"network": {
        "version": 2, "renderer": "networkd",
        "ethernets": {"lan0": {"match": {"macaddress": MAC}, "set-name": "lan0", "addresses": ["10.3.0.5/24"],
                               "gateway4": "10.3.0.1",
                               "nameservers": {"addresses": ["10.3.0.2"], "search": ["example.internal"]}},
                      "ens9": {"dhcp4": False, "optional": True}},
        "vlans": {"vlan20": {"id": 20, "link": "lan0", "addresses": ["10.20.0.5/24"]}}}}), mode=0o600)
    write(root, "etc/netplan/90-extra.yaml", "network:\n  version: 2\n  ethernets:\n    lan0:\n      mtu: 9000\n", 0o600)


def networkmanager(root: Path) -> None:
    write(root, "etc/NetworkManager/system-connections/Wired.nmconnection",
          "[connection]\nid=Wired\nuuid=5e7f1a44-0000-4000-8000-000000000001\ntype=ethernet\ninterface-name=ens192\n\n"
          f"[ethernet]\nmac-address={MAC.upper()}\n\n[ipv4]\naddress1=10.4.0.5/24,10.4.0.1\ndns=10.4.0.2;\n"
          "dns-search=example.internal;\nmethod=manual\n\n[ipv6]\naddr-gen-mode=eui64\nmethod=ignore\n", mode=0o600)
    write(root, "etc/NetworkManager/system-connections/guest-wifi.nmconnection",
          "[connection]\nid=guest-wifi\ntype=wifi\n\n[wifi]\nssid=guest\n\n[ipv4]\nmethod=auto\n", mode=0o600)


def ifcfg(root: Path) -> None:
    d = "etc/sysconfig/network-scripts"
    write(root, f"{d}/ifcfg-ens192", f'TYPE=Ethernet\nBOOTPROTO=none\nNAME=ens192\nDEVICE=ens192\nONBOOT=yes\n'
          f'HWADDR={MAC}\nIPADDR=10.5.0.5\nPREFIX=24\nGATEWAY=10.5.0.1\nDNS1=10.5.0.2\nDOMAIN="example.internal"\n')
    write(root, f"{d}/ifcfg-lo", "DEVICE=lo\nIPADDR=127.0.0.1\nNETMASK=255.0.0.0\nONBOOT=yes\nNAME=loopback\n")
    write(root, f"{d}/route-ens192", "10.9.0.0/16 via 10.5.0.254\n")
    write(root, "etc/sysconfig/network", "NETWORKING=yes\nHOSTNAME=legacy\nGATEWAY=10.5.0.1\n")
    write(root, "etc/udev/rules.d/70-persistent-net.rules",
          '# generated\nSUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="52:54:00:12:34:56", '
          'ATTR{type}=="1", KERNEL=="eth*", NAME="ens192"\n')


VARIANTS: dict[str, Callable[[Path], None]] = {
    "ifupdown": ifupdown, "ifupdown-bridge": ifupdown_bridge, "networkd": networkd, "netplan": netplan,
    "networkmanager": networkmanager, "ifcfg": ifcfg}


@pytest.mark.parametrize("variant", VARIANTS)
def test_plan_lists_what_fix_does_and_fix_is_idempotent(tmp_path: Path, variant: str) -> None:
    VARIANTS[variant](tmp_path)
    before = snapshot(tmp_path)
    planned = plan_network(tmp_path)
    assert planned and snapshot(tmp_path) == before  # plan() is read-only
    assert fix_network(tmp_path) == planned
    after = snapshot(tmp_path)
    assert after != before
    assert fix_network(tmp_path) == [] and plan_network(tmp_path) == []
    assert snapshot(tmp_path) == after


def test_ifupdown_static_pinned_becomes_dhcp_on_eth0(tmp_path: Path) -> None:
    ifupdown(tmp_path)
    notes = fix_network(tmp_path)
    assert not (tmp_path / "etc/systemd/network/10-lan0.link").exists()
    assert "MACAddress" in read(tmp_path, "etc/systemd/network/10-lan0.link.rehost-source")
    text = read(tmp_path, "etc/network/interfaces")
    assert "allow-hotplug eth0\niface eth0 inet dhcp\n" in text
    assert "auto lo\niface lo inet loopback" in text  # unrelated: kept
    assert "dns-search example.internal" in text and "post-up echo up" in text  # harmless: kept
    active = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not [w for w in active if w[0] in ("address", "gateway", "dns-nameservers")]
    assert "lan0" not in " ".join(" ".join(w) for w in active)
    assert "10.0.2.15/24" in read(tmp_path, "etc/network/interfaces.rehost-source")
    # The other NIC's configuration stays, brought up only if the target has that NIC.
    other = read(tmp_path, "etc/network/interfaces.d/backup-nic")
    assert "allow-hotplug eth1\niface eth1 inet static\n    address 192.168.9.4/24" in other
    assert "auto eth1" in read(tmp_path, "etc/network/interfaces.d.rehost-source/backup-nic")
    assert not list((tmp_path / "etc/network/interfaces.d").glob("*.rehost-source"))  # `source` would read it
    assert any("MAC-pinned" in n for n in notes)


def test_ifupdown_bridge_gets_dhcp_and_keeps_its_port(tmp_path: Path) -> None:
    ifupdown_bridge(tmp_path)
    fix_network(tmp_path)
    text = read(tmp_path, "etc/network/interfaces")
    assert "iface eth0 inet manual" in text and "auto br0\niface br0 inet dhcp\n    bridge_ports eth0\n" in text
    assert "#iface br0 inet6 static" in text and "#    address fd00::5/64" in text


def test_networkd_static_pinned_becomes_dhcp_on_eth0(tmp_path: Path) -> None:
    networkd(tmp_path)
    fix_network(tmp_path)
    net = tmp_path / "etc/systemd/network"
    assert not (net / "10-lan0.link").exists() and (net / "99-default.link").exists()
    entries = [line for line in read(tmp_path, "etc/systemd/network/20-lan0.network").splitlines()
               if line and not line.startswith("#")]
    assert entries == ["[Match]", "Name=eth0", "[Network]", "DHCP=yes", "Domains=example.internal", "IPv6AcceptRA=no"]
    assert read(tmp_path, "etc/systemd/network/30-wg0.network").count("Address=10.200.0.1/24") == 1  # unrelated
    assert not (net / "30-wg0.network.rehost-source").exists()
    assert "Gateway=10.1.1.1" in (net / "20-lan0.network.rehost-source").read_text()


def test_netplan_static_pinned_becomes_dhcp_on_eth0(tmp_path: Path) -> None:
    netplan(tmp_path)
    fix_network(tmp_path)
    net = yaml.safe_load(read(tmp_path, "etc/netplan/01-netcfg.yaml"))["network"]
    assert net["renderer"] == "networkd"
    assert net["ethernets"]["eth0"] == {"nameservers": {"search": ["example.internal"]}, "dhcp4": True}
    assert net["ethernets"]["ens9"] == {"dhcp4": False, "optional": True}
    assert net["vlans"]["vlan20"]["link"] == "eth0"
    extra = yaml.safe_load(read(tmp_path, "etc/netplan/90-extra.yaml"))["network"]
    # netplan merges the files, a later one winning: the other file defining the NIC follows the rename
    # and says DHCP too, so no later setting can undo it.
    assert extra["ethernets"] == {"eth0": {"mtu": 9000, "dhcp4": True}}
    assert (tmp_path / "etc/netplan/01-netcfg.yaml").stat().st_mode & 0o777 == 0o600
    assert "macaddress" in read(tmp_path, "etc/netplan/01-netcfg.yaml.rehost-source")


def test_networkmanager_keyfile_static_pinned_becomes_dhcp(tmp_path: Path) -> None:
    networkmanager(tmp_path)
    fix_network(tmp_path)
    conns = tmp_path / "etc/NetworkManager/system-connections"
    lines = [line for line in (conns / "Wired.nmconnection").read_text().splitlines() if not line.startswith("#")]
    assert "interface-name=eth0" in lines and "method=auto" in lines and "dns-search=example.internal;" in lines
    assert not [line for line in lines if line.startswith(("mac-address", "address1", "dns="))]
    assert "method=ignore" in lines  # IPv6 was not manual: kept
    assert (conns / "Wired.nmconnection").stat().st_mode & 0o777 == 0o600
    assert "type=wifi" in (conns / "guest-wifi.nmconnection").read_text()
    assert sorted(p.name for p in conns.iterdir()) == ["Wired.nmconnection", "guest-wifi.nmconnection"]
    assert "method=manual" in (tmp_path / "etc/NetworkManager/system-connections.rehost-source/Wired.nmconnection").read_text()


def test_ifcfg_static_pinned_becomes_dhcp_on_eth0(tmp_path: Path) -> None:
    ifcfg(tmp_path)
    fix_network(tmp_path)
    d = tmp_path / "etc/sysconfig/network-scripts"
    assert sorted(p.name for p in d.iterdir()) == ["ifcfg-eth0", "ifcfg-lo"]
    values = dict(line.split("=", 1) for line in (d / "ifcfg-eth0").read_text().splitlines() if not line.startswith("#"))
    assert values == {"TYPE": "Ethernet", "NAME": "ens192", "DEVICE": "eth0", "ONBOOT": "yes",
                      "DOMAIN": '"example.internal"', "BOOTPROTO": "dhcp"}
    assert "IPADDR=127.0.0.1" in (d / "ifcfg-lo").read_text()
    kept = tmp_path / "etc/sysconfig/network-scripts.rehost-source"
    assert sorted(p.name for p in kept.iterdir()) == ["ifcfg-ens192", "route-ens192"]
    assert "#GATEWAY=10.5.0.1" in read(tmp_path, "etc/sysconfig/network")
    assert "HOSTNAME=legacy" in read(tmp_path, "etc/sysconfig/network")
    rules = read(tmp_path, "etc/udev/rules.d/70-persistent-net.rules.rehost-source")
    assert 'NAME="ens192"' in rules and not (tmp_path / "etc/udev/rules.d/70-persistent-net.rules").exists()


def test_rhel_with_keyfile_and_ifcfg_converts_both_the_same_way(tmp_path: Path) -> None:
    """NetworkManager reads both (keyfile and ifcfg-rh plugins): whichever it takes, eth0 gets DHCP."""
    ifcfg(tmp_path)
    networkmanager(tmp_path)
    fix_network(tmp_path)
    assert "BOOTPROTO=dhcp" in read(tmp_path, "etc/sysconfig/network-scripts/ifcfg-eth0")
    assert "method=auto" in read(tmp_path, "etc/NetworkManager/system-connections/Wired.nmconnection")


def test_udev_rules_keep_what_does_not_pin_a_nic(tmp_path: Path) -> None:
    write(tmp_path, "etc/udev/rules.d/70-persistent-net.rules",
          '# net\nSUBSYSTEM=="net", ATTR{address}=="52:54:00:12:34:56", NAME="lan0"\n'
          'SUBSYSTEM=="block", KERNEL=="sd*", ATTR{queue/scheduler}="none"\n')
    notes = fix_network(tmp_path)
    text = read(tmp_path, "etc/udev/rules.d/70-persistent-net.rules")
    assert 'ATTR{queue/scheduler}="none"' in text and text.count("# rehost:") == 1
    assert notes == ["network: udev: /etc/udev/rules.d/70-persistent-net.rules: disabled 1 rule(s) naming NICs "
                     "by MAC address"]


def test_guest_without_configured_nic_gets_dhcp_for_its_stack(tmp_path: Path) -> None:
    write(tmp_path, "sbin/ifup", "#!/bin/sh\n", 0o755)
    write(tmp_path, "etc/network/interfaces", "auto lo\niface lo inet loopback\n")
    assert plan_network(tmp_path) == ["network: ifupdown: no interface configured: DHCP on eth0"]
    fix_network(tmp_path)
    assert read(tmp_path, "etc/network/interfaces").endswith("auto lo\niface lo inet loopback\n\n"
                                                              "allow-hotplug eth0\niface eth0 inet dhcp\n")
    assert plan_network(tmp_path) == []


def test_every_fixer_has_the_interface() -> None:
    for fixer in FIXERS:
        assert fixer.name and callable(fixer.detect) and callable(fixer.plan) and callable(fixer.fix)
