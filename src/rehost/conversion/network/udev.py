"""Interface names pinned to the source NIC's MAC address by udev: ``70-persistent-net.rules`` (written
by old udev and by RHEL 6/7 installers) and systemd ``.link`` files (applied by systemd-udevd whatever
the network stack). The target's NIC has another MAC (or, worse, the same one under QEMU's default, which
would rename it away from eth0), so the pinning goes: rules lines that name a NIC by address are
commented out (a file left with nothing else is moved aside), MAC-matched ``.link`` files are moved aside.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from rehost.conversion.edits import rel
from rehost.conversion.network.base import Change, ChangeFixer, move_aside, read, write

RULES_DIR = "etc/udev/rules.d"
LINK_DIR = "etc/systemd/network"
_PINNING_RULE = re.compile(r'ATTRS?\{address\}\s*==.*\bNAME\s*:?=|\bNAME\s*:?=.*ATTRS?\{address\}\s*==')
_MAC_MATCH = re.compile(r"^\s*(MACAddress|PermanentMACAddress)\s*=", re.M)


def _pinning_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines())
            if not line.lstrip().startswith("#") and _PINNING_RULE.search(line)]


class UdevNaming(ChangeFixer):
    name = "udev interface naming"

    def _rules(self, root: Path) -> list[Path]:
        return [p for p in sorted((root / RULES_DIR).glob("*.rules")) if _pinning_lines(read(p))]

    def _links(self, root: Path) -> list[Path]:
        return [p for p in sorted((root / LINK_DIR).glob("*.link")) if _MAC_MATCH.search(read(p))]

    def detect(self, root: Path) -> bool:
        return bool(self._rules(root) or self._links(root))

    def changes(self, root: Path) -> list[Change]:
        out = []
        for rules in self._rules(root):
            text = read(rules)
            lines = text.splitlines()
            pinned = _pinning_lines(text)
            rest = [line for i, line in enumerate(lines) if i not in pinned and line.strip()
                    and not line.lstrip().startswith("#")]
            if not rest:
                out.append(Change(f"network: udev: moved aside {rel(root, rules)} (names NICs by MAC address)",
                                  partial(move_aside, rules)))
                continue
            new = "\n".join("# rehost: the source's NIC only: " + line if i in pinned else line
                            for i, line in enumerate(lines)) + "\n"
            out.append(Change(f"network: udev: {rel(root, rules)}: disabled {len(pinned)} rule(s) naming NICs "
                              "by MAC address", partial(write, rules, new)))
        for link in self._links(root):
            out.append(Change(f"network: removed MAC-pinned interface name {rel(root, link)}",
                              partial(move_aside, link)))
        return out
