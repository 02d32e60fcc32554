"""Conversion on real disk images: the source boots on virtio after it; what cannot be converted fails."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest

from images.fixtures import MARKER, need_root, ssh
from rehost.conversion import convert
from rehost.conversion.blockdev import loop_device, make_single_partition_mbr, mounted, run
from rehost.errors import ConversionError
from rehost.images.sourcevm import wait_http
from rehost.targets.accel import kernel_boots
from rehost.targets.base import InstanceState, LaunchSpec, new_instance_id
from rehost.targets.qemu import QemuTarget


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def small_disk(tmp_path: Path, *, files: dict[str, str], boot_code: bool = True, luks: bool = False,
               damaged: bool = False) -> Path:
    """A 64 MiB MBR disk with one ext4 partition holding ``files`` (or a LUKS header, or a superblock
    claiming an unknown incompatible feature, which no kernel mounts)."""
    need_root()
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    part = make_single_partition_mbr(img)
    if boot_code:
        with open(img, "r+b") as f:
            f.write(Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()[:440])
    with loop_device(img, offset=part.offset, size=part.size) as dev:
        if luks:
            # A LUKS1 header as cryptsetup writes it (magic, version, cipher): what the detector sees.
            with open(dev, "r+b") as f:
                f.write(b"LUKS\xba\xbe\x00\x01" + b"aes".ljust(32, b"\0") + b"xts-plain64".ljust(32, b"\0"))
        else:
            run(["mkfs.ext4", "-q", str(dev)])
            with mounted(dev, tmp_path / "mnt") as root:
                for rel, text in files.items():
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    (root / rel).write_text(text)
            if damaged:
                with open(dev, "r+b") as f:
                    f.seek(1024 + 0x60)  # s_feature_incompat
                    flags = int.from_bytes(f.read(4), "little") | 0x40000000
                    f.seek(1024 + 0x60)
                    f.write(flags.to_bytes(4, "little"))
    return img


OS = {"etc/os-release": "ID=debian\nPRETTY_NAME=Debian\n", "etc/fstab": "/dev/sda1 / ext4 defaults 0 1\n"}


@pytest.mark.root
@pytest.mark.parametrize(
    ("kind", "match"),
    [("no-table", "no partition table"), ("luks", "encrypted \\(LUKS"),
     ("no-etc", "unknown operating system"), ("no-os-release", "unknown operating system"),
     ("no-boot-code", "no boot loader"), ("no-boot-config", "no boot loader"),
     ("damaged", "no root file system could be mounted: disk 1 partition 1 \\(ext4")],
)
def test_unconvertible_disks_fail_with_the_reason(tmp_path: Path, kind: str, match: str) -> None:
    need_root()
    if kind == "no-table":
        img = tmp_path / "blank.img"
        img.write_bytes(bytes(1 << 20))
    elif kind == "luks":
        img = small_disk(tmp_path, files={}, luks=True)
    elif kind == "no-etc":
        img = small_disk(tmp_path, files={"data/readme": "not an OS"})
    elif kind == "no-os-release":
        img = small_disk(tmp_path, files={"etc/fstab": OS["etc/fstab"], "boot/extlinux/extlinux.conf": ""})
    elif kind == "damaged":
        img = small_disk(tmp_path, files=OS, damaged=True)
    elif kind == "no-boot-code":
        img = small_disk(tmp_path, files=OS, boot_code=False)
    else:
        img = small_disk(tmp_path, files=OS)
    before = sha256(img)
    with pytest.raises(ConversionError, match=match):
        convert(img, "/dev/sda", tmp_path / "work")
    assert sha256(img) == before
    assert not (tmp_path / "work" / "disk.qcow2").exists()
    assert not (tmp_path / "work" / "disk.raw").exists()


@pytest.mark.root
@pytest.mark.slow
def test_converted_source_boots_on_virtio_with_network(minimal_image: Path, tmp_path: Path) -> None:
    """The issue's conversion test: /dev/sda1 fstab, static MAC-pinned network -> boots on the QEMU target
    to multi-user, with DHCP networking (the site answers through the forwarded port)."""
    source = tmp_path / "snapshot.img"
    shutil.copyfile(minimal_image, source)
    before = sha256(source)
    with open(source, "rb") as stream:  # as the job runner hands over a snapshot reader
        converted = convert(stream, "/dev/sda", tmp_path / "work")  # type: ignore[arg-type]
    assert sha256(source) == before
    notes = "\n".join(converted.notes)
    assert f"fstab: /dev/sda1 -> UUID={converted.root_uuid}" in notes
    assert "MAC-pinned" in notes and "DHCP on eth0" in notes and "hostname kept: legacy-web-01" in notes
    assert converted.path.read_bytes()[:4] == b"QFI\xfb"
    assert converted.kernel is not None
    assert kernel_boots(converted.kernel, "tcg")[0]  # the probe recognises a booting kernel

    driver = QemuTarget(tmp_path / "instances", accel="tcg", shutdown_timeout=90)
    iid = new_instance_id()
    try:
        inst = driver.launch(LaunchSpec(iid, "t3.micro", 1, 768, converted.path, (22, 80)))
        body = wait_http(inst.url(80), 300, expect=MARKER)
        assert MARKER in body
        assert driver.wait_for_console(iid, "legacy-web-01 login:", 120)
        console = driver.console_output(iid)
        assert "[vda]" in console  # booted from the virtio disk
        port = inst.port_map[22]
        state = ssh(minimal_image, port, "systemctl is-system-running --wait; systemctl --failed --no-legend; true",
                    timeout=300)
        assert state.strip() == "running"  # boot finished (multi-user reached) and no unit failed
        addr = ssh(minimal_image, port, "ip -4 -o addr show dev eth0")
        assert "10.0.2.15/24" in addr and "dynamic" in addr  # leased by DHCP, not the source's static config
        assert ssh(minimal_image, port, "hostname").strip() == "legacy-web-01"
        assert driver.describe(iid).state == InstanceState.RUNNING
        # An orderly stop: the converted guest honours the ACPI power-off.
        driver.stop(iid)
        deadline = time.monotonic() + 120
        while driver.describe(iid).state != InstanceState.STOPPED and time.monotonic() < deadline:
            time.sleep(1)
        assert driver.describe(iid).state == InstanceState.STOPPED
        assert "reboot: Power down" in driver.console_output(iid)
    finally:
        driver.terminate(iid)
