"""The job runner's `Launcher` (rehost.jobs.interfaces) over the EC2-style service and its target driver."""

from __future__ import annotations

from typing import Any

from rehost.db import repo
from rehost.errors import TargetError
from rehost.jobs.interfaces import BootResult, LaunchRequest
from rehost.launch.bootcheck import wait_until_booted
from rehost.launch.service import Ec2Service


class TargetLauncher:
    """Launches a job's instance from the source server's own launch template (its default version: public
    IP, ingress ports, user data, tags) with the type the job sized, and terminates instances."""

    def __init__(self, ec2: Ec2Service) -> None:
        self.ec2 = ec2

    def launch(self, request: LaunchRequest) -> dict[str, Any]:
        """Start the instance; returns ``{"instanceId", "publicIp", "privateIp", "ports": {guest: host},
        "instanceType", "state"}``. ``publicIp`` is None when the template assigns no public IP (the
        forwarded ports are still listed, on 127.0.0.1). Raises `TargetError`."""
        with self.ec2.store.read() as conn:
            server = repo.load_server(conn, request.source_server_id)
        template_id = (server.get("_launchConfiguration") or {}).get("ec2LaunchTemplateID")
        if not template_id:
            raise TargetError(f"source server {request.source_server_id} has no EC2 launch template")
        inst = self.ec2.run_instance(
            source_server_id=request.source_server_id, job_id=request.job_id, template_id=template_id,
            instance_type=request.instance_type, vcpus=request.vcpus, memory_mib=request.memory_mib,
            disk_image=request.disk.path, extra_tags=dict(request.tags), data_disks=request.disk.data_disks,
            boot_mode="uefi" if request.boot_mode == "UEFI" else "legacy-bios")
        return {"instanceId": inst["InstanceId"], "publicIp": inst.get("PublicIpAddress"),
                "privateIp": inst.get("PrivateIpAddress"), "ports": dict(inst["_ports"]),
                "instanceType": inst["InstanceType"], "state": inst["State"]["Name"]}

    def terminate(self, instance_id: str) -> None:
        """Terminate ``instance_id``; idempotent on a terminated instance. Raises `NotFound`/`TargetError`."""
        self.ec2.terminate_instance(instance_id)

    def wait_until_booted(self, instance_id: str, timeout: float) -> BootResult:
        """Watch the instance until its guest reaches user space (`rehost.launch.bootcheck`)."""
        return wait_until_booted(self.ec2.target, instance_id, timeout)

    def fail(self, instance_id: str, reason: str) -> None:
        """Terminate an instance whose launch failed, with ``reason`` as its state reason. Its console
        output stays readable (GetConsoleOutput), as a failed EC2 instance's does for a while."""
        self.ec2.target.terminate(instance_id, reason=reason)
