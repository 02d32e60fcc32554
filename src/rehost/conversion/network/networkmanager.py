"""NetworkManager keyfiles (``/etc/NetworkManager/system-connections/``; RHEL 9+, Fedora, desktops).

The profile holding the source's address (an IPv4 gateway, else ``method=manual``, else a MAC-bound
ethernet profile, else the first ethernet, bridge or bond profile) gets ``method=auto`` for IPv4 (and
IPv6 when it was manual), without the source network's addresses, gateway, routes and DNS servers
(``dns-search`` stays). Its ethernet profile (itself, or the bridge's or bond's port profile) loses
``mac-address`` and names ``interface-name=eth0`` when it named an interface. Other profiles stay. NM reads
every file in that directory, so originals go to ``system-connections.rehost-source/``.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from rehost.conversion.edits import rel
from rehost.conversion.network.base import (
    TARGET_NIC,
    Change,
    ChangeFixer,
    aside_dir,
    ini_entries,
    read,
    section_lines,
    write,
)

CONNECTIONS = "etc/NetworkManager/system-connections"
_ETHERNET = ("ethernet", "802-3-ethernet")
_HOLDERS = ("bridge", "bond")
_SOURCE_NETWORK = re.compile(r"^(address(es)?\d*|gateway|dns|routes?\d*(_options)?|ignore-auto-dns)$")


class Profile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = read(path).splitlines()
        self.values = {(s, k): v for _, s, k, v in ini_entries(self.lines)}

    def get(self, section: str, key: str) -> str:
        return self.values.get((section, key), "")

    @property
    def type(self) -> str:
        return self.get("connection", "type")

    def rank(self) -> int:
        """5 converted already, 4 gateway, 3 manual, 2 MAC-bound, 1 other ethernet/bridge/bond, 0 not a NIC's."""
        if self.type not in (*_ETHERNET, *_HOLDERS) or self.get("connection", "master"):
            return 0  # a bridge's or bond's port carries no address
        v4 = {k: v for (s, k), v in self.values.items() if s == "ipv4"}
        mac = self.get("ethernet", "mac-address") or self.get("802-3-ethernet", "mac-address")
        if v4.get("method", "auto") == "auto" and not mac and self.get("connection", "interface-name") in ("", TARGET_NIC) \
                and not any(_SOURCE_NETWORK.match(k) for k in v4):
            return 5
        if "gateway" in v4 or any(re.match(r"address(es)?\d*$", k) and "," in v for k, v in v4.items()):
            return 4
        if v4.get("method") == "manual":
            return 3
        return 2 if mac else 1

    def names(self) -> set[str]:
        """What a port profile's ``master`` may name this profile by."""
        return {self.get("connection", k) for k in ("interface-name", "uuid", "id")} - {""}


class NetworkManagerKeyfiles(ChangeFixer):
    name = "NetworkManager keyfiles"

    def _profiles(self, root: Path) -> list[Profile]:
        d = root / CONNECTIONS
        return [Profile(p) for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")] \
            if d.is_dir() else []

    def detect(self, root: Path) -> bool:
        return any(p.rank() for p in self._profiles(root))


    def changes(self, root: Path) -> list[Change]:
        profiles = self._profiles(root)
        primary = max(profiles, key=Profile.rank, default=None)
        if primary is None or primary.rank() in (0, 5):
            return []
        nic = primary if primary.type in _ETHERNET else next(
            (p for p in profiles if p.type in _ETHERNET and p.get("connection", "master") in primary.names()), None)
        out = []
        for prof in (primary, nic) if nic is not None and nic is not primary else (primary,):
            lines, what = list(prof.lines), []
            if prof is primary:
                for family in ("ipv4", "ipv6"):
                    idx = section_lines(lines, family)
                    dropped = [(i, k) for i, s, k, _ in ini_entries(lines) if s == family and _SOURCE_NETWORK.match(k)]
                    for i, _ in dropped:
                        lines[i] = "#" + lines[i]
                    method = prof.get(family, "method") or "auto"  # NetworkManager's default
                    switch = method == "manual" or family == "ipv4" and method != "auto"
                    if switch:
                        at = next((i for i, s, k, _ in ini_entries(lines) if s == family and k == "method"), None)
                        if at is not None:
                            lines[at] = "method=auto"
                        elif idx:
                            lines.insert(idx[0] + 1, "method=auto")
                        else:
                            lines += ["", f"[{family}]", "method=auto"]
                    if switch or dropped:
                        what.append((f"DHCP on {TARGET_NIC}: " if family == "ipv4" else "")
                                    + (f"{family}.method {method} -> auto" if switch else family)
                                    + (f" (dropped {', '.join(k for _, k in dropped)})" if dropped else ""))
            if prof is nic:
                for i, s, k, v in ini_entries(lines):
                    if s in _ETHERNET and k == "mac-address":
                        lines[i] = "#" + lines[i]
                        what.append(f"mac-address {v} removed")
                    if s == "connection" and k == "interface-name" and v != TARGET_NIC:
                        lines[i] = f"interface-name={TARGET_NIC}"
                        what.append(f"interface-name {v} -> {TARGET_NIC}")
            if what:
                text = "\n".join(lines) + "\n"
                out.append(Change(f"network: NetworkManager: {rel(root, prof.path)}: " + "; ".join(what),
                                  partial(write, prof.path, text, aside_dir(root / CONNECTIONS))))
        return out
