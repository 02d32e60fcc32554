"""A guest with a network stack installed but no NIC configured in any stack rehost knows: DHCP on eth0 for
the stack that is there (ifupdown if installed, else systemd-networkd if enabled). NetworkManager needs
nothing: it brings an unconfigured ethernet up with DHCP by itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rehost.conversion.network.base import TARGET_NIC, Change, ChangeFixer, NetworkFixer, read, write

IFUPDOWN = "etc/network/interfaces"
NETWORKD = "etc/systemd/network/80-rehost-dhcp.network"


def _enabled(root: Path, unit: str) -> bool:
    return any((root / "etc/systemd/system").glob(f"*.wants/{unit}"))


class Fallback(ChangeFixer):
    name = "fallback DHCP"

    def __init__(self, others: Sequence[NetworkFixer]) -> None:
        self.others = others

    def detect(self, root: Path) -> bool:
        return not any(f.detect(root) for f in self.others) and bool(self.changes(root))

    def changes(self, root: Path) -> list[Change]:
        if any((root / d / "ifup").exists() for d in ("sbin", "usr/sbin")):
            path = root / IFUPDOWN
            text = read(path)
            if not text.strip():
                text = "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n"
            text = text.rstrip("\n") + f"\n\nallow-hotplug {TARGET_NIC}\niface {TARGET_NIC} inet dhcp\n"
            return [Change(f"network: ifupdown: no interface configured: DHCP on {TARGET_NIC}",
                           lambda: write(path, text))]
        if _enabled(root, "systemd-networkd.service") and not (root / NETWORKD).exists():
            return [Change(f"network: systemd-networkd: no interface configured: DHCP on {TARGET_NIC}",
                           lambda: write(root / NETWORKD, f"[Match]\nName={TARGET_NIC}\n\n[Network]\nDHCP=yes\n"))]
        return []
