"""Names that survive the move (fstab, kernel command lines, LVM) and the boot loader fixers, on plain
directory trees (no root needed)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from rehost.conversion import bootloaders, fstab, lvm
from rehost.conversion.bootloaders.bls import GRUBENV_SIZE
from rehost.conversion.storage import Storage, Volume
from rehost.errors import ConversionError

TABLE = {"/dev/sda1": "UUID=1111-root", "/dev/sda2": "UUID=2222-swap", "/dev/hda1": "UUID=1111-root",
         "/dev/hda2": "UUID=2222-swap"}


def rename(spec: str, fstype: str) -> str | None:
    return TABLE.get(spec)


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_fstab_names_file_systems_by_uuid_and_keeps_stable_names(tmp_path: Path) -> None:
    write(tmp_path, "etc/fstab", "# comment /dev/sda1\n/dev/sda1 / ext4 defaults 0 1\n"
          "/dev/sda2 none swap sw 0 0\nLABEL=data /data ext4 defaults 0 2\n"
          "/dev/mapper/vg-home /home xfs defaults 0 2\n/dev/sdc1 /mnt ext4 defaults 0 2\n")
    notes = fstab.fix_fstab(tmp_path, rename)
    lines = (tmp_path / "etc/fstab").read_text().splitlines()
    assert lines == ["# comment /dev/sda1", "UUID=1111-root / ext4 defaults 0 1", "UUID=2222-swap none swap sw 0 0",
                     "LABEL=data /data ext4 defaults 0 2", "/dev/mapper/vg-home /home xfs defaults 0 2",
                     "/dev/sdc1 /mnt ext4 defaults 0 2"]
    assert [n for n in notes if "WARNING" in n] == [
        "fstab: WARNING /dev/sdc1 (/mnt) names no disk that is launched; kept as is"]
    assert (tmp_path / "etc/fstab.rehost-source").read_text().count("/dev/sda1") == 2


def test_extlinux_and_debian_grub_command_lines(tmp_path: Path) -> None:
    write(tmp_path, "boot/extlinux/extlinux.conf", "LABEL l\n  KERNEL /boot/vmlinuz\n  APPEND root=/dev/sda1 ro quiet\n")
    write(tmp_path, "boot/grub/grub.cfg", "menuentry x {\n\tlinux\t/boot/vmlinuz-6 root=/dev/hda1 ro resume=/dev/hda2\n}\n")
    write(tmp_path, "etc/default/grub", 'GRUB_CMDLINE_LINUX="root=/dev/sda1"\nGRUB_DISABLE_LINUX_UUID=true\n')
    write(tmp_path, "etc/fstab", "/dev/hda1 / ext4 defaults 0 1\n")
    assert fstab.boot_disk_names(tmp_path, "/dev/sda") == {"/dev/sda", "/dev/hda"}
    planned = bootloaders.plan_boot_loaders(tmp_path, rename)
    assert planned[0] == "boot loader: GRUB 2 (/boot/grub), extlinux"
    assert (tmp_path / "boot/grub/grub.cfg").read_text().count("/dev/hda1") == 1  # plan wrote nothing
    notes = bootloaders.fix_boot_loaders(tmp_path, rename)
    assert notes == planned[1:]
    ext = (tmp_path / "boot/extlinux/extlinux.conf").read_text()
    assert "APPEND root=UUID=1111-root ro quiet net.ifnames=0 console=tty0 console=ttyS0,115200" in ext
    grub = (tmp_path / "boot/grub/grub.cfg").read_text()
    assert "\tlinux\t/boot/vmlinuz-6 root=UUID=1111-root ro resume=UUID=2222-swap net.ifnames=0" in grub
    default = (tmp_path / "etc/default/grub").read_text()
    assert 'GRUB_CMDLINE_LINUX="root=UUID=1111-root net.ifnames=0' in default
    assert "GRUB_DISABLE_LINUX_UUID=false" in default
    assert bootloaders.fix_boot_loaders(tmp_path, rename) == []  # idempotent
    assert (tmp_path / "boot/extlinux/extlinux.conf").read_text() == ext


def test_redhat_grub2_bls_entries_and_grubenv(tmp_path: Path) -> None:
    write(tmp_path, "boot/grub2/grub.cfg", 'set kernelopts="root=/dev/mapper/rhel-root ro rd.lvm.lv=rhel/root"\n'
          "insmod blscfg\nblscfg\nmenuentry old {\n  linux /vmlinuz-4.18 $kernelopts\n}\n")
    write(tmp_path, "boot/loader/entries/abc-5.14.0.conf",
          "title Red Hat Enterprise Linux\nlinux /vmlinuz-5.14.0\ninitrd /initramfs-5.14.0.img\n"
          "options root=/dev/mapper/rhel-root ro crashkernel=auto rd.lvm.lv=rhel/root\n")
    write(tmp_path, "boot/loader/entries/abc-rescue.conf", "title rescue\nlinux /vmlinuz-0-rescue\n"
          "options $kernelopts\n")
    env = "# GRUB Environment Block\nsaved_entry=abc-5.14.0\nkernelopts=root=/dev/sda2 ro\n"
    write(tmp_path, "boot/grub2/grubenv", env + "#" * (GRUBENV_SIZE - len(env)))
    write(tmp_path, "etc/default/grub", 'GRUB_CMDLINE_LINUX="crashkernel=auto rd.lvm.lv=rhel/root"\n')
    notes = bootloaders.fix_boot_loaders(tmp_path, lambda s, t: "UUID=2-root" if s == "/dev/sda2" else None)
    assert len(notes) == 4  # grub.cfg, /etc/default/grub, one entry (the other is $kernelopts), grubenv
    entry = (tmp_path / "boot/loader/entries/abc-5.14.0.conf").read_text()
    # An LVM root keeps its name: it does not depend on the hardware.
    assert "options root=/dev/mapper/rhel-root ro crashkernel=auto rd.lvm.lv=rhel/root net.ifnames=0 " \
           "console=tty0 console=ttyS0,115200\n" in entry
    assert "options $kernelopts\n" in (tmp_path / "boot/loader/entries/abc-rescue.conf").read_text()
    grubenv = (tmp_path / "boot/grub2/grubenv").read_text()
    assert len(grubenv.encode()) == GRUBENV_SIZE
    assert "\nkernelopts=root=UUID=2-root ro net.ifnames=0 console=tty0 console=ttyS0,115200\n" in grubenv
    assert "saved_entry=abc-5.14.0\n" in grubenv
    assert 'set kernelopts="root=/dev/mapper/rhel-root ro rd.lvm.lv=rhel/root net.ifnames=0' in \
        (tmp_path / "boot/grub2/grub.cfg").read_text()
    assert "  linux /vmlinuz-4.18 $kernelopts\n" in (tmp_path / "boot/grub2/grub.cfg").read_text()  # grubenv's
    assert "rd.lvm.lv=rhel/root net.ifnames=0" in (tmp_path / "etc/default/grub").read_text()
    assert bootloaders.fix_boot_loaders(tmp_path, rename) == []


def test_no_boot_loader_is_an_error(tmp_path: Path) -> None:
    assert bootloaders.plan_boot_loaders(tmp_path, rename)[0].startswith("no boot loader found")
    with pytest.raises(ConversionError, match="no boot loader"):
        bootloaders.fix_boot_loaders(tmp_path, rename)


def test_a_second_disk_is_known_by_the_next_letter_and_its_own_name() -> None:
    assert fstab.other_disk_names({"/dev/sda"}, 1, "/dev/sdb") == {"/dev/sdb"}
    assert fstab.other_disk_names({"/dev/sda", "/dev/vda"}, 2, "/opt/disks/data.img") == {
        "/opt/disks/data.img", "/dev/sdc", "/dev/vdc"}
    assert fstab.other_disk_names({"/dev/nvme0n1"}, 1, "/dev/nvme1n1") == {"/dev/nvme1n1"}


def _vol(name: str, disk: int | None, number: int, fstype: str, uuid: str, label: str = "", partuuid: str = "",
         lv: lvm.LogicalVolume | None = None) -> Volume:
    info = {"TYPE": fstype, "UUID": uuid} | ({"LABEL": label} if label else {})
    return Volume(name, Path("/dev/null"), info, disk=disk, number=number, partuuid=partuuid, lv=lv)


def test_every_kind_of_name_resolves_to_its_volume() -> None:
    root_lv = lvm.LogicalVolume("rhel", "root", 2**30, "linear", ())
    thin = lvm.LogicalVolume("my-vg", "data-1", 2**30, "linear", ())
    vols = [_vol("boot", 0, 1, "xfs", "B00T", partuuid="abcd-01"), _vol("pv", 0, 2, "LVM2_member", "PV"),
            _vol("data", 1, 1, "ext4", "DA7A", label="www"), _vol("whole", 2, 0, "ext4", "WH0LE"),
            _vol("root", None, 0, "xfs", "R00T", lv=root_lv), _vol("d1", None, 0, "ext4", "D1", lv=thin)]
    st = Storage([], True, contextlib.ExitStack(), volumes=vols)
    names = {"/dev/sda": 0, "/dev/sdb": 1, "/dev/sdc": 2}

    def uuid(spec: str, fstype: str = "") -> str | None:
        v = st.resolve(spec, names, fstype)
        return v.uuid if v else None

    assert uuid("UUID=b00t") == "B00T"
    assert uuid("/dev/disk/by-uuid/DA7A") == "DA7A"
    assert uuid("LABEL=www") == uuid("/dev/disk/by-label/www") == "DA7A"
    assert uuid("PARTUUID=ABCD-01") == "B00T"
    assert uuid("/dev/mapper/rhel-root") == uuid("/dev/rhel/root") == "R00T"
    assert uuid("/dev/mapper/my--vg-data--1") == uuid("/dev/my-vg/data-1") == "D1"
    assert uuid("/dev/sda1") == "B00T" and uuid("/dev/sdb1") == "DA7A" and uuid("/dev/sdc") == "WH0LE"
    assert uuid("/dev/sdb2") is None and uuid("/dev/sdd1") is None and uuid("UUID=nope") is None
    # A by-id name carries the source's serial number: its partition number and file system pick the volume.
    assert uuid("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001-part1", "xfs") == "B00T"
    assert uuid("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002-part1", "ext4") == "DA7A"
    assert uuid("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002-part1", "auto") is None  # ambiguous: not guessed


def test_guest_lvm_finds_its_volumes_on_new_disks(tmp_path: Path) -> None:
    write(tmp_path, "etc/lvm/devices/system.devices", "IDTYPE=sys_wwid IDNAME=naa.600 DEVNAME=/dev/sda2 PVID=x\n")
    write(tmp_path, "etc/lvm/lvm.conf", 'devices {\n    filter = [ "a|^/dev/sda2$|", "r|.*|" ]\n'
          '    # filter = [ "a|.*|" ]\n    global_filter = [ "r|/dev/cdrom|" ]\n}\n')
    notes = lvm.fix_guest_lvm(tmp_path)
    assert len(notes) == 2
    assert not (tmp_path / "etc/lvm/devices/system.devices").exists()
    conf = (tmp_path / "etc/lvm/lvm.conf").read_text()
    assert '    # rehost: the source\'s disks: filter = [ "a|^/dev/sda2$|", "r|.*|" ]' in conf
    assert '    global_filter = [ "r|/dev/cdrom|" ]' in conf  # names no disk of the source: kept
    assert lvm.fix_guest_lvm(tmp_path) == []
