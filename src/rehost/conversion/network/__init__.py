"""Network configuration fixers: the source's NIC configuration gives way to DHCP on the target's NIC.

One module per network stack (as Coriolis' osmorphing has), each a `NetworkFixer`: ``detect`` (is the
stack configured on this guest), ``plan`` (what conversion would change, read-only: the pre-flight
inspection shows it) and ``fix`` (apply it; idempotent). Every detected stack is converted the same way,
so whichever one is active on the guest (NetworkManager reads ifcfg files through its ifcfg-rh plugin;
netplan renders to networkd or NetworkManager) the target's one NIC, eth0 (conversion puts
``net.ifnames=0`` on the kernel command line), takes DHCP. A new stack is a new module added to `FIXERS`.
"""

from __future__ import annotations

from pathlib import Path

from rehost.conversion.edits import SUFFIX
from rehost.conversion.network.base import TARGET_NIC, NetworkFixer
from rehost.conversion.network.fallback import Fallback
from rehost.conversion.network.ifcfg import RhelIfcfg
from rehost.conversion.network.ifupdown import Ifupdown
from rehost.conversion.network.netplan import Netplan
from rehost.conversion.network.networkd import Networkd
from rehost.conversion.network.networkmanager import NetworkManagerKeyfiles
from rehost.conversion.network.udev import UdevNaming

__all__ = ["FIXERS", "SUFFIX", "TARGET_NIC", "NetworkFixer", "detected", "fix_network", "plan_network"]

_STACKS: tuple[NetworkFixer, ...] = (UdevNaming(), Ifupdown(), Networkd(), Netplan(), NetworkManagerKeyfiles(),
                                     RhelIfcfg())
#: In the order they run: interface naming first, then each stack; the fallback last.
FIXERS: tuple[NetworkFixer, ...] = (*_STACKS, Fallback(_STACKS))


def detected(root: Path) -> list[NetworkFixer]:
    """The fixers whose stack is configured on the guest mounted at ``root``."""
    return [f for f in FIXERS if f.detect(root)]


def plan_network(root: Path) -> list[str]:
    """What `fix_network` would change on the guest at ``root``, one line each (read-only)."""
    return [line for f in detected(root) for line in f.plan(root)]


def fix_network(root: Path) -> list[str]:
    """Convert every detected stack's configuration; return the notes for the job log."""
    return [line for f in detected(root) for line in f.fix(root)]
