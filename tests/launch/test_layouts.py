"""Layouts beyond one MBR disk, launched by a real job and checked by their page: a second disk holding the
site (mounted through fstab as /dev/sdb1), and a UEFI server (GPT, EFI System Partition) on OVMF."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rehost.db import repo
from rehost.errors import TargetError
from rehost.images.builder import build_source_image
from rehost.images.sourcevm import wait_http

from .conftest import LaunchEnv, step5, wait_state
from .test_boot_check import run_test_job

_fixtures = pytest.importorskip("images.fixtures")

#: A generous bound for a TCG boot on a shared machine (about 30 s when it is idle).
BOOT_TIMEOUT = 240


def _page(env: LaunchEnv, instance_id: str) -> str:
    """The site's page (the guest booted; its web service may still be starting)."""
    try:
        return wait_http(env.local.target.describe(instance_id).url(80), 120, expect=_fixtures.MARKER)
    except TargetError as exc:
        raise AssertionError(f"{exc}; console:\n{env.local.target.console_output(instance_id)[-3000:]}") from exc


def _boot_mode(items: list[dict]) -> str:
    return str(next(i for i in items if i["event"] == "LAUNCH_START")["eventData"]["bootMode"])


def _launch_and_check(env: LaunchEnv, hostname: str, disks: dict[str, Path]) -> tuple[dict, list[dict]]:
    server_id = env.agent.register(hostname)["sourceServerID"]
    step5(env, server_id)
    job = run_test_job(env, server_id, disks, boot_timeout=BOOT_TIMEOUT)
    with env.local.store.read() as conn:  # as stored: with rehost's own eventData (bootMode)
        items = [doc for _, doc in repo.log_items(conn, job["jobID"])]
    (p,) = job["participatingServers"]
    assert p["launchStatus"] == "LAUNCHED", items
    assert _fixtures.MARKER in _page(env, p["launchedEc2InstanceID"])
    return p, items


@pytest.mark.slow
@pytest.mark.root
def test_a_second_disk_in_fstab_is_launched_and_mounted(launch_env: LaunchEnv, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (images and conversion use loop devices)")
    boot, data = tmp_path / "boot.img", tmp_path / "data.img"
    build_source_image(_fixtures.CACHE_DIR, boot, size_gib=1, flavor="minimal", marker=_fixtures.MARKER,
                       hostname="two-disks-01", data_disk=data)
    p, items = _launch_and_check(launch_env, "two-disks-01", {"/dev/sda": boot, "/dev/sdb": data})
    # The page came from the second disk: the root's /var/www is empty, so /dev/sdb1 was mounted there.
    console = launch_env.ec2.get_console_output(InstanceId=p["launchedEc2InstanceID"])["Output"]
    assert "emergency" not in console.lower()
    assert _boot_mode(items) == "LEGACY_BIOS (the boot disk's layout)"
@pytest.mark.slow
@pytest.mark.root
def test_a_uefi_server_boots_on_ovmf(launch_env: LaunchEnv, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (images and conversion use loop devices)")
    if not Path("/usr/share/OVMF/OVMF_CODE.fd").exists():
        pytest.skip("OVMF (Debian package ovmf) is not installed")
    disk = tmp_path / "uefi.img"
    # GRUB only under /EFI/debian, as grub-install leaves it without --removable: conversion must add the
    # removable path, since OVMF's fresh variables hold no boot entry for it.
    build_source_image(_fixtures.CACHE_DIR, disk, size_gib=1, flavor="minimal", marker=_fixtures.MARKER,
                       hostname="uefi-web-01", firmware="uefi", efi_removable=False)
    p, items = _launch_and_check(launch_env, "uefi-web-01", {"/dev/sda": disk})
    assert _boot_mode(items) == "UEFI (the boot disk's layout)"
    inst = wait_state(launch_env.ec2, p["launchedEc2InstanceID"], "running", timeout=5)
    assert inst["BootMode"] == "uefi"
