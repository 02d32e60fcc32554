"""The job runner's Launcher on the real QEMU target, observed through the EC2 API of a real server.

The launch is made in this process on the server's data directory, exactly as the server's job runner
makes it (same database, same instances directory); everything after it is seen through boto3.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from api.agentapi import AgentClient
from helpers import RunningServer, free_port
from rehost.api.mgn.service import Account
from rehost.controlplane import account_id_for
from rehost.db import repo
from rehost.db.store import Store
from rehost.jobs.interfaces import ConvertedDisk, LaunchRequest
from rehost.launch.launcher import TargetLauncher
from rehost.launch.service import Ec2Service
from rehost.launch.sizing import make_sizer
from rehost.targets.qemu import QemuTarget

from .conftest import GUEST_BANNER


@dataclass
class LaunchEnv:
    server: RunningServer
    key: tuple[str, str]
    mgn: Any
    ec2: Any
    agent: AgentClient
    local: Ec2Service
    launcher: TargetLauncher


@pytest.fixture
def launch_env() -> Iterator[LaunchEnv]:
    base = Path(tempfile.mkdtemp(prefix="rehost-launch-"))
    data = base / "data"
    server = RunningServer(data, free_port()).start()
    store = Store(f"sqlite:///{data / 'rehost.db'}")
    target = QemuTarget(data / "instances", accel="tcg")
    local = Ec2Service(store, Account(account_id_for(data), "us-east-1"), target, data / "instances")
    try:
        key = server.access_key()
        mgn = server.client(key)
        mgn.initialize_service()
        yield LaunchEnv(server, key, mgn, server.client(key, service="ec2"), AgentClient(server.endpoint, *key),
                        local, TargetLauncher(local))
    finally:
        for inst in target.list():
            target.terminate(inst.instance_id)
        server.stop()
        store.close()
        shutil.rmtree(base, ignore_errors=True)


def _wait_state(ec2: Any, instance_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        (res,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        inst: dict[str, Any] = res["Instances"][0]
        if inst["State"]["Name"] == state or time.monotonic() > deadline:
            return inst
        time.sleep(0.3)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _size_and_launch(env: LaunchEnv, server_id: str, image: Path) -> tuple[dict[str, Any], tuple[str, int, int]]:
    with env.local.store.read() as conn:
        server = repo.load_server(conn, server_id)
    size = make_sizer(env.local.default_version_data)(server)
    result = env.launcher.launch(LaunchRequest(
        source_server_id=server_id, job_id="mgnjob-0123456789abcdef0", instance_type=size[0], vcpus=size[1],
        memory_mib=size[2], disk=ConvertedDisk(image)))
    return result, size


def test_step5_launch_runs_shows_public_ip_console_and_terminates(launch_env: LaunchEnv, tiny_boot_image: Path) -> None:
    env = launch_env
    server_id = env.agent.register("tinyweb")["sourceServerID"]
    lt = env.mgn.get_launch_configuration(sourceServerID=server_id)["ec2LaunchTemplateID"]
    # Hands-on Step 5: right-sizing off, a t3.micro version with a public IP made the default.
    env.mgn.update_launch_configuration(sourceServerID=server_id, targetInstanceTypeRightSizingMethod="NONE")
    env.ec2.create_launch_template_version(
        LaunchTemplateId=lt, SourceVersion="$Default",
        LaunchTemplateData={"InstanceType": "t3.micro",
                            "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": True}]})
    env.ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion="2")

    result, size = _size_and_launch(env, server_id, tiny_boot_image)
    assert size == ("t3.micro", 2, 1024)
    instance_id = result["instanceId"]
    assert result["publicIp"] == "127.0.0.1" and set(result["ports"]) == {22, 80}

    inst = _wait_state(env.ec2, instance_id, "running")
    assert inst["State"] == {"Code": 16, "Name": "running"}
    assert inst["InstanceType"] == "t3.micro" and inst["PublicIpAddress"] == "127.0.0.1"
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["rehost:port-forward:80"] == f"127.0.0.1:{result['ports'][80]}"
    assert tags["AWSApplicationMigrationServiceSourceServerID"] == server_id
    assert tags["Name"] == "tinyweb"
    assert _listening(result["ports"][80])

    # boto3 decodes GetConsoleOutput's base64 itself; the raw answer shows it is base64 on the wire.
    console = env.ec2.get_console_output(InstanceId=instance_id)["Output"]
    assert GUEST_BANNER.decode() in console
    from ec2.rawclient import signed_form_post

    status, body = signed_form_post(env.server.endpoint, env.key,
                                    {"Action": "GetConsoleOutput", "Version": "2016-11-15", "InstanceId": instance_id})
    import base64
    import re

    assert status == 200
    wire = re.search(r"<output>([^<]*)</output>", body)
    assert wire and GUEST_BANNER in base64.b64decode(wire.group(1))

    # Instances survive a control-plane restart.
    env.server.restart()
    assert _wait_state(env.ec2, instance_id, "running")["State"]["Name"] == "running"

    changes = env.ec2.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"]
    assert changes == [{"InstanceId": instance_id, "CurrentState": {"Code": 48, "Name": "terminated"},
                        "PreviousState": {"Code": 16, "Name": "running"}}]
    inst = _wait_state(env.ec2, instance_id, "terminated")
    assert inst["State"]["Name"] == "terminated" and "PublicIpAddress" not in inst
    assert not _listening(result["ports"][80])
    # Terminating again is harmless, as on EC2.
    again = env.ec2.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"]
    assert again[0]["PreviousState"]["Name"] == "terminated"


def test_default_template_basic_sizing_and_no_public_ip(launch_env: LaunchEnv, tiny_boot_image: Path) -> None:
    env = launch_env
    server_id = env.agent.register("private")["sourceServerID"]  # 2 cores, 2 GiB RAM
    result, size = _size_and_launch(env, server_id, tiny_boot_image)
    assert size == ("c5.large", 2, 4096)  # BASIC overrides the template's t3.small
    assert result["publicIp"] is None
    inst = _wait_state(env.ec2, result["instanceId"], "running")
    assert inst["InstanceType"] == "c5.large" and "PublicIpAddress" not in inst
    assert inst["PrivateIpAddress"] == "10.0.2.15"
    env.launcher.terminate(result["instanceId"])
    assert _wait_state(env.ec2, result["instanceId"], "terminated")["State"]["Name"] == "terminated"
    with pytest.raises(ClientError) as exc:
        env.ec2.get_console_output(InstanceId="i-0000000000000000f")
    assert exc.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"


def test_ingress_ports_of_a_new_version_are_forwarded(launch_env: LaunchEnv, tiny_boot_image: Path) -> None:
    env = launch_env
    server_id = env.agent.register("ports")["sourceServerID"]
    lt = env.mgn.get_launch_configuration(sourceServerID=server_id)["ec2LaunchTemplateID"]
    version = env.local.create_launch_template_version(
        {"NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": True}]}, LaunchTemplateId=lt,
        SourceVersion="$Default", ingress_ports=[443, 8080])["LaunchTemplateVersion"]
    env.ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion=str(version["VersionNumber"]))
    groups = version["LaunchTemplateData"]["NetworkInterfaces"][0]["Groups"]
    (group,) = env.ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"]
    assert sorted(p["FromPort"] for p in group["IpPermissions"]) == [443, 8080]

    result, _ = _size_and_launch(env, server_id, tiny_boot_image)
    assert set(result["ports"]) == {443, 8080}
    assert all(_listening(port) for port in result["ports"].values())
