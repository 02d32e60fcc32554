"""The QEMU target driver on a real QEMU (TCG) running a tiny boot-sector guest."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehost.errors import NotFound, TargetError
from rehost.targets.accel import choose_accelerator
from rehost.targets.base import InstanceState, LaunchSpec, TargetDriver, TargetInstance, new_instance_id
from rehost.targets.qemu import QemuTarget, instance_mac
from rehost.targets.qemuproc import pid_alive

from .conftest import TINY_TEXT


def wait_state(driver: QemuTarget, iid: str, state: InstanceState, timeout: float = 30) -> TargetInstance:
    deadline = time.monotonic() + timeout
    while True:
        inst = driver.describe(iid)
        if inst.state == state or time.monotonic() > deadline:
            return inst
        time.sleep(0.2)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[QemuTarget]:
    d = QemuTarget(tmp_path / "instances", accel="tcg", shutdown_timeout=3)
    yield d
    for inst in d.list():  # never leave a VM behind
        d.terminate(inst.instance_id)


def spec(disk: Path, **kw: object) -> LaunchSpec:
    args: dict[str, object] = dict(instance_id=new_instance_id(), instance_type="t3.micro", vcpus=1,
                                   memory_mib=128, disk_image=disk, ingress_ports=(22, 80))
    args.update(kw)
    return LaunchSpec(**args)  # type: ignore[arg-type]


def test_instance_ids_look_like_ec2() -> None:
    assert re.fullmatch(r"i-[0-9a-f]{17}", new_instance_id())


def test_each_instance_has_its_own_mac() -> None:
    macs = {instance_mac(new_instance_id()) for _ in range(50)}
    assert len(macs) == 50 and all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for m in macs)
    assert "52:54:00:12:34:56" not in macs


def test_launch_run_console_stop_start_terminate(driver: QemuTarget, tiny_disk: Path) -> None:
    assert isinstance(driver, TargetDriver)
    before = tiny_disk.read_bytes()
    inst = driver.launch(spec(tiny_disk, tags={"Name": "tiny"}))
    assert inst.state in (InstanceState.PENDING, InstanceState.RUNNING)
    assert inst.public_ip == "127.0.0.1" and set(inst.port_map) == {22, 80}
    assert len(set(inst.port_map.values())) == 2
    iid = inst.instance_id

    assert wait_state(driver, iid, InstanceState.RUNNING).state == InstanceState.RUNNING
    assert TINY_TEXT.decode().strip() in driver.console_output(iid)
    assert driver.describe(iid).tags == {"Name": "tiny"}

    # The guest ignores the power-off request; the driver stops QEMU after shutdown_timeout.
    assert driver.stop(iid).state in (InstanceState.STOPPING, InstanceState.STOPPED)
    stopped = wait_state(driver, iid, InstanceState.STOPPED, timeout=30)
    assert stopped.state == InstanceState.STOPPED and stopped.public_ip == ""

    assert driver.start(iid).state in (InstanceState.PENDING, InstanceState.RUNNING)
    assert wait_state(driver, iid, InstanceState.RUNNING).state == InstanceState.RUNNING
    assert driver.console_output(iid).count(TINY_TEXT.decode().strip()) == 2  # both boots kept

    idir = driver.dir / iid
    pid = json.loads((idir / "instance.json").read_text())["pid"]
    driver.terminate(iid)
    assert driver.describe(iid).state == InstanceState.TERMINATED
    assert not pid_alive(pid, str(idir))
    assert not (idir / "disk.qcow2").exists() and not (idir / "base.img").exists()
    driver.terminate(iid)  # idempotent
    assert tiny_disk.read_bytes() == before  # the base image is never written


def test_instances_survive_a_new_driver(driver: QemuTarget, tiny_disk: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"  # the converted image lives in a job's work directory...
    job_dir.mkdir()
    shutil.copyfile(tiny_disk, job_dir / "disk.qcow2")
    inst = driver.launch(spec(job_dir / "disk.qcow2"))
    shutil.rmtree(job_dir)  # ...which may be cleaned up while the instance lives on
    assert wait_state(driver, inst.instance_id, InstanceState.RUNNING).state == InstanceState.RUNNING
    # A restarted control plane constructs a new driver on the same directory and finds the VM.
    again = QemuTarget(driver.dir, accel="tcg", shutdown_timeout=3)
    seen = again.describe(inst.instance_id)
    assert seen.state == InstanceState.RUNNING and seen.port_map == inst.port_map
    assert [i.instance_id for i in again.list()] == [inst.instance_id]
    assert TINY_TEXT.decode().strip() in again.console_output(inst.instance_id)
    again.stop(inst.instance_id)
    assert wait_state(again, inst.instance_id, InstanceState.STOPPED, 90).state == InstanceState.STOPPED
    again.start(inst.instance_id)  # boots again from its own disk, the job's copy being gone
    assert wait_state(again, inst.instance_id, InstanceState.RUNNING).state == InstanceState.RUNNING
    again.terminate(inst.instance_id)
    assert driver.describe(inst.instance_id).state == InstanceState.TERMINATED


def test_vm_that_dies_is_reported_stopped(driver: QemuTarget, tiny_disk: Path) -> None:
    import os
    import signal

    inst = driver.launch(spec(tiny_disk))
    pid = json.loads((driver.dir / inst.instance_id / "instance.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    after = wait_state(driver, inst.instance_id, InstanceState.STOPPED)
    assert after.state == InstanceState.STOPPED
    assert "exited" in after.state_reason


def test_errors(driver: QemuTarget, tmp_path: Path, tiny_disk: Path) -> None:
    with pytest.raises(NotFound):
        driver.describe("i-0123456789abcdef0")
    with pytest.raises(TargetError, match="does not exist"):
        driver.launch(spec(tmp_path / "missing.qcow2"))
    inst = driver.launch(spec(tiny_disk))
    with pytest.raises(TargetError, match="already exists"):
        driver.launch(spec(tiny_disk, instance_id=inst.instance_id))
    with pytest.raises(TargetError, match="not stopped"):
        driver.start(inst.instance_id)


def test_accelerator_choice_is_cached_and_configurable(tmp_path: Path) -> None:
    cache = tmp_path / "accel.json"
    assert choose_accelerator("tcg", cache, None) == "tcg"
    assert choose_accelerator("auto", cache, None) == "tcg"  # nothing to probe with: TCG, not cached
    assert not cache.exists()
    cache.write_text(json.dumps({"accel": "kvm", "reason": "probed earlier"}))
    assert choose_accelerator("auto", cache, None) == "kvm"
    with pytest.raises(TargetError):
        QemuTarget(tmp_path, accel="xen")


def test_qmp_socket_paths_fit_in_a_unix_socket_address(tmp_path: Path) -> None:
    from rehost.targets.qemuproc import qmp_socket

    short = tmp_path / "i-0"
    assert qmp_socket(short) == short / "qmp.sock"
    deep = tmp_path / ("x" * 60) / ("y" * 60) / "i-0123456789abcdef0"
    sock = qmp_socket(deep)
    assert len(str(sock).encode()) <= 107
    assert qmp_socket(deep) == sock  # the same VM directory always maps to the same socket
    assert qmp_socket(deep.parent / "i-other") != sock
