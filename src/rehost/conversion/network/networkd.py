"""systemd-networkd (``/etc/systemd/network/*.network``; MAC-pinned ``.link`` files are udev's, see
`rehost.conversion.network.udev`).

The ``.network`` file of the source's NIC (the one with a gateway, else with a static address, else the
first that matches by MAC address) is made to match eth0 by name and to take DHCP: its ``[Match]`` becomes
``Name=eth0``, its ``Address=``, ``Gateway=``, ``DNS=`` and its ``[Address]`` / ``[Route]`` sections are
commented out (the source network's), ``DHCP=yes`` is set; everything else in it (``Domains=``, IPv6
settings, ...) and every other ``.network`` file (loopback, bridges, other NICs) stays.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from rehost.conversion.edits import rel
from rehost.conversion.network.base import (
    TARGET_NIC,
    Change,
    ChangeFixer,
    ini_entries,
    read,
    section_lines,
    write,
)

NETWORK_DIR = "etc/systemd/network"
_SOURCE_NETWORK = {"Address", "Gateway", "DNS"}
_MAC = {"MACAddress", "PermanentMACAddress"}
_YES = ("yes", "ipv4", "true", "on", "1")


def _kind(entries: list[tuple[int, str, str, str]]) -> str:
    """'target', 'gateway', 'static', 'mac' or 'dhcp' (in that order of precedence) for a NIC's file, ''
    for others."""
    names = " ".join(v for _, s, k, v in entries if s == "Match" and k == "Name").split()
    if "lo" in names:
        return ""
    dhcp = [v for _, s, k, v in entries if s == "Network" and k == "DHCP"]
    if names == [TARGET_NIC] and dhcp and dhcp[-1] in _YES and not any(k in _MAC for _, s, k, _ in entries if s == "Match") \
            and not any(k in ("Address", "Gateway") for _, s, k, _ in entries):
        return "target"  # converted already (or the source was configured so)
    if any(k == "Gateway" for _, s, k, _ in entries if s in ("Network", "Route")):
        return "gateway"
    if any(k == "Address" for _, s, k, _ in entries if s in ("Network", "Address")):
        return "static"
    if any(k in _MAC for _, s, k, _ in entries if s == "Match"):
        return "mac"
    if any(k == "DHCP" for _, s, k, _ in entries if s == "Network"):
        return "dhcp"
    return ""


class Networkd(ChangeFixer):
    name = "systemd-networkd"

    def _files(self, root: Path) -> dict[Path, list[str]]:
        return {p: read(p).splitlines() for p in sorted((root / NETWORK_DIR).glob("*.network"))}

    def detect(self, root: Path) -> bool:
        return any(_kind(ini_entries(lines)) for lines in self._files(root).values())

    def changes(self, root: Path) -> list[Change]:
        files = self._files(root)
        kinds = {p: _kind(ini_entries(lines)) for p, lines in files.items()}
        primary = next((p for rank in ("target", "gateway", "static", "mac", "dhcp") for p, k in kinds.items() if k == rank), None)
        if primary is None:
            return []
        lines = list(files[primary])
        entries = ini_entries(lines)
        match = [(i, k, v) for i, s, k, v in entries if s == "Match"]
        names = " ".join(v for _, k, v in match if k == "Name").split()
        what = []
        if any(k in _MAC for _, k, _ in match) or not any(fnmatch.fnmatchcase(TARGET_NIC, n) for n in names):
            for i, _k, _ in match:
                lines[i] = "#" + lines[i]
            header = next((i for i in section_lines(lines, "Match")), None)
            if header is None:
                lines[:0] = ["[Match]", f"Name={TARGET_NIC}", ""]
            else:
                lines.insert(header + 1, f"Name={TARGET_NIC}")
            what.append(f"matches {TARGET_NIC} (was {' '.join(f'{k}={v}' for _, k, v in match) or 'anything'})")
        dropped = []
        for i, s, k, v in ini_entries(lines):
            if s == "Network" and k in _SOURCE_NETWORK:
                lines[i] = "#" + lines[i]
                dropped.append(f"{k}={v}")
        for section in ("Address", "Route"):
            idx = section_lines(lines, section)
            if idx:
                for i in idx:
                    if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                        lines[i] = "#" + lines[i]
                dropped.append(f"[{section}]")
        dhcp = [(i, v) for i, s, k, v in ini_entries(lines) if s == "Network" and k == "DHCP"]
        if not dhcp or dhcp[-1][1] not in _YES:
            for i, _ in dhcp:
                lines[i] = "#" + lines[i]
            net = section_lines(lines, "Network")
            if net:
                lines.insert(net[0] + 1, "DHCP=yes")
            else:
                lines += ["", "[Network]", "DHCP=yes"]
            what.append("DHCP=yes")
        if dropped:
            what.append("dropped the source network's " + ", ".join(dropped))
        if not what:
            return []
        text = "\n".join(lines) + "\n"
        return [Change(f"network: systemd-networkd: {rel(root, primary)}: DHCP on {TARGET_NIC}: " + "; ".join(what),
                       lambda: write(primary, text))]
