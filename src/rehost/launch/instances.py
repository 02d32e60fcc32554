"""EC2-style instances over a target driver: launch from a template, describe, terminate, console output.

An ``ec2-instance`` document records what EC2 would know at launch (type, image, template, tags, the
source server); the driver is the truth for the instance's state, public address and forwarded ports,
which are merged in at describe time. Both survive a control-plane restart (the database; the driver's
own records, and QEMU runs daemonized).

The forwarded ports are shown as tags ``rehost:port-forward:<guest port>`` = ``127.0.0.1:<host port>``:
EC2's Instance shape has no place for them, and tags are what every EC2 client already displays.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from rehost import ids
from rehost.db import repo
from rehost.db.store import Store
from rehost.errors import NotFound, TargetError
from rehost.launch import errors as e
from rehost.launch import templates as tpl
from rehost.launch.filters import matches, paginate
from rehost.launch.placement import Targets
from rehost.targets.base import InstanceState, LaunchSpec, TargetInstance, new_instance_id

INSTANCE = "ec2-instance"
STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
CONSOLE_LIMIT = 64 * 1024  # EC2 returns the most recent 64 KB of console output
PORT_TAG = "rehost:port-forward:"


class InstanceOps:
    """The instance half of `rehost.launch.service.Ec2Service` (which supplies these attributes)."""

    store: Store
    target: Targets
    account: Any

    def launch_settings(self, template_id: str, version: str | int | None = None) -> tpl.LaunchSettings:
        raise NotImplementedError

    # -- launch (the job runner's Launcher calls this) ---------------------------------------------------

    def run_instance(self, *, source_server_id: str, job_id: str, template_id: str, instance_type: str,
                     vcpus: int, memory_mib: int, disk_image: Any, extra_tags: dict[str, str] | None = None,
                     data_disks: tuple[Any, ...] = (), boot_mode: str = "legacy-bios") -> dict[str, Any]:
        """Launch one instance from ``template_id``'s default version on the target (the boot disk, then
        ``data_disks`` in order, in firmware ``boot_mode``); returns the described instance (member names).
        The template's subnet or availability zone picks the target (`rehost.launch.placement`).
        Raises `TargetError` if the target cannot start it; the failed instance is still recorded,
        terminated, with the reason (as EC2 keeps a failed launch describable)."""
        settings = self.launch_settings(template_id)
        target, network = self.target.resolve(settings.subnet_id, settings.availability_zone)
        instance_id = new_instance_id()
        tags = {**settings.tags, "AWSApplicationMigrationServiceManaged": "mgn.amazonaws.com",
                "AWSApplicationMigrationServiceSourceServerID": source_server_id, **(extra_tags or {})}
        doc: dict[str, Any] = {
            "InstanceId": instance_id, "InstanceType": instance_type, "ImageId": ids.new_id("ami"),
            "ReservationId": ids.new_id("r"), "LaunchTime": ids.iso(ids.utcnow()), "Tags": tags,
            "SecurityGroupIds": list(settings.security_group_ids), "VolumeType": settings.volume_type,
            "_sourceServerID": source_server_id, "_jobID": job_id, "_launchTemplateId": template_id,
            "_associatePublicIp": settings.associate_public_ip, "_ingressPorts": list(settings.ingress_ports),
            "_bootMode": boot_mode, "_target": target.name, "_zone": target.zone,
            "_subnet": self.target.subnet_id(target, network),
        }
        spec = LaunchSpec(instance_id=instance_id, instance_type=instance_type, vcpus=vcpus, memory_mib=memory_mib,
                          disk_image=disk_image, ingress_ports=settings.ingress_ports, user_data=settings.user_data,
                          tags=tags, data_disks=tuple(data_disks), boot_mode=boot_mode, network=network)
        try:
            self.target.launch(spec, target)
        except TargetError as exc:
            why = f"target {target.name} ({target.url}): {exc.message}"
            doc["_failure"] = f"Server.InternalError: {why}"
            self._save_instance(doc)
            raise TargetError(why) from exc
        self._save_instance(doc)
        return self._describe_one(doc)

    def _save_instance(self, doc: dict[str, Any]) -> None:
        with self.store.transaction() as conn:
            repo.save_doc(conn, INSTANCE, doc["InstanceId"], doc, seq=self.store.next_seq(conn, INSTANCE),
                          parent=doc.get("_sourceServerID"))

    # -- describe -------------------------------------------------------------------------------------------

    def _instance_doc(self, instance_id: str) -> dict[str, Any]:
        if not isinstance(instance_id, str) or not tpl.INSTANCE_ID.match(instance_id):
            raise e.instance_malformed(str(instance_id))
        with self.store.read() as conn:
            doc = repo.load_doc(conn, INSTANCE, instance_id)
        if doc is None:
            raise e.instance_not_found(instance_id)
        return doc

    def _live(self, doc: dict[str, Any]) -> TargetInstance | None:
        if doc.get("_failure"):
            return None
        try:
            return self.target.describe(doc["InstanceId"])
        except NotFound:
            return None  # the target lost it (its directory removed): EC2 would call it terminated

    def _describe_one(self, doc: dict[str, Any]) -> dict[str, Any]:
        live = self._live(doc)
        state = live.state.value if live else "terminated"
        reason = (live.state_reason if live else doc.get("_failure", "")) or ""
        tags = dict(doc.get("Tags") or {})
        out: dict[str, Any] = {
            "InstanceId": doc["InstanceId"], "ImageId": doc["ImageId"], "InstanceType": doc["InstanceType"],
            "State": {"Code": STATE_CODES[state], "Name": state}, "LaunchTime": doc["LaunchTime"],
            "AmiLaunchIndex": 0, "Architecture": "x86_64", "RootDeviceType": "ebs", "RootDeviceName": "/dev/sda1",
            "VirtualizationType": "hvm", "BootMode": live.boot_mode if live else doc.get("_bootMode", "legacy-bios"),
            "PrivateDnsName": "", "PublicDnsName": "",
            "Placement": {"AvailabilityZone": doc.get("_zone") or f"{self.account.region}a", "Tenancy": "default"},
            "Monitoring": {"State": "disabled"}, "StateTransitionReason": reason,
            "SecurityGroups": [{"GroupId": g, "GroupName": g} for g in doc.get("SecurityGroupIds", [])],
        }
        if live is not None:
            out["CpuOptions"] = {"CoreCount": live.vcpus, "ThreadsPerCore": 1}
        if reason:
            code = reason.split(":", 1)[0] if reason.startswith(("Client.", "Server.")) else "Server.InternalError"
            out["StateReason"] = {"Code": code, "Message": reason}
        if doc.get("_subnet"):
            out["SubnetId"] = doc["_subnet"]
        if live is not None and state in ("pending", "running", "stopping"):
            out["PrivateIpAddress"] = live.private_ip or None
            nic: dict[str, Any] = {"NetworkInterfaceId": "eni-" + doc["InstanceId"][2:],
                                   "PrivateIpAddress": live.private_ip, "Status": "in-use",
                                   "Attachment": {"DeviceIndex": 0, "Status": "attached"}}
            if doc.get("_associatePublicIp") and live.public_ip:
                out["PublicIpAddress"] = live.public_ip
                nic["Association"] = {"PublicIp": live.public_ip, "IpOwnerId": "amazon"}
            out["NetworkInterfaces"] = [nic]
            for guest, host in sorted(live.port_map.items()):
                tags[f"{PORT_TAG}{guest}"] = f"{live.public_ip}:{host}"
        out["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        out["_reservationId"] = doc["ReservationId"]
        out["_ports"] = dict(live.port_map) if live and state in ("pending", "running", "stopping") else {}
        return out

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        """One instance as DescribeInstances shows it, plus ``_ports`` {guest port: host port}."""
        return self._describe_one(self._instance_doc(instance_id))

    def describe_instances(self, InstanceIds: list[str] | None = None, Filters: list[dict[str, Any]] | None = None,
                           MaxResults: int | None = None, NextToken: str | None = None) -> dict[str, Any]:
        if InstanceIds:
            docs = [self._instance_doc(i) for i in InstanceIds]
        else:
            with self.store.read() as conn:
                docs = repo.list_docs(conn, INSTANCE)
        described = [self._describe_one(d) for d in docs]
        described = [d for d in described if matches(d, Filters, {
            "instance-id": lambda d: [d["InstanceId"]], "instance-type": lambda d: [d["InstanceType"]],
            "instance-state-name": lambda d: [d["State"]["Name"]],
            "instance-state-code": lambda d: [str(d["State"]["Code"])],
            "ip-address": lambda d: [d.get("PublicIpAddress", "")]})]
        page, token = paginate(described, MaxResults, NextToken)
        reservations: dict[str, dict[str, Any]] = {}
        for inst in page:
            rid = inst.pop("_reservationId")
            inst.pop("_ports")
            reservations.setdefault(rid, {"ReservationId": rid, "OwnerId": self.account.account_id,
                                          "Groups": [], "Instances": []})["Instances"].append(inst)
        return {"Reservations": list(reservations.values()), "NextToken": token}

    # -- terminate, console -----------------------------------------------------------------------------

    def terminate_instances(self, InstanceIds: list[str]) -> dict[str, Any]:
        """Terminate every instance named (all must exist, or none is touched); idempotent per instance."""
        if not InstanceIds:
            raise e.missing("InstanceId")
        docs = [self._instance_doc(i) for i in InstanceIds]
        changes = []
        for doc in docs:
            live = self._live(doc)
            previous = live.state.value if live else "terminated"
            if live is not None and live.state is not InstanceState.TERMINATED:
                self.target.terminate(doc["InstanceId"])
            changes.append({"InstanceId": doc["InstanceId"],
                            "PreviousState": {"Code": STATE_CODES[previous], "Name": previous},
                            "CurrentState": {"Code": STATE_CODES["terminated"], "Name": "terminated"}})
        return {"TerminatingInstances": changes}

    def terminate_instance(self, instance_id: str) -> None:
        """Terminate one instance (the Launcher's terminate); raises `NotFound` for an unknown ID."""
        self.terminate_instances([instance_id])

    # -- forgetting terminated instances ----------------------------------------------------------------

    def prune_terminated(self, retention: float, *, source_server_id: str | None = None) -> list[str]:
        """Forget instances terminated at least ``retention`` seconds ago (EC2 shows a terminated instance
        for about an hour): the target's directory (record, console output; the disks went at termination)
        and the ``ec2-instance`` document. With ``source_server_id``, only that server's instances. Returns
        the IDs forgotten; a running or stopped instance is never touched."""
        with self.store.read() as conn:
            docs = repo.list_docs(conn, INSTANCE, parent=source_server_id)
        purge = getattr(self.target, "purge_terminated", None)
        if purge is not None:
            purge(retention, only={d["InstanceId"] for d in docs} if source_server_id else None)
        cutoff = ids.utcnow() - timedelta(seconds=retention)
        gone = []
        for doc in docs:
            if ids.parse_iso(doc["LaunchTime"]) > cutoff:
                continue  # launched within the window (or being launched): kept
            try:
                self.target.describe(doc["InstanceId"])
                continue  # the target still has it: live, or terminated within the window
            except NotFound:
                gone.append(doc["InstanceId"])
            except TargetError:
                continue  # a damaged record: kept for a person to look at
        if gone:
            with self.store.transaction() as conn:
                for instance_id in gone:
                    repo.delete_doc(conn, INSTANCE, instance_id)
        return gone

    def get_console_output(self, InstanceId: str) -> dict[str, Any]:
        """The guest's serial console so far (its last 64 KB), base64-encoded as EC2 returns it."""
        doc = self._instance_doc(InstanceId)
        text = ""
        if not doc.get("_failure"):
            try:
                text = self.target.console_output(InstanceId)
            except NotFound:
                text = ""
        raw = text.encode()[-CONSOLE_LIMIT:]
        out: dict[str, Any] = {"InstanceId": InstanceId, "Timestamp": ids.iso(ids.utcnow())}
        if raw:
            out["Output"] = base64.b64encode(raw).decode()
        return out
