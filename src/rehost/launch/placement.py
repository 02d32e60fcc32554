"""Where instances run: the configured targets, in EC2's words, and one driver front over all of them.

Each target is an availability zone (``<region>a`` for the built-in one, the next free letter for each one
added) and each of its networks a subnet of the one VPC. The built-in target is ``Settings.target``
(``qemu:///local`` unless configured), named ``local``; `rehost target add` adds more, kept as ``target``
documents in the control-plane database, read on every use, so a running server sees them at once. The
built-in target's network keeps the subnet ID every launch template has named so far (`DEFAULT_SUBNET`);
any other network's subnet ID is derived from its target's and its own name, so it is stable and needs no
table. A launch template picks a target by its primary interface's ``SubnetId`` or its
``Placement.AvailabilityZone``; without either, the default target (``target`` document ``_default``, else
the built-in one) on its configured network. A new server's template names the default target's subnet.

`Targets` is also the `TargetDriver` the EC2 service, the launcher and the boot check use: it routes each
instance to the driver that launched it (the ``ec2-instance`` document's ``_target``, remembered in memory
at launch).
"""

from __future__ import annotations

import hashlib
import re
import string
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from rehost import ids
from rehost.db import repo
from rehost.db.store import Store
from rehost.errors import Conflict, InvalidInput, NotFound, TargetError
from rehost.launch import errors as e
from rehost.launch.templates import DEFAULT_SUBNET
from rehost.targets.base import LaunchSpec, Network, TargetDriver, TargetInstance
from rehost.targets.registry import LOCAL_QEMU, parse_target_url

TARGET = "target"
INSTANCE = "ec2-instance"
BUILTIN = "local"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class Target:
    """One configured target: its name, URL, availability zone, default network and storage pool."""

    name: str
    url: str
    zone: str
    network: str = ""
    pool: str = ""
    default: bool = False
    builtin: bool = False


@dataclass(frozen=True)
class Subnet:
    subnet_id: str
    target: Target
    network: Network


Opener = Callable[[Target], TargetDriver]


class Targets:
    """The configured targets of one control plane, and the `TargetDriver` over all of their drivers."""

    def __init__(self, store: Store, region: str, open_driver: Opener, *, builtin_url: str = LOCAL_QEMU) -> None:
        parse_target_url(builtin_url)
        self.store = store
        self.region = region
        self._open = open_driver
        self.builtin_url = builtin_url
        self._drivers: dict[tuple[str, str], TargetDriver] = {}
        self._where: dict[str, str] = {}  # instance ID -> target name, for those launched by this process
        self._lock = threading.Lock()

    # -- configuration ----------------------------------------------------------------------------------

    def configured(self) -> list[Target]:
        """The built-in target first, then those added, in order; exactly one is the default."""
        with self.store.read() as conn:
            docs = repo.list_docs(conn, TARGET)
        default = next((d["name"] for d in docs if d.get("default")), BUILTIN)
        out = [Target(BUILTIN, self.builtin_url, f"{self.region}a", "" if self._local_qemu else "default",
                      "default", default == BUILTIN, True)]
        out += [Target(d["name"], d["url"], f"{self.region}{d['zone']}", d.get("network", ""), d.get("pool", ""),
                       d["name"] == default) for d in docs]
        return out

    @property
    def _local_qemu(self) -> bool:
        return parse_target_url(self.builtin_url).kind == "qemu"

    def get(self, name: str) -> Target:
        for target in self.configured():
            if target.name == name:
                return target
        raise NotFound(f"no target named {name!r} (rehost target list)", resource_id=name, resource_type="target")

    def default(self) -> Target:
        return next(t for t in self.configured() if t.default)

    def add(self, name: str, url: str, *, network: str = "", pool: str = "", default: bool = False) -> Target:
        """Add a target (an availability zone); the URL is checked here, reachability at its first use."""
        if not NAME.match(name or ""):
            raise InvalidInput(f"target name {name!r} is not valid: a lower-case letter, then up to 31 lower-case "
                               "letters, digits or hyphens")
        parsed = parse_target_url(url)
        if parsed.kind == "qemu" and (network or pool):
            raise InvalidInput(f"{url} has one network (QEMU's user network) and no storage pool: "
                               "--network and --pool are for libvirt targets")
        with self.store.transaction() as conn:
            docs = repo.list_docs(conn, TARGET)
            existing = [BUILTIN] + [d["name"] for d in docs]
            if name in existing:
                raise Conflict(f"a target named {name!r} already exists", resource_id=name)
            if url in [self.builtin_url] + [d["url"] for d in docs]:
                raise Conflict(f"a target with URL {url} already exists", resource_id=name)
            used = {"a"} | {d["zone"] for d in docs}
            free = [c for c in string.ascii_lowercase if c not in used]
            if not free:
                raise Conflict("every availability zone letter is taken: remove a target first")
            doc: dict[str, Any] = {"name": name, "url": url, "zone": free[0], "network": network, "pool": pool,
                   "createdAt": ids.iso(ids.utcnow())}
            if default:
                self._clear_default(conn, docs)
                doc["default"] = True
            repo.save_doc(conn, TARGET, name, doc, seq=self.store.next_seq(conn, TARGET))
        return self.get(name)

    def set_default(self, name: str) -> Target:
        with self.store.transaction() as conn:
            docs = repo.list_docs(conn, TARGET)
            if name != BUILTIN and name not in {d["name"] for d in docs}:
                raise NotFound(f"no target named {name!r} (rehost target list)", resource_id=name,
                               resource_type="target")
            self._clear_default(conn, docs)
            for doc in docs:
                if doc["name"] == name:
                    repo.save_doc(conn, TARGET, name, {**doc, "default": True}, seq=0)
        return self.get(name)

    @staticmethod
    def _clear_default(conn: Any, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            if doc.get("default"):
                repo.save_doc(conn, TARGET, doc["name"], {**doc, "default": False}, seq=0)

    def remove(self, name: str) -> None:
        """Remove a target that runs no instance (terminated ones may remain: their records stay readable)."""
        if name == BUILTIN:
            raise InvalidInput(f"the built-in target {BUILTIN!r} is configured by --target / REHOST_TARGET")
        target = self.get(name)
        with self.store.read() as conn:
            docs = [d for d in repo.list_docs(conn, INSTANCE) if d.get("_target") == name]
        live = []
        for doc in docs:
            try:
                if self.driver(target).describe(doc["InstanceId"]).state.value != "terminated":
                    live.append(doc["InstanceId"])
            except NotFound:
                continue
            except TargetError as exc:
                raise Conflict(f"cannot tell whether target {name!r} still runs {doc['InstanceId']}: {exc.message}",
                               resource_id=name) from exc
        if live:
            raise Conflict(f"target {name!r} still has instances {', '.join(live)}: terminate them first",
                           resource_id=name)
        with self.store.transaction() as conn:
            repo.delete_doc(conn, TARGET, name)

    # -- drivers ----------------------------------------------------------------------------------------

    def driver(self, target: Target) -> TargetDriver:
        with self._lock:
            key = (target.name, target.url)
            if key not in self._drivers:
                self._drivers[key] = self._open(target)
            return self._drivers[key]

    # -- EC2's view: zones and subnets ------------------------------------------------------------------

    def subnet_id(self, target: Target, network: str) -> str:
        if target.builtin and network in ("", target.network, "user"):
            return DEFAULT_SUBNET
        return "subnet-" + hashlib.sha256(f"{target.name}/{network}".encode()).hexdigest()[:17]

    def default_subnet_id(self) -> str:
        """The subnet a new server's launch template names: the default target's configured network."""
        target = self.default()
        return self.subnet_id(target, target.network)

    def zones(self) -> list[tuple[Target, str]]:
        """Every target with "" if it answers, else the reason it does not."""
        out = []
        for target in self.configured():
            try:
                self.driver(target).networks()
                out.append((target, ""))
            except TargetError as exc:
                out.append((target, exc.message))
        return out

    def subnets(self) -> list[Subnet]:
        """The networks of every target that answers (an unreachable target's zone shows why)."""
        out = []
        for target in self.configured():
            try:
                networks = self.driver(target).networks()
            except TargetError:
                continue
            out += [Subnet(self.subnet_id(target, n.name), target, n) for n in networks]
        return out

    def resolve(self, subnet_id: str | None, zone: str | None) -> tuple[Target, str]:
        """The target and network a launch template's subnet and/or availability zone pick (EC2's errors for
        ones that do not exist); neither picks the default target on its configured network."""
        targets = self.configured()
        by_zone = None
        if zone:
            by_zone = next((t for t in targets if t.zone == zone), None)
            if by_zone is None:
                raise e.invalid_value("Placement.AvailabilityZone", zone,
                                      "Valid zones: " + ", ".join(t.zone for t in targets))
        if not subnet_id:
            target = by_zone or self.default()
            return target, target.network
        found: tuple[Target, str] | None = None
        unreachable = []
        for target in targets:  # the configured networks first: they need no connection
            if self.subnet_id(target, target.network) == subnet_id:
                found = (target, target.network)
                break
        if found is None:
            for target in targets:
                try:
                    networks = self.driver(target).networks()
                except TargetError as exc:
                    unreachable.append(f"{target.name}: {exc.message}")
                    continue
                match = next((n for n in networks if self.subnet_id(target, n.name) == subnet_id), None)
                if match is not None:
                    found = (target, match.name)
                    break
        if found is None:
            why = f" (unreachable targets: {'; '.join(unreachable)})" if unreachable else ""
            raise e.Ec2NotFound("InvalidSubnetID.NotFound", f"The subnet ID '{subnet_id}' does not exist{why}",
                                subnet_id, "subnet")
        if by_zone is not None and by_zone.name != found[0].name:
            raise e.invalid_value("Placement.AvailabilityZone", zone,
                                  f"Subnet {subnet_id} is in {found[0].zone}, not {zone}")
        return found

    # -- TargetDriver over every target ---------------------------------------------------------------

    def target_of(self, instance_id: str) -> Target:
        """The target an instance was launched on (the built-in one for instances older than targets)."""
        name = self._where.get(instance_id)
        if name is None:
            with self.store.read() as conn:
                doc = repo.load_doc(conn, INSTANCE, instance_id)
            name = (doc or {}).get("_target") or BUILTIN
        try:
            return self.get(name)
        except NotFound:
            raise NotFound(f"The instance ID '{instance_id}' ran on target {name!r}, which was removed",
                           resource_id=instance_id, resource_type="instance") from None

    def _of(self, instance_id: str) -> TargetDriver:
        return self.driver(self.target_of(instance_id))

    def launch(self, spec: LaunchSpec, target: Target | None = None) -> TargetInstance:
        target = target or self.default()
        self._where[spec.instance_id] = target.name
        return self.driver(target).launch(spec)

    def describe(self, instance_id: str) -> TargetInstance:
        return self._of(instance_id).describe(instance_id)

    def list(self) -> list[TargetInstance]:
        out = []
        for target in self.configured():
            try:
                out += self.driver(target).list()
            except TargetError:
                continue
        return sorted(out, key=lambda i: i.launch_time)

    def console_output(self, instance_id: str) -> str:
        return self._of(instance_id).console_output(instance_id)

    def stop(self, instance_id: str) -> TargetInstance:
        return self._of(instance_id).stop(instance_id)

    def start(self, instance_id: str) -> TargetInstance:
        return self._of(instance_id).start(instance_id)

    def terminate(self, instance_id: str, reason: str = "Client.UserInitiatedShutdown") -> None:
        self._of(instance_id).terminate(instance_id, reason=reason)

    def networks(self) -> tuple[Network, ...]:
        return tuple(s.network for s in self.subnets())

    def purge_terminated(self, older_than: float, only: Collection[str] | None = None) -> tuple[str, ...]:
        purged: tuple[str, ...] = ()
        for target in self.configured():
            purge = getattr(self.driver(target), "purge_terminated", None)
            if purge is not None:
                purged += tuple(purge(older_than, only=only))
        return purged


def single(store: Store, region: str, driver: TargetDriver) -> Targets:
    """Targets holding only ``driver``, as the built-in target (for callers that bring their own driver)."""
    return Targets(store, region, lambda target: driver, builtin_url=getattr(driver, "url", LOCAL_QEMU))
