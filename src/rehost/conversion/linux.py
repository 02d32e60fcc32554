"""The edits that make a mounted Linux root boot on virtio hardware (MGN's conversion server's job).

Each function takes the mounted root and returns notes (one line per change) for the job log. They are
idempotent: running a conversion twice gives the same result. Files replaced are kept beside the
originals with a ``.rehost-source`` suffix, so an operator can see what the source had.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from rehost.conversion.blockdev import CommandFailed, chroot, chroot_mounts
from rehost.errors import ConversionError

VIRTIO_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "virtio_console")
GUEST_TOOLS = ("open-vm-tools", "open-vm-tools-desktop", "virtualbox-guest-utils", "virtualbox-guest-x11",
               "virtualbox-guest-dkms", "hyperv-daemons", "xe-guest-utilities")
SUFFIX = ".rehost-source"


def _backup(path: Path) -> None:
    backup = path.with_name(path.name + SUFFIX)
    if path.exists() and not backup.exists():
        shutil.copy2(path, backup)


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


def fix_network(root: Path) -> list[str]:
    """Replace hardware-bound network configuration by DHCP on the first NIC (eth0).

    MAC-pinned interface names (systemd .link files, udev persistent-net rules) are removed and static
    configurations (ifupdown, systemd-networkd, netplan) are moved aside; the source's addresses mean
    nothing on the target network.
    """
    notes = []
    for link in sorted((root / "etc/systemd/network").glob("*.link")):
        if re.search(r"^\s*(MACAddress|PermanentMACAddress)\s*=", link.read_text(errors="replace"), re.M):
            link.rename(link.with_name(link.name + SUFFIX))
            notes.append(f"network: removed MAC-pinned interface name {link.relative_to(root)}")
    udev = root / "etc/udev/rules.d/70-persistent-net.rules"
    if udev.exists():
        udev.rename(udev.with_name(udev.name + SUFFIX))
        notes.append("network: removed udev persistent-net rules")
    interfaces = root / "etc/network/interfaces"
    if interfaces.exists() or (root / "sbin/ifup").exists() or (root / "usr/sbin/ifup").exists():
        _backup(interfaces)
        aside = root / f"etc/network/interfaces.d{SUFFIX}"
        for f in sorted((root / "etc/network/interfaces.d").glob("*")):
            aside.mkdir(exist_ok=True)
            f.rename(aside / f.name)
            notes.append(f"network: moved aside /etc/network/interfaces.d/{f.name}")
        interfaces.parent.mkdir(parents=True, exist_ok=True)
        interfaces.write_text("# Written by rehost conversion; the source's file is interfaces" + SUFFIX + "\n"
                              "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
                              "allow-hotplug eth0\niface eth0 inet dhcp\n")
        notes.append("network: ifupdown: DHCP on eth0 (source static configuration replaced)")
    networkd = root / "etc/systemd/network"
    statics = [n for n in sorted(networkd.glob("*.network"))] if networkd.is_dir() else []
    if statics or (root / "lib/systemd/systemd-networkd").exists() and _enabled(root, "systemd-networkd.service"):
        for n in statics:
            n.rename(n.with_name(n.name + SUFFIX))
            notes.append(f"network: moved aside {n.relative_to(root)}")
        networkd.mkdir(parents=True, exist_ok=True)
        (networkd / "80-rehost-dhcp.network").write_text("[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n")
        notes.append("network: systemd-networkd: DHCP on eth0")
    netplan = root / "etc/netplan"
    if netplan.is_dir() and any(netplan.glob("*.yaml")):
        for y in sorted(netplan.glob("*.yaml")):
            y.rename(y.with_name(y.name + SUFFIX))
        (netplan / "50-rehost.yaml").write_text(
            "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n")
        (netplan / "50-rehost.yaml").chmod(0o600)
        notes.append("network: netplan: DHCP on eth0")
    return notes


def _enabled(root: Path, unit: str) -> bool:
    return any((root / "etc/systemd/system").glob(f"*.wants/{unit}"))


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


def add_virtio_to_initramfs(root: Path) -> list[str]:
    """Put the virtio drivers in every initramfs and rebuild it; verify the result.

    Raises `ConversionError` if the guest has neither initramfs-tools nor dracut, if the rebuild fails,
    or if the rebuilt initramfs still lacks virtio_blk (unless the kernel has it built in).
    """
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ConversionError("no kernel found in /boot")
    if (root / "usr/sbin/update-initramfs").exists():
        modules = root / "etc/initramfs-tools/modules"
        have = modules.read_text().split() if modules.exists() else []
        missing = [m for m in VIRTIO_MODULES if m not in have]
        if missing:
            _backup(modules)
            with open(modules, "a") as f:
                f.write("# added by rehost conversion: the target's virtual hardware\n")
                f.write("".join(m + "\n" for m in missing))
        argv = ["update-initramfs", "-u", "-k", "all"]
    elif (root / "usr/bin/dracut").exists() or (root / "usr/sbin/dracut").exists():
        conf = root / "etc/dracut.conf.d/90-rehost-virtio.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(f'add_drivers+=" {" ".join(VIRTIO_MODULES)} "\nhostonly="no"\n')
        argv = ["dracut", "--regenerate-all", "--force"]
    else:
        raise ConversionError("cannot rebuild the initramfs: neither initramfs-tools nor dracut is installed")
    with chroot_mounts(root):
        try:
            chroot(root, argv, timeout=900)
        except CommandFailed as exc:
            raise ConversionError(f"rebuilding the initramfs failed: {exc}") from exc
        for ver in kernels:
            if _builtin(root, ver, "virtio_blk"):
                continue
            initrd = next((p for p in (root / "boot").glob(f"init*{ver}*") if p.is_file()), None)
            if initrd is None:
                raise ConversionError(f"kernel {ver} has no initramfs after the rebuild")
            listing = chroot(root, ["lsinitramfs", f"/boot/{initrd.name}"]) \
                if (root / "usr/bin/lsinitramfs").exists() else \
                chroot(root, ["lsinitrd", f"/boot/{initrd.name}"])
            if "virtio_blk" not in listing:
                raise ConversionError(f"the rebuilt initramfs of kernel {ver} still lacks virtio_blk")
    return [f"initramfs: virtio drivers ({', '.join(VIRTIO_MODULES)}) added for kernel(s) {', '.join(kernels)}"]


def _builtin(root: Path, ver: str, module: str) -> bool:
    builtin = root / "lib/modules" / ver / "modules.builtin"
    return builtin.exists() and f"/{module}.ko" in builtin.read_text(errors="replace")
