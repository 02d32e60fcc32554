"""A libvirt target: each instance is a libvirt domain on a host reached by a libvirt URL, local or remote.

Everything goes through libvirt's own API (its Python binding), so a remote host needs libvirtd and ssh
only: no shared file system, no agent of rehost's.

- Disks: each converted image is uploaded into a volume of the target's storage pool (a directory pool)
  with libvirt's storage volume upload (``<i-id>-disk<n>``; a raw disk is made qcow2 first, so its holes do
  not travel); the domain attaches them on virtio, boot disk first.
- Domain: ``type='qemu'`` (TCG: KVM cannot boot a guest here; see machine.md), machine ``pc``, the instance
  type's vCPUs and memory, SeaBIOS or, for ``uefi``, OVMF chosen by libvirt's firmware descriptors with
  the instance's own NVRAM (created from the template by libvirt, deleted with the domain), a virtio NIC
  on a libvirt network with the instance's own MAC, a virtio RNG.
- Console: the serial port is a pty whose output virtlogd appends to ``<i-id>.console.log`` in the pool's
  directory; rehost reads it back as a volume (download), so GetConsoleOutput and the boot check work
  for a remote host too. The last copy read is kept in the instance's record directory, where terminate
  leaves the final one.
- Address: the DHCP lease libvirt's network holds for the domain's interface: the network's leases with
  the interface's MAC (the instance's own, derived from its ID), the newest one (an earlier boot of the
  same instance may have left an older lease). It is the instance's private IP, and its public IP too when
  the network routes or bridges rather than NATs (``forward mode`` route, open or bridge).

Records: ``<records_dir>/<i-id>/instance.json`` (0600; what was launched and rehost's view of its state),
so a new driver finds its instances again after a control-plane restart; the domain is the truth for
whether it runs. Terminate destroys and undefines the domain (with its NVRAM) and deletes its volumes and
console file on the host; the record and the last console output stay until `purge_terminated`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import libvirt

from rehost.errors import NotFound, TargetError
from rehost.targets.base import InstanceState, LaunchSpec, Network, TargetInstance
from rehost.targets.qemu import instance_mac
from rehost.targets.records import InstanceRecords

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 60.0
METADATA_NS = "https://github.com/rehost/rehost/libvirt-instance/1"
_PUBLIC_FORWARDS = ("route", "open", "bridge")
BOOT_FIRST = "<boot order='1'/>"
_LIVE = (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.STOPPING)


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error on stderr by default; rehost reports them itself."""


libvirt.registerErrorHandler(_quiet, None)


def _why(exc: libvirt.libvirtError) -> str:
    return str(exc.get_error_message() or exc).strip()


class LibvirtTarget(InstanceRecords):
    """`TargetDriver` on a libvirt host. ``network`` and ``pool`` are names on that host."""

    def __init__(self, url: str, records_dir: Path, *, network: str = "default", pool: str = "default",
                 shutdown_timeout: float = SHUTDOWN_GRACE) -> None:
        self.url = url
        self.dir = Path(records_dir)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.network = network
        self.pool_name = pool
        self.shutdown_timeout = shutdown_timeout
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.RLock()

    # ---- connection --------------------------------------------------------------------------------
    def _connect(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    if self._conn.isAlive():
                        return self._conn
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None
            try:
                self._conn = libvirt.open(self.url)
            except libvirt.libvirtError as exc:
                raise TargetError(f"cannot connect to {self.url}: {_why(exc)}") from exc
            return self._conn

    def _pool(self, conn: libvirt.virConnect) -> tuple[libvirt.virStoragePool, str]:
        """The storage pool and its directory on the host (volumes and console files go there)."""
        try:
            pool = conn.storagePoolLookupByName(self.pool_name)
            if not pool.isActive():
                raise TargetError(f"storage pool {self.pool_name!r} on {self.url} is not active (virsh pool-start)")
            root = ET.fromstring(pool.XMLDesc(0))
        except libvirt.libvirtError as exc:
            raise TargetError(f"storage pool {self.pool_name!r} on {self.url}: {_why(exc)}") from exc
        if root.get("type") not in ("dir", "fs", "netfs"):
            raise TargetError(f"storage pool {self.pool_name!r} on {self.url} is of type {root.get('type')}; "
                              "rehost needs a directory pool (its console files live beside the disks)")
        return pool, root.findtext("target/path") or ""

    # ---- records -----------------------------------------------------------------------------------
    def _to_instance(self, rec: dict[str, Any], private_ip: str = "", public: bool = False) -> TargetInstance:
        state = InstanceState(rec["state"])
        return TargetInstance(
            instance_id=rec["instance_id"], instance_type=rec["instance_type"], state=state,
            public_ip=private_ip if public and state in _LIVE else "",
            private_ip=private_ip if state in _LIVE else "", port_map={},
            launch_time=datetime.fromisoformat(rec["launch_time"]), vcpus=rec["vcpus"],
            memory_mib=rec["memory_mib"], state_reason=rec.get("state_reason", ""), accelerator="tcg",
            tags=dict(rec.get("tags", {})), boot_mode=rec.get("boot_mode", "legacy-bios"))

    # ---- networks ----------------------------------------------------------------------------------
    def networks(self) -> tuple[Network, ...]:
        conn = self._connect()
        try:
            nets = conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)
            return tuple(n for n in (_network(net.XMLDesc(0)) for net in nets) if n is not None)
        except libvirt.libvirtError as exc:
            raise TargetError(f"cannot list the networks of {self.url}: {_why(exc)}") from exc

    def _address(self, conn: libvirt.virConnect, rec: dict[str, Any]) -> tuple[str, bool]:
        """(private IP, whether it is public) from the network's DHCP leases for the domain's interface."""
        try:
            dom = conn.lookupByName(rec["instance_id"])
            iface = ET.fromstring(dom.XMLDesc(0)).find("devices/interface")
            if iface is None:
                return "", False
            mac = (iface.find("mac").get("address") or "").lower()  # type: ignore[union-attr]
            net = conn.networkLookupByName(iface.find("source").get("network"))  # type: ignore[union-attr]
            leases = [lease for lease in net.DHCPLeases(mac) or []
                      if lease.get("mac", "").lower() == mac and lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4]
            described = _network(net.XMLDesc(0))
        except (libvirt.libvirtError, AttributeError):
            return "", False
        if not leases:
            return "", False
        newest = max(leases, key=lambda lease: lease.get("expirytime", 0))
        return str(newest["ipaddr"]), bool(described and described.public)

    # ---- console -----------------------------------------------------------------------------------
    def _console_volume(self, instance_id: str) -> str:
        return f"{instance_id}.console.log"

    def _download(self, conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str) -> bytes | None:
        """A volume's bytes read through libvirt, or None if the pool has no such volume (refreshed once)."""
        for attempt in range(2):
            try:
                vol = pool.storageVolLookupByName(name)
            except libvirt.libvirtError:
                if attempt:
                    return None
                with contextlib.suppress(libvirt.libvirtError):  # busy with an upload: try again next time
                    pool.refresh(0)
                continue
            chunks: list[bytes] = []
            stream = conn.newStream(0)
            try:
                vol.download(stream, 0, 0, 0)
                stream.recvAll(lambda _s, data, acc: acc.append(data), chunks)
                stream.finish()
            except libvirt.libvirtError as exc:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise TargetError(f"cannot read {name} on {self.url}: {_why(exc)}") from exc
            return b"".join(chunks)
        return None

    def console_output(self, instance_id: str) -> str:
        rec = self._load(instance_id)
        cached = self.dir / instance_id / "console.log"
        if rec["state"] != "terminated":
            try:
                conn = self._connect()
                data = self._download(conn, self._pool(conn)[0], self._console_volume(instance_id))
                if data is not None:
                    _write_private(cached, data)
            except TargetError as exc:
                log.warning("%s: console of %s not read: %s", self.url, instance_id, exc.message)
        try:
            return cached.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    # ---- lifecycle -----------------------------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> TargetInstance:
        images = [Path(spec.disk_image).resolve(), *(Path(p).resolve() for p in spec.data_disks)]
        for image in images:
            if not image.is_file():
                raise TargetError(f"disk image {image} does not exist")
        if spec.boot_mode not in ("legacy-bios", "uefi"):
            raise TargetError(f"unknown boot mode {spec.boot_mode!r} (legacy-bios, uefi)")
        network = spec.network or self.network
        conn = self._connect()
        pool, pool_dir = self._pool(conn)
        try:
            if not conn.networkLookupByName(network).isActive():
                raise TargetError(f"network {network!r} on {self.url} is not active (virsh net-start {network})")
        except libvirt.libvirtError as exc:
            raise TargetError(f"network {network!r} on {self.url}: {_why(exc)}") from exc
        idir = self.dir / spec.instance_id
        with self._lock:
            try:
                idir.mkdir(mode=0o700, parents=True)
            except FileExistsError:
                raise TargetError(f"instance {spec.instance_id} already exists") from None
        rec: dict[str, Any] = {
            "instance_id": spec.instance_id, "instance_type": spec.instance_type, "vcpus": spec.vcpus,
            "memory_mib": spec.memory_mib, "tags": dict(spec.tags), "boot_mode": spec.boot_mode,
            "launch_time": datetime.now(UTC).isoformat(), "state": "pending", "network": network,
            "pool": self.pool_name, "mac": instance_mac(spec.instance_id), "volumes": [], "url": self.url}
        self._save(rec)
        try:
            for n, image in enumerate(images):
                rec["volumes"].append(self._upload(conn, pool, f"{spec.instance_id}-disk{n}", image, idir))
                self._save(rec)
            xml = _domain_xml(rec, pool_dir, self._console_volume(spec.instance_id))
            dom = conn.defineXML(xml)
            dom.create()
        except (TargetError, libvirt.libvirtError, OSError, subprocess.SubprocessError) as exc:
            why = exc.message if isinstance(exc, TargetError) else _why(exc) if isinstance(exc, libvirt.libvirtError) \
                else str(exc)
            self._remove_from_host(conn, rec)
            rec["state"], rec["state_reason"] = "terminated", f"Server.InternalError: {why}"
            self._save(rec)
            raise TargetError(f"cannot launch {spec.instance_id} on {self.url}: {why}") from exc
        rec["booted_at"] = time.time()
        self._save(rec)
        log.info("launched %s on %s (%s, %d vCPU, %d MiB, %s, network %s)", spec.instance_id, self.url,
                 spec.instance_type, spec.vcpus, spec.memory_mib, spec.boot_mode, network)
        return self._to_instance(rec)

    def _upload(self, conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, image: Path,
                idir: Path) -> str:
        """Upload ``image`` as volume ``name`` (qcow2; a raw image is converted first); returns the name."""
        source, temp = image, None
        if not _is_qcow2(image):
            temp = idir / "upload.qcow2"
            subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(image), str(temp)], check=True,
                           capture_output=True, timeout=3600)
            source = temp
        try:
            size = source.stat().st_size
            vol = pool.createXML(
                f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{size}</capacity>"
                "<allocation unit='bytes'>0</allocation><target><format type='raw'/>"
                "<permissions><mode>0600</mode></permissions></target></volume>", 0)
            stream = conn.newStream(0)
            try:
                vol.upload(stream, 0, size, 0)
                with open(source, "rb") as f:
                    stream.sendAll(lambda _s, nbytes, fh: fh.read(nbytes), f)
                stream.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
                raise
        finally:
            if temp is not None:
                temp.unlink(missing_ok=True)
        return name

    def _remove_from_host(self, conn: libvirt.virConnect, rec: dict[str, Any]) -> None:
        """Destroy and undefine the domain (with its NVRAM), delete its volumes and console file."""
        with contextlib.suppress(libvirt.libvirtError):
            dom = conn.lookupByName(rec["instance_id"])
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        pool, _ = self._pool(conn)
        for attempt in range(30):  # a refresh waits for other uploads to this pool to finish
            try:
                pool.refresh(0)
                break
            except libvirt.libvirtError:
                time.sleep(1 if attempt < 29 else 0)
        for name in [*rec.get("volumes", []), self._console_volume(rec["instance_id"])]:
            try:
                pool.storageVolLookupByName(name).delete(0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise TargetError(f"cannot delete volume {name} on {self.url}: {_why(exc)}") from exc

    def _refresh(self, rec: dict[str, Any]) -> tuple[dict[str, Any], str, bool]:
        """Reconcile a record with its domain; returns it with the address (and whether it is public)."""
        if rec["state"] in ("terminated",):
            return rec, "", False
        try:
            conn = self._connect()
            dom = conn.lookupByName(rec["instance_id"])
            state = dom.state()[0]
        except TargetError as exc:
            return {**rec, "state_reason": f"Server.InternalError: target unreachable: {exc.message}"}, "", False
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                return {**rec, "state_reason": f"Server.InternalError: {_why(exc)}"}, "", False
            rec.update(state="terminated", state_reason="Server.InternalError: the domain is gone from the target",
                       terminated_at=time.time())
            self._save(rec)
            return rec, "", False
        active = state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED,
                           libvirt.VIR_DOMAIN_SHUTDOWN)
        before = (rec["state"], rec.get("state_reason", ""))
        if active:
            if rec["state"] == "stopping" and time.time() - rec.get("stop_requested_at", 0) > self.shutdown_timeout:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()  # the guest ignored the power-off request
            elif rec["state"] in ("pending", "stopped") and self._guest_started(conn, rec):
                rec["state"], rec["state_reason"] = "running", ""
        elif rec["state"] == "stopping":
            rec["state"], rec["state_reason"] = "stopped", "Client.UserInitiatedShutdown"
        elif rec["state"] != "stopped":
            rec["state"], rec["state_reason"] = "stopped", "Server.InternalError: the domain shut off"
        if (rec["state"], rec.get("state_reason", "")) != before:
            self._save(rec)
        if rec["state"] not in ("pending", "running", "stopping"):
            return rec, "", False
        return (rec, *self._address(conn, rec))

    def _guest_started(self, conn: libvirt.virConnect, rec: dict[str, Any]) -> bool:
        """Running once the guest has written to its serial console (as the QEMU target counts it)."""
        return bool(self.console_output(rec["instance_id"]))

    def describe(self, instance_id: str) -> TargetInstance:
        with self._lock:
            rec, ip, public = self._refresh(self._load(instance_id))
        return self._to_instance(rec, ip, public)

    def list(self) -> list[TargetInstance]:
        out = []
        for path in sorted(self.dir.glob("i-*/instance.json")):
            with contextlib.suppress(NotFound, TargetError):
                out.append(self.describe(path.parent.name))
        return sorted(out, key=lambda i: i.launch_time)

    def stop(self, instance_id: str) -> TargetInstance:
        with self._lock:
            rec, _, _ = self._refresh(self._load(instance_id))
            if rec["state"] == "terminated":
                raise TargetError(f"instance {instance_id} is terminated")
            if rec["state"] in ("stopped", "stopping"):
                return self._to_instance(rec)
            conn = self._connect()
            try:
                conn.lookupByName(instance_id).shutdown()  # ACPI power-off; destroyed after the grace period
            except libvirt.libvirtError as exc:
                raise TargetError(f"cannot stop {instance_id} on {self.url}: {_why(exc)}") from exc
            rec.update(state="stopping", stop_requested_at=time.time())
            self._save(rec)
        threading.Thread(target=self._reap, args=(instance_id,), daemon=True).start()
        return self.describe(instance_id)

    def _reap(self, instance_id: str) -> None:
        deadline = time.monotonic() + self.shutdown_timeout + 1
        while time.monotonic() < deadline:
            with contextlib.suppress(NotFound, TargetError):
                if self.describe(instance_id).state is not InstanceState.STOPPING:
                    return
            time.sleep(1)
        with contextlib.suppress(NotFound, TargetError):
            self.describe(instance_id)  # past the grace period: destroys the domain

    def start(self, instance_id: str) -> TargetInstance:
        with self._lock:
            rec, _, _ = self._refresh(self._load(instance_id))
            if rec["state"] != "stopped":
                raise TargetError(f"instance {instance_id} is {rec['state']}, not stopped")
            conn = self._connect()
            try:
                conn.lookupByName(instance_id).create()
            except libvirt.libvirtError as exc:
                raise TargetError(f"cannot start {instance_id} on {self.url}: {_why(exc)}") from exc
            rec.update(state="pending", state_reason="", booted_at=time.time())
            self._save(rec)
            return self._to_instance(rec)

    def terminate(self, instance_id: str, reason: str = "Client.UserInitiatedShutdown") -> None:
        with self._lock:
            rec = self._load(instance_id)
            if rec["state"] == "terminated":
                return
            self.console_output(instance_id)  # the last console output, kept in the record directory
            conn = self._connect()
            self._remove_from_host(conn, rec)
            rec.update(state="terminated", state_reason=reason, terminated_at=time.time())
            self._save(rec)
            log.info("terminated %s on %s", instance_id, self.url)

def _network(xml: str) -> Network | None:
    """A libvirt network's name, IPv4 range and whether its addresses are reachable from outside."""
    root = ET.fromstring(xml)
    ip = root.find("ip[@address]")
    if ip is None or ":" in (ip.get("address") or ""):
        return None
    prefix = ip.get("prefix") or ip.get("netmask") or "24"
    cidr = ipaddress.ip_network(f"{ip.get('address')}/{prefix}", strict=False)
    forward = root.find("forward")
    mode = forward.get("mode", "nat") if forward is not None else ""
    return Network(root.findtext("name") or "", str(cidr), mode in _PUBLIC_FORWARDS)


def _domain_xml(rec: dict[str, Any], pool_dir: str, console_volume: str) -> str:
    """The domain of ``rec``: TCG, its size, firmware, disks on virtio, NIC, serial console to a file."""
    iid = rec["instance_id"]
    uefi = rec["boot_mode"] == "uefi"
    disks = "".join(
        f"<disk type='volume' device='disk'><driver name='qemu' type='qcow2' cache='writeback' discard='unmap'/>"
        f"<source pool={quoteattr(rec['pool'])} volume={quoteattr(vol)}/>"
        f"<target dev='vd{chr(ord('a') + n)}' bus='virtio'/>{BOOT_FIRST if n == 0 else ''}</disk>"
        for n, vol in enumerate(rec["volumes"]))
    firmware = ("<os firmware='efi'><type arch='x86_64' machine='pc'>hvm</type>"
                "<firmware><feature enabled='no' name='secure-boot'/><feature enabled='no' name='enrolled-keys'/>"
                "</firmware></os>" if uefi else "<os><type arch='x86_64' machine='pc'>hvm</type></os>")
    meta = escape(json.dumps({"instanceType": rec["instance_type"], "launchTime": rec["launch_time"]}))
    console = os.path.join(pool_dir, console_volume)
    return (
        f"<domain type='qemu'><name>{escape(iid)}</name>"
        f"<metadata><rehost:instance xmlns:rehost='{METADATA_NS}'>{meta}</rehost:instance></metadata>"
        f"<memory unit='MiB'>{int(rec['memory_mib'])}</memory><vcpu>{int(rec['vcpus'])}</vcpu>{firmware}"
        "<features><acpi/><apic/></features><cpu mode='maximum'/>"
        "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>"
        f"<devices>{disks}"
        f"<interface type='network'><source network={quoteattr(rec['network'])}/><mac address='{rec['mac']}'/>"
        "<model type='virtio'/></interface>"
        f"<serial type='pty'><log file={quoteattr(console)} append='on'/><target port='0'/></serial>"
        "<console type='pty'><target type='serial' port='0'/></console>"
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
        "<memballoon model='none'/></devices></domain>")


def _is_qcow2(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"QFI\xfb"


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)
