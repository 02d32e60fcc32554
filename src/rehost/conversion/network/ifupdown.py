"""ifupdown (Debian, Ubuntu before netplan): ``/etc/network/interfaces`` and ``interfaces.d``.

The stanza holding the source's address (the one with a ``gateway``, else the first configured non-loopback
interface) becomes ``iface <nic> inet dhcp``; when it is a bridge or bond, it keeps its ports and gets
DHCP itself. The source NIC's name (the stanza's, or its bridge's/bond's first port) becomes eth0
everywhere it is named. Everything else stays: loopback, other stanzas, ``dns-search``, hooks; but other
NICs' ``auto`` lines become ``allow-hotplug`` (a NIC the target lacks would otherwise fail the boot's
``ifup -a``), and the source's static addresses, routes, nameservers and IPv6 static stanza of that
interface are dropped: they belong to the source network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rehost.conversion.edits import rel
from rehost.conversion.network.base import TARGET_NIC, Change, ChangeFixer, aside_dir, read, write

INTERFACES = "etc/network/interfaces"
INTERFACES_D = "etc/network/interfaces.d"
_HEADER = re.compile(r"^\s*(iface|mapping|auto|allow-[\w-]+|source|source-directory|source-dir|rename|"
                     r"no-auto-down|no-scripts)\b")
#: Options of the converted stanza that describe the source network (dropped).
_SOURCE_NETWORK = {"address", "netmask", "gateway", "broadcast", "network", "pointopoint", "hwaddress",
                   "dns-nameservers", "dns-nameserver"}
_PORTS = ("bridge_ports", "bridge-ports", "bond-slaves", "bond_slaves", "vlan-raw-device")
_BOND_OR_BRIDGE = re.compile(r"^(bridge[_-]|bond[_-]|vlan[_-]raw)")


@dataclass
class Stanza:
    file: Path
    start: int  # index of the header line
    end: int  # index after the last option line
    name: str
    family: str
    method: str
    options: dict[str, str] = field(default_factory=dict)


def _files(root: Path) -> list[Path]:
    files = [root / INTERFACES] if (root / INTERFACES).is_file() else []
    return files + [p for p in sorted((root / INTERFACES_D).glob("*")) if p.is_file()]


def _stanzas(path: Path, lines: list[str]) -> list[Stanza]:
    out: list[Stanza] = []
    current: Stanza | None = None
    for i, line in enumerate(lines):
        words = line.split()
        if _HEADER.match(line):
            current = None
            if words[0] == "iface" and len(words) >= 4:
                current = Stanza(path, i, i + 1, words[1], words[2], words[3])
                out.append(current)
        elif current is not None and words and not words[0].startswith("#"):
            current.options[words[0]] = " ".join(words[1:])
            current.end = i + 1
    return out


def _is_port_holder(s: Stanza) -> bool:
    return any(_BOND_OR_BRIDGE.match(k) for k in s.options)


def _ports(s: Stanza) -> list[str]:
    """A bridge's, bond's or VLAN's underlying NICs."""
    return [p for k in _PORTS for p in s.options.get(k, "").split() if p != "none"]


class Ifupdown(ChangeFixer):
    name = "ifupdown"

    def detect(self, root: Path) -> bool:
        return any(s.name != "lo" for f in _files(root) for s in _stanzas(f, read(f).splitlines()))

    def changes(self, root: Path) -> list[Change]:
        texts = {f: read(f).splitlines() for f in _files(root)}
        stanzas = [s for f, lines in texts.items() for s in _stanzas(f, lines) if s.name != "lo"]
        inet = [s for s in stanzas if s.family == "inet"]
        holder = next((s for s in inet if s.method == "dhcp" and TARGET_NIC in (s.name, *_ports(s))), None) \
            or next((s for s in inet if "gateway" in s.options), None) or next(iter(inet), None)
        if holder is None:
            return []
        nic = next(iter(_ports(holder)), holder.name)
        new = {f: list(lines) for f, lines in texts.items()}
        what: dict[Path, list[str]] = {f: [] for f in texts}
        if holder.method != "dhcp" or set(holder.options) & _SOURCE_NETWORK:
            dropped = sorted(set(holder.options) & _SOURCE_NETWORK)
            lines = new[holder.file]
            lines[holder.start] = re.sub(r"^(\s*iface\s+\S+\s+inet\s+)\S+", r"\g<1>dhcp", lines[holder.start])
            for i in range(holder.start + 1, holder.end):
                opt = lines[i].split()
                if opt and opt[0] in _SOURCE_NETWORK:
                    lines[i] = "#" + lines[i] + "  # rehost: the source network's"
            what[holder.file].append(f"DHCP on {TARGET_NIC}: {holder.name} inet {holder.method} -> dhcp"
                                     + (f" (dropped {', '.join(dropped)})" if dropped else ""))
        for s in stanzas:
            if s.name == holder.name and s.family == "inet6" and s.method in ("static", "v4tunnel"):
                lines = new[s.file]
                for i in range(s.start, s.end):
                    lines[i] = "#" + lines[i] + ("  # rehost: the source network's" if i == s.start else "")
                what[s.file].append(f"{s.name} inet6 {s.method} disabled")
        if nic != TARGET_NIC:
            name_re = re.compile(r"(?<![\w.:-])" + re.escape(nic) + r"(?![\w.:-])")
            for f, lines in new.items():
                for i, line in enumerate(lines):
                    words = line.split()
                    if words and (_HEADER.match(line) and words[0] in ("iface", "auto") or words[0].startswith("allow-")
                                  or words[0] in _PORTS) and name_re.search(line):
                        lines[i] = name_re.sub(TARGET_NIC, line)
                        if f"{nic} renamed {TARGET_NIC}" not in what[f]:
                            what[f].append(f"{nic} renamed {TARGET_NIC}")
        others = {s.name for s in stanzas if s.name not in (nic, holder.name, TARGET_NIC)
                  and not _is_port_holder(s) and not re.search(r"[.:]", s.name)}
        for f, lines in new.items():
            for i, line in enumerate(lines):
                words = line.split()
                if words and words[0] == "auto" and any(w in others for w in words[1:]):
                    moved = [w for w in words[1:] if w in others]
                    kept = [w for w in words[1:] if w not in others]
                    lines[i] = ("auto " + " ".join(kept) + "\n" if kept else "") + "allow-hotplug " + " ".join(moved)
                    what[f].append(f"auto {' '.join(moved)} -> allow-hotplug (a NIC the target lacks)")
        out = []
        for f, lines in new.items():
            if lines != texts[f]:
                aside = None if f == root / INTERFACES else aside_dir(root / INTERFACES_D)
                text = "\n".join(lines) + "\n"
                out.append(Change(f"network: ifupdown: {rel(root, f)}: " + "; ".join(what[f]),
                                  partial(write, f, text, aside)))
        return out
