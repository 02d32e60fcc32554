"""The edits that make a mounted Linux root boot on virtio hardware (MGN's conversion server's job).

Network configuration and the initramfs have fixer packages of their own (`rehost.conversion.network`,
`rehost.conversion.initramfs`). Each function takes the mounted root and returns notes (one line per
change) for the job log. They are idempotent: running a conversion twice gives the same result. Files
replaced are kept beside the originals with a ``.rehost-source`` suffix, so an operator can see what the
source had.
"""

from __future__ import annotations

import re
from pathlib import Path

from rehost.conversion.blockdev import CommandFailed, chroot
from rehost.errors import ConversionError

GUEST_TOOLS = ("open-vm-tools", "open-vm-tools-desktop", "virtualbox-guest-utils", "virtualbox-guest-x11",
               "virtualbox-guest-dkms", "hyperv-daemons", "xe-guest-utilities")
def os_release(root: Path) -> dict[str, str]:
    """Parse the guest's os-release; raise `ConversionError` when there is none (unknown OS)."""
    for rel in ("etc/os-release", "usr/lib/os-release"):
        path = root / rel
        if path.is_file() or path.is_symlink():
            target = path
            if path.is_symlink():  # resolve inside the guest, not on the host
                link = path.readlink()
                target = root / str(link).lstrip("/") if link.is_absolute() else path.parent / link
            try:
                text = target.read_text(errors="replace")
            except OSError:
                continue
            return {k: v.strip().strip('"') for k, _, v in
                    (line.partition("=") for line in text.splitlines() if "=" in line)}
    raise ConversionError("unknown operating system: the root file system has no /etc/os-release")


def set_hostname(root: Path, hostname: str) -> list[str]:
    (root / "etc/hostname").write_text(hostname + "\n")
    return [f"hostname set to {hostname}"]


def remove_guest_tools(root: Path) -> list[str]:
    """Purge the source hypervisor's guest tools (VMware, VirtualBox, Hyper-V, Xen) if installed."""
    status = root / "var/lib/dpkg/status"
    if not status.exists():
        return []
    text = status.read_text(errors="replace")
    installed = [p for p in GUEST_TOOLS
                 if re.search(rf"^Package: {re.escape(p)}\nStatus: install ok installed", text, re.M)]
    if not installed:
        return []
    try:
        chroot(root, ["dpkg", "--purge", "--force-depends", *installed])
    except CommandFailed as exc:
        return [f"guest tools: could not remove {', '.join(installed)}: {exc}"]
    return [f"guest tools: removed {', '.join(installed)}"]
