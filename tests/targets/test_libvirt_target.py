"""The libvirt target against a real libvirtd (started in a network namespace of the test's own): a tiny guest's
whole lifecycle as libvirt sees it, and what terminate leaves behind (nothing)."""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rehost.launch.bootcheck import wait_until_booted
from rehost.targets.base import InstanceState, LaunchSpec, Network
from rehost.targets.libvirt import LibvirtTarget

from .conftest import TINY_TEXT
from .libvirt_host import NETWORK, POOL, LibvirtHost

pytestmark = [pytest.mark.root, pytest.mark.slow]
NVRAM = Path("/var/lib/libvirt/qemu/nvram")
BANNER = TINY_TEXT.decode().strip()


def _wait_console(target: LibvirtTarget, instance_id: str, count: int = 1, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = target.console_output(instance_id)
        if text.count(BANNER) >= count or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def test_a_tiny_guest_lives_and_leaves_nothing_behind(libvirt_host: LibvirtHost, tiny_disk: Path,  # noqa: F811
                                                      tmp_path: Path) -> None:
    host = libvirt_host
    target = LibvirtTarget(host.url, tmp_path / "records", network=NETWORK, pool=POOL, shutdown_timeout=3)
    assert target.networks() == (Network(NETWORK, "192.168.122.0/24", public=False),)
    data = tmp_path / "data.raw"  # a raw second disk: converted to qcow2 for the upload, its bytes unchanged
    data.write_bytes(b"rehost data disk\n" + bytes(4 << 20) + b"tail\n")
    bios = target.launch(LaunchSpec(instance_id="i-0a000000000000001", instance_type="t3.small", vcpus=2,
                                    memory_mib=256, disk_image=tiny_disk, data_disks=(data,)))
    uefi = target.launch(LaunchSpec(instance_id="i-0a000000000000002", instance_type="t3.micro", vcpus=1,
                                    memory_mib=128, disk_image=tiny_disk, boot_mode="uefi"))
    assert bios.state is InstanceState.PENDING and bios.port_map == {}

    # The domain as libvirt holds it: TCG, the type's size, every disk virtio in the pool, the NIC, the console.
    dom = ET.fromstring(host.virsh("dumpxml", bios.instance_id))
    assert dom.get("type") == "qemu" and dom.findtext("vcpu") == "2"
    assert int(dom.findtext("memory") or 0) == 256 * 1024
    disks = dom.findall("devices/disk")
    assert [d.find("target").get("bus") for d in disks] == ["virtio", "virtio"]  # type: ignore[union-attr]
    assert {d.find("source").get("pool") for d in disks} == {POOL}  # type: ignore[union-attr]
    assert dom.find("devices/interface/source").get("network") == NETWORK  # type: ignore[union-attr]
    compare = subprocess.run(["qemu-img", "compare", "-q", "-U", str(data), str(host.pool_dir / f"{bios.instance_id}-disk1")])
    assert compare.returncode == 0, "the uploaded data disk differs from its source"
    uefi_dom = ET.fromstring(host.virsh("dumpxml", uefi.instance_id))
    assert "OVMF" in (uefi_dom.findtext("os/loader") or "")
    assert (NVRAM / f"{uefi.instance_id}_VARS.fd").is_file()

    # The serial console, read back through libvirt; the boot check sees the guest never reach user space.
    assert BANNER in _wait_console(target, bios.instance_id)
    assert target.describe(bios.instance_id).state is InstanceState.RUNNING
    result = wait_until_booted(target, bios.instance_id, 2, poll=0.5)
    assert not result.booted and result.console_tail[-1] == BANNER

    # A new driver (a restarted control plane) finds both again; stop and start keep the disks and console.
    again = LibvirtTarget(host.url, tmp_path / "records", network=NETWORK, pool=POOL, shutdown_timeout=3)
    assert {i.instance_id: i.state for i in again.list()}[bios.instance_id] is InstanceState.RUNNING
    again.stop(bios.instance_id)  # the tiny guest ignores ACPI: destroyed after the grace period
    deadline = time.monotonic() + 30
    while again.describe(bios.instance_id).state is not InstanceState.STOPPED and time.monotonic() < deadline:
        time.sleep(0.5)
    stopped = again.describe(bios.instance_id)
    assert stopped.state is InstanceState.STOPPED and stopped.state_reason == "Client.UserInitiatedShutdown"
    assert "shut off" in host.virsh("domstate", bios.instance_id)
    assert again.start(bios.instance_id).state is InstanceState.PENDING
    assert _wait_console(again, bios.instance_id, count=2).count(BANNER) == 2

    # Terminate: no domain, volume, console file or NVRAM left on the host; the console stays readable here.
    for inst in (bios, uefi):
        again.terminate(inst.instance_id)
        assert again.describe(inst.instance_id).state is InstanceState.TERMINATED
    assert host.virsh("list", "--all", "--name").split() == []
    assert [line for line in host.virsh("vol-list", POOL).splitlines()[2:] if line.strip()] == []
    assert list(host.pool_dir.iterdir()) == []
    assert not (NVRAM / f"{uefi.instance_id}_VARS.fd").exists()
    assert again.console_output(bios.instance_id).count(BANNER) == 2
    again.terminate(bios.instance_id)  # idempotent
    assert again.purge_terminated(0) and again.list() == []
