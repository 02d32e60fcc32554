"""The job runner's Launcher on the real QEMU target, observed through the EC2 API of a real server.

The launch is made in this process on the server's data directory, exactly as the server's job runner
makes it (same database, same instances directory); everything after it is seen through boto3.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from ec2.rawclient import signed_form_post

from .conftest import GUEST_BANNER, LaunchEnv, listening, size_and_launch, step5, wait_state


def test_step5_launch_runs_shows_public_ip_console_and_terminates(launch_env: LaunchEnv, tiny_disk: Path) -> None:
    env = launch_env
    server_id = env.agent.register("tinyweb")["sourceServerID"]
    step5(env, server_id)

    result, size = size_and_launch(env, server_id, tiny_disk)
    assert size == ("t3.micro", 2, 1024)
    instance_id = result["instanceId"]
    assert result["publicIp"] == "127.0.0.1" and set(result["ports"]) == {22, 80}

    inst = wait_state(env.ec2, instance_id, "running")
    assert inst["State"] == {"Code": 16, "Name": "running"}
    assert inst["InstanceType"] == "t3.micro" and inst["PublicIpAddress"] == "127.0.0.1"
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["rehost:port-forward:80"] == f"127.0.0.1:{result['ports'][80]}"
    assert tags["AWSApplicationMigrationServiceSourceServerID"] == server_id
    assert tags["Name"] == "tinyweb"
    assert listening(result["ports"][80])

    # boto3 decodes GetConsoleOutput's base64 itself; the raw answer shows it is base64 on the wire.
    console = env.ec2.get_console_output(InstanceId=instance_id)["Output"]
    assert GUEST_BANNER.decode() in console
    status, body = signed_form_post(env.server.endpoint, env.key,
                                    {"Action": "GetConsoleOutput", "Version": "2016-11-15", "InstanceId": instance_id})
    assert status == 200
    wire = re.search(r"<output>([^<]*)</output>", body)
    assert wire and GUEST_BANNER in base64.b64decode(wire.group(1))

    # Instances survive a control-plane restart.
    env.server.restart()
    assert wait_state(env.ec2, instance_id, "running")["State"]["Name"] == "running"

    changes = env.ec2.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"]
    assert changes == [{"InstanceId": instance_id, "CurrentState": {"Code": 48, "Name": "terminated"},
                        "PreviousState": {"Code": 16, "Name": "running"}}]
    inst = wait_state(env.ec2, instance_id, "terminated")
    assert inst["State"]["Name"] == "terminated" and "PublicIpAddress" not in inst
    assert not listening(result["ports"][80])
    # Terminating again is harmless, as on EC2.
    again = env.ec2.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"]
    assert again[0]["PreviousState"]["Name"] == "terminated"


def test_default_template_basic_sizing_and_no_public_ip(launch_env: LaunchEnv, tiny_disk: Path) -> None:
    env = launch_env
    server_id = env.agent.register("private")["sourceServerID"]  # 2 cores, 2 GiB RAM
    result, size = size_and_launch(env, server_id, tiny_disk)
    assert size == ("c5.large", 2, 4096)  # BASIC overrides the template's t3.small
    assert result["publicIp"] is None
    inst = wait_state(env.ec2, result["instanceId"], "running")
    assert inst["InstanceType"] == "c5.large" and "PublicIpAddress" not in inst
    assert inst["PrivateIpAddress"] == "10.0.2.15"
    env.launcher.terminate(result["instanceId"])
    assert wait_state(env.ec2, result["instanceId"], "terminated")["State"]["Name"] == "terminated"
    with pytest.raises(ClientError) as exc:
        env.ec2.get_console_output(InstanceId="i-0000000000000000f")
    assert exc.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"


def test_ingress_ports_of_a_new_version_are_forwarded(launch_env: LaunchEnv, tiny_disk: Path) -> None:
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

    result, _ = size_and_launch(env, server_id, tiny_disk)
    assert set(result["ports"]) == {443, 8080}
    assert all(listening(port) for port in result["ports"].values())


def test_a_failed_launch_is_recorded_terminated_with_its_reason(launch_env: LaunchEnv, tmp_path: Path) -> None:
    from rehost.errors import TargetError

    env = launch_env
    server_id = env.agent.register("broken")["sourceServerID"]
    with pytest.raises(TargetError):
        size_and_launch(env, server_id, tmp_path / "no-such-disk.qcow2")
    (res,) = env.ec2.describe_instances(
        Filters=[{"Name": "tag:AWSApplicationMigrationServiceSourceServerID", "Values": [server_id]}])["Reservations"]
    (inst,) = res["Instances"]
    assert inst["State"]["Name"] == "terminated"
    assert inst["StateReason"]["Code"] == "Server.InternalError"
    assert "no-such-disk.qcow2" in inst["StateReason"]["Message"]
