"""The default target: each instance is a local QEMU VM (virtio disk and NIC, serial console, QMP).

Layout, one directory per instance under ``instances_dir`` (``D/instances``)::

    <i-id>/instance.json   the persisted record (spec, state, pid, ports): the source of truth
    <i-id>/base.img        a hard link to (or copy of) the converted image: never written
    <i-id>/disk.qcow2      the instance's copy-on-write overlay over base.img
    <i-id>/base-<n>.img, disk-<n>.qcow2   the same for the source's other disks, attached in order
    <i-id>/OVMF_VARS.fd    a UEFI instance's own copy of OVMF's variable store
    <i-id>/console.log     everything the guest wrote to its serial port
    <i-id>/qmp.sock        QMP control socket (elsewhere if that path is too long for a socket)
    accel.json             the cached accelerator probe

Networking is QEMU user mode with ``restrict=on``: the guest reaches nothing; each ingress port of the
launch template is forwarded from a free 127.0.0.1 port, and 127.0.0.1 is the instance's "public IP".
QEMU runs daemonized, so instances outlive the control plane; a new `QemuTarget` on the same directory
re-attaches to them by pid and QMP. Methods are safe to call from several threads (one lock per driver).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rehost.errors import NotFound, TargetError
from rehost.targets.accel import choose_accelerator
from rehost.targets.base import InstanceState, LaunchSpec, Network, TargetInstance
from rehost.targets.qemuproc import (
    QEMU,
    QMP,
    free_port,
    kill,
    pid_alive,
    port_is_free,
    qmp_socket,
    start_daemon,
    user_netdev,
)
from rehost.targets.records import InstanceRecords

log = logging.getLogger(__name__)

PUBLIC_IP = "127.0.0.1"
GUEST_IP = "10.0.2.15"  # what QEMU's user-mode DHCP hands the guest
#: The one network of this target: QEMU's user-mode network, private to each instance.
USER_NETWORK = Network("user", "10.0.2.0/24")
SHUTDOWN_GRACE = 60.0  # seconds a guest gets to power off before QEMU is stopped hard
#: UEFI firmware for uefi instances (Debian's ovmf): read-only code, and a variable store each instance copies.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")


class QemuTarget(InstanceRecords):
    """`TargetDriver` on local QEMU. ``accel`` is "auto" (probe once, cache), "kvm" or "tcg".

    `stop` asks the guest to power off (ACPI) and stops QEMU hard after ``shutdown_timeout`` seconds.

    With "auto" the KVM probe boots the kernel file ``vmlinuz`` found beside a launched ``disk_image``
    (the converter leaves it there); without one the driver uses TCG.
    """

    def __init__(self, instances_dir: Path, accel: str = "auto", *,
                 shutdown_timeout: float = SHUTDOWN_GRACE) -> None:
        if accel not in ("auto", "kvm", "tcg"):
            raise TargetError(f"unknown accelerator {accel!r} (auto, kvm, tcg)")
        self.dir = Path(instances_dir).resolve()  # the pid check matches this path in QEMU's command line
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.requested_accel = accel
        self.shutdown_timeout = shutdown_timeout
        self._lock = threading.RLock()

    # ---- records ---------------------------------------------------------------------------------
    def _to_instance(self, rec: dict[str, Any]) -> TargetInstance:
        state = InstanceState(rec["state"])
        live = state in (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.STOPPING)
        return TargetInstance(
            instance_id=rec["instance_id"], instance_type=rec["instance_type"], state=state,
            public_ip=PUBLIC_IP if live else "", private_ip=GUEST_IP if live else "",
            port_map={int(k): int(v) for k, v in rec["port_map"].items()} if live else {},
            launch_time=datetime.fromisoformat(rec["launch_time"]), vcpus=rec["vcpus"],
            memory_mib=rec["memory_mib"], state_reason=rec.get("state_reason", ""),
            accelerator=rec.get("accel", ""), tags=dict(rec.get("tags", {})),
            boot_mode=rec.get("boot_mode", "legacy-bios"))

    # ---- QEMU ------------------------------------------------------------------------------------
    def _accel(self, disk_image: Path) -> str:
        return choose_accelerator(self.requested_accel, self.dir / "accel.json", disk_image.parent / "vmlinuz")

    def _boot(self, rec: dict[str, Any]) -> None:
        """Start QEMU for ``rec`` (ports re-chosen if the old ones were taken meanwhile)."""
        idir = self.dir / rec["instance_id"]
        ports = {int(k): int(v) for k, v in rec.get("port_map", {}).items()}
        for attempt in range(3):
            for guest in rec["ingress_ports"]:
                if guest not in ports or attempt > 0 or not port_is_free(ports[guest]):
                    ports[guest] = free_port()
            argv = [QEMU, "-name", rec["instance_id"], "-machine", "pc", "-accel", rec["accel"],
                    "-cpu", "max" if rec["accel"] == "tcg" else "host",
                    "-smp", str(rec["vcpus"]), "-m", str(rec["memory_mib"]),
                    "-nodefaults", "-display", "none", "-vga", "none", *_firmware_args(rec, idir),
                    *_disk_args(idir, rec.get("data_disks", 0)),
                    "-netdev", user_netdev("net0", ports),
                    "-device", f"virtio-net-pci,netdev=net0,mac={instance_mac(rec['instance_id'])}",
                    "-serial", f"file:{idir / 'console.log'}",
                    "-qmp", f"unix:{qmp_socket(idir)},server=on,wait=off",
                    "-device", "virtio-rng-pci"]
            _keep_previous_console(idir)
            try:
                rec["pid"] = start_daemon(argv, idir)
            except TargetError as exc:
                if "forwarding" in str(exc) and attempt < 2:
                    continue  # a port taken between choosing and binding it
                raise
            _private_run_files(idir)
            rec["port_map"] = {str(k): v for k, v in ports.items()}
            rec["booted_at"] = time.time()
            return

    def _refresh(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Reconcile a record with the process it names (it may have exited or booted meanwhile)."""
        state = rec["state"]
        if state in ("stopped", "terminated"):
            return rec
        marker = str(self.dir / rec["instance_id"])
        if state == "stopping" and time.time() - rec.get("stop_requested_at", 0) > self.shutdown_timeout:
            kill(rec.get("pid") or 0, marker)  # the guest ignored the power-off request
        if not pid_alive(rec.get("pid"), marker):
            if state == "stopping":
                rec["state"], rec["state_reason"] = "stopped", "Client.UserInitiatedShutdown"
            else:
                rec["state"], rec["state_reason"] = "stopped", "Server.InternalError: the VM process exited"
            rec["pid"] = None
            self._save(rec)
        elif state == "pending" and self._guest_started(rec):
            rec["state"] = "running"
            self._save(rec)
        return rec

    def _guest_started(self, rec: dict[str, Any]) -> bool:
        """The guest counts as running once QEMU runs it and it has written to its serial console."""
        console = self.dir / rec["instance_id"] / "console.log"
        try:
            if console.stat().st_size == 0:
                return False
            with QMP(qmp_socket(self.dir / rec["instance_id"])) as qmp:
                return bool(qmp.command("query-status").get("running"))
        except (OSError, TargetError):
            return False

    # ---- TargetDriver ----------------------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> TargetInstance:
        disk_image = Path(spec.disk_image).resolve()
        for image in (disk_image, *spec.data_disks):
            if not Path(image).is_file():
                raise TargetError(f"disk image {image} does not exist")
        if spec.boot_mode not in ("legacy-bios", "uefi"):
            raise TargetError(f"unknown boot mode {spec.boot_mode!r} (legacy-bios, uefi)")
        if spec.network not in ("", USER_NETWORK.name):
            raise TargetError(f"this target has no network {spec.network!r} (only {USER_NETWORK.name!r})")
        if spec.boot_mode == "uefi" and not (OVMF_CODE.is_file() and OVMF_VARS.is_file()):
            raise TargetError(f"UEFI firmware is not installed ({OVMF_CODE}: Debian package ovmf)")
        idir = self.dir / spec.instance_id
        with self._lock:
            try:
                idir.mkdir(mode=0o700, parents=True)
            except FileExistsError:
                raise TargetError(f"instance {spec.instance_id} already exists") from None
            try:
                # The instance holds its own link to the converted image, so it outlives the job's work
                # directory; the overlay names it relatively, so the instance directory can move.
                base = _link(disk_image, idir / "base.img")
                _overlay(idir, base, "disk.qcow2")
                for n, data_disk in enumerate(spec.data_disks, start=1):
                    _overlay(idir, _link(Path(data_disk).resolve(), idir / f"base-{n}.img"), f"disk-{n}.qcow2")
                if spec.boot_mode == "uefi":
                    shutil.copyfile(OVMF_VARS, idir / "OVMF_VARS.fd")  # the instance's own UEFI variables
            except (OSError, subprocess.SubprocessError) as exc:
                shutil.rmtree(idir, ignore_errors=True)
                raise TargetError(f"cannot create the disk of {spec.instance_id}: {exc}") from exc
            rec: dict[str, Any] = {
                "instance_id": spec.instance_id, "instance_type": spec.instance_type, "vcpus": spec.vcpus,
                "memory_mib": spec.memory_mib, "disk_image": str(disk_image),
                "ingress_ports": sorted(set(spec.ingress_ports)), "tags": dict(spec.tags),
                "launch_time": datetime.now(UTC).isoformat(), "state": "pending", "pid": None,
                "port_map": {}, "accel": self._accel(disk_image), "data_disks": len(spec.data_disks),
                "boot_mode": spec.boot_mode}
            if spec.user_data:
                (idir / "user-data").write_bytes(spec.user_data)
            self._save(rec)
            try:
                self._boot(rec)
            except TargetError as exc:
                rec["state"], rec["state_reason"] = "terminated", f"Server.InternalError: {exc}"
                self._save(rec)
                _remove_disks(idir)
                raise
            self._save(rec)
            log.info("launched %s (%s, %d vCPU, %d MiB, %s) ports %s", spec.instance_id, spec.instance_type,
                     spec.vcpus, spec.memory_mib, rec["accel"], rec["port_map"])
            return self._to_instance(rec)

    def describe(self, instance_id: str) -> TargetInstance:
        with self._lock:
            return self._to_instance(self._refresh(self._load(instance_id)))

    def list(self) -> list[TargetInstance]:
        with self._lock:
            recs = []
            for path in self.dir.glob("i-*/instance.json"):
                with contextlib.suppress(NotFound, TargetError):
                    recs.append(self._refresh(self._load(path.parent.name)))
        recs.sort(key=lambda r: r["launch_time"])
        return [self._to_instance(r) for r in recs]

    def networks(self) -> tuple[Network, ...]:
        return (USER_NETWORK,)

    def console_output(self, instance_id: str) -> str:
        self._load(instance_id)
        idir = self.dir / instance_id
        parts = []
        for name in ("console.prev.log", "console.log"):
            with contextlib.suppress(FileNotFoundError):
                parts.append((idir / name).read_bytes().decode(errors="replace"))
        return "".join(parts)

    def stop(self, instance_id: str) -> TargetInstance:
        with self._lock:
            rec = self._refresh(self._load(instance_id))
            if rec["state"] == "terminated":
                raise TargetError(f"instance {instance_id} is terminated")
            if rec["state"] in ("stopped", "stopping"):
                return self._to_instance(rec)
            rec["state"], rec["stop_requested_at"] = "stopping", time.time()
            self._save(rec)
            pid, marker = rec["pid"], str(self.dir / instance_id)
        # An ACPI power-off lets the guest flush and shut down; QEMU then exits by itself (-no-shutdown
        # is not given). A watcher stops it hard if the guest ignores the request.
        try:
            with QMP(qmp_socket(self.dir / instance_id)) as qmp:
                qmp.command("system_powerdown")
        except TargetError:
            kill(pid, marker)
        threading.Thread(target=self._reap, args=(pid, marker), daemon=True).start()
        return self.describe(instance_id)

    def _reap(self, pid: int, marker: str) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        while time.monotonic() < deadline and pid_alive(pid, marker):
            time.sleep(0.5)
        kill(pid, marker)

    def start(self, instance_id: str) -> TargetInstance:
        with self._lock:
            rec = self._refresh(self._load(instance_id))
            if rec["state"] != "stopped":
                raise TargetError(f"instance {instance_id} is {rec['state']}, not stopped")
            self._boot(rec)
            rec["state"], rec["state_reason"] = "pending", ""
            self._save(rec)
            return self._to_instance(rec)

    def terminate(self, instance_id: str, reason: str = "Client.UserInitiatedShutdown") -> None:
        with self._lock:
            rec = self._load(instance_id)
            if rec["state"] == "terminated":
                return
            kill(rec.get("pid") or 0, str(self.dir / instance_id), grace=2.0)
            idir = self.dir / instance_id
            _remove_disks(idir)
            (idir / "qemu.pid").unlink(missing_ok=True)
            qmp_socket(idir).unlink(missing_ok=True)
            rec.update(state="terminated", pid=None, state_reason=reason, terminated_at=time.time())
            self._save(rec)
            log.info("terminated %s", instance_id)

    def wait_for_console(self, instance_id: str, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears on the instance's serial console; False after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.console_output(instance_id):
                return True
            time.sleep(0.5)
        return False


def instance_mac(instance_id: str) -> str:
    """The instance's own MAC address (QEMU's 52:54:00 prefix), stable across stop/start and restarts.

    Never the QEMU default 52:54:00:12:34:56, which the source VMs use: a converted guest must not find
    its source's MAC again."""
    digest = hashlib.sha256(instance_id.encode()).digest()
    tail = digest[:3] if digest[:3] != b"\x12\x34\x56" else digest[3:6]
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)


def _link(image: Path, dest: Path) -> Path:
    """``dest`` as a hard link to (or, on another file system, a copy of) ``image``."""
    try:
        os.link(image, dest)
    except OSError:
        shutil.copyfile(image, dest)
    return dest


def _overlay(idir: Path, base: Path, name: str) -> None:
    """The instance's copy-on-write disk ``name`` over ``base`` (named relatively: the directory can move)."""
    fmt = "qcow2" if _is_qcow2(base) else "raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", base.name, str(idir / name)],
                   check=True, capture_output=True, timeout=60)


def _remove_disks(idir: Path) -> None:
    """Delete an instance's disks (its overlays, the links to the converted images, its UEFI variables)."""
    for pattern in ("disk.qcow2", "base.img", "disk-*.qcow2", "base-*.img", "OVMF_VARS.fd"):
        for path in idir.glob(pattern):
            path.unlink(missing_ok=True)


def _disk_args(idir: Path, data_disks: int) -> list[str]:
    """The boot disk first (the firmware boots it), then the source's other disks in its order: the guest
    sees vda, vdb, ... as the source saw sda, sdb, ..."""
    args = []
    for name in ["disk.qcow2", *(f"disk-{n}.qcow2" for n in range(1, data_disks + 1))]:
        args += ["-drive", f"file={idir / name},format=qcow2,if=virtio,cache=writeback,discard=unmap"]
    return args


def _firmware_args(rec: dict[str, Any], idir: Path) -> list[str]:
    """SeaBIOS (QEMU's default) for legacy-bios; OVMF with the instance's own variable store for uefi."""
    if rec.get("boot_mode", "legacy-bios") != "uefi":
        return []
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={idir / 'OVMF_VARS.fd'}"]


def _is_qcow2(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"QFI\xfb"


def _private_run_files(idir: Path) -> None:
    """QEMU's -daemonize sets umask 027: make what it created (console, QMP socket, pidfile) 0600."""
    for path in (idir / "console.log", idir / "qemu.pid", qmp_socket(idir)):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, 0o600)


def _keep_previous_console(idir: Path) -> None:
    """QEMU truncates its serial file on start: move an earlier boot's output to console.prev.log."""
    current = idir / "console.log"
    if not current.exists():
        return
    with open(idir / "console.prev.log", "ab") as prev:
        prev.write(current.read_bytes())
    current.unlink()
