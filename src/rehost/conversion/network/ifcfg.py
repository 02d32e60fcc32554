"""RHEL ``ifcfg`` files (``/etc/sysconfig/network-scripts/ifcfg-*``), read by the initscripts ``network``
service (RHEL 7 and older) and by NetworkManager's ifcfg-rh plugin (RHEL 8, 9): converting the files
converts whichever reads them.

The file holding the source's address (``GATEWAY``, else a static ``IPADDR``, else ``HWADDR``, else DHCP)
gets ``BOOTPROTO=dhcp`` without the source network's ``IPADDR*``, ``PREFIX*``, ``NETMASK*``, ``GATEWAY*``,
``DNS*`` and ``PEERDNS=no`` (``DOMAIN`` and the rest stay). Its ethernet (itself, or the bridge's or
bond's port) loses ``HWADDR`` and becomes ``DEVICE=eth0`` in ``ifcfg-eth0``; the old name's ``route-*``
file (routes via the source's gateway) goes, and so does a global ``GATEWAY`` in /etc/sysconfig/network.
Both readers take every ``ifcfg-*`` file, so originals go to ``network-scripts.rehost-source/``.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from rehost.conversion.edits import rel
from rehost.conversion.network.base import TARGET_NIC, Change, ChangeFixer, aside_dir, move_aside, read, write

SCRIPTS = "etc/sysconfig/network-scripts"
GLOBAL = "etc/sysconfig/network"
_SOURCE_NETWORK = re.compile(r"^(IPADDR|PREFIX|NETMASK|GATEWAY|DNS|IPV6ADDR|IPV6ADDR_SECONDARIES|IPV6_DEFAULTGW)"
                             r"\d*$|^PEERDNS$")
_VAR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
#: Names the initscripts skip, so they are never a configuration.
_IGNORED = re.compile(r"(~|\.bak|\.orig|\.rpmnew|\.rpmorig|\.rpmsave|\.rehost-source)$")


class Ifcfg:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = read(path).splitlines()
        self.vars: dict[str, str] = {}
        for line in self.lines:
            if m := _VAR.match(line):
                self.vars[m.group(1)] = m.group(2).strip().strip("'\"")

    @property
    def device(self) -> str:
        return self.vars.get("DEVICE") or self.path.name.removeprefix("ifcfg-")

    @property
    def holder(self) -> bool:
        return self.vars.get("TYPE", "").lower() in ("bridge", "bond") or "BONDING_OPTS" in self.vars

    def rank(self) -> int:
        """5 converted already, 4 gateway, 3 static, 2 MAC-bound, 1 other NIC, 0 loopback or a port."""
        v = self.vars
        if self.device == "lo" or v.get("BRIDGE") or v.get("MASTER") or v.get("TYPE", "Ethernet").lower() not in (
                "ethernet", "bridge", "bond"):
            return 0
        proto = v.get("BOOTPROTO", "none").lower()
        if proto == "dhcp" and self.device == TARGET_NIC and not any(_SOURCE_NETWORK.match(k) for k in v) \
                and "HWADDR" not in v:
            return 5
        if any(k.startswith("GATEWAY") for k in v):
            return 4
        if proto in ("static", "none") and any(k.startswith("IPADDR") for k in v):
            return 3
        return 2 if "HWADDR" in v else 1


class RhelIfcfg(ChangeFixer):
    name = "RHEL ifcfg"

    def _files(self, root: Path) -> list[Ifcfg]:
        return [Ifcfg(p) for p in sorted((root / SCRIPTS).glob("ifcfg-*")) if p.is_file() and not _IGNORED.search(p.name)]

    def detect(self, root: Path) -> bool:
        return any(f.rank() for f in self._files(root))

    def changes(self, root: Path) -> list[Change]:
        files = self._files(root)
        primary = max(files, key=Ifcfg.rank, default=None)
        if primary is None or primary.rank() in (0, 5):
            return []
        nic = primary if not primary.holder else next(
            (f for f in files if primary.device in (f.vars.get("BRIDGE"), f.vars.get("MASTER"))), None)
        aside = aside_dir(root / SCRIPTS)
        out = []
        for f in (primary, nic) if nic is not None and nic is not primary else (primary,):
            lines, what = list(f.lines), []
            if f is primary:
                dropped = []
                for i, line in enumerate(lines):
                    if (m := _VAR.match(line)) and _SOURCE_NETWORK.match(m.group(1)):
                        lines[i] = "#" + line
                        dropped.append(m.group(1))
                proto = f.vars.get("BOOTPROTO", "none")
                if proto.lower() != "dhcp":
                    lines = [line for line in lines if not re.match(r"\s*BOOTPROTO=", line)] + ["BOOTPROTO=dhcp"]
                if proto.lower() != "dhcp" or dropped:
                    what.append(f"DHCP on {TARGET_NIC}: BOOTPROTO {proto} -> dhcp" + (f" (dropped {', '.join(dropped)})" if dropped else ""))
            target = f.path
            if f is nic:
                for i, line in enumerate(lines):
                    if (m := _VAR.match(line)) and m.group(1) == "HWADDR":
                        lines[i] = "#" + line
                        what.append(f"HWADDR {f.vars['HWADDR']} removed")
                    elif m and m.group(1) == "DEVICE" and f.device != TARGET_NIC:
                        lines[i] = f"DEVICE={TARGET_NIC}"
                if f.device != TARGET_NIC:
                    if "DEVICE" not in f.vars:
                        lines.append(f"DEVICE={TARGET_NIC}")
                    what.append(f"DEVICE {f.device} -> {TARGET_NIC}")
                    target = f.path.with_name(f"ifcfg-{TARGET_NIC}")
            if not what:
                continue
            text = "\n".join(lines) + "\n"
            out.append(Change(f"network: ifcfg: {rel(root, f.path)}" + (f" -> {rel(root, target)}" if target != f.path else "")
                              + ": " + "; ".join(what), partial(self._write, f.path, target, text, aside)))
            if f is nic and f.device != TARGET_NIC:
                route = f.path.with_name(f"route-{f.device}")
                for extra in (route, route.with_name(f"route6-{f.device}")):
                    if extra.is_file():
                        out.append(Change(f"network: ifcfg: moved aside {rel(root, extra)} (the source network's routes)",
                                          partial(move_aside, extra, aside)))
        gw = root / GLOBAL
        if any(re.match(r"\s*GATEWAY=", line) for line in read(gw).splitlines()):
            text = "\n".join("#" + line if re.match(r"\s*GATEWAY=", line) else line for line in read(gw).splitlines()) + "\n"
            out.append(Change(f"network: ifcfg: {rel(root, gw)}: global GATEWAY dropped (the source network's)",
                              lambda: write(gw, text)))
        return out

    @staticmethod
    def _write(source: Path, target: Path, text: str, aside: Path) -> None:
        if target.exists() and target != source:
            move_aside(target, aside)  # the source's own eth0 (not the NIC that carried its address)
        write(source, text, aside)
        if target != source:
            source.rename(target)
