"""A migrated server launched on a libvirt target by a real `rehost server` (StartTest through boto3), its page
served at the address libvirt's DHCP gave it, fetched from inside the test's network namespace; targets
configured with `rehost target`, seen through DescribeAvailabilityZones and DescribeSubnets; a target that
cannot be reached fails the launch job with the reason."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from api.agentapi import AgentClient
from api.waiting import wait_job
from helpers import RunningServer, free_port, rehost_cli
from images.fixtures import MARKER, minimal_image  # noqa: F401  (session fixture)
from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource

from .libvirt_host import NETWORK, POOL, LibvirtHost

GONE = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


def _page(host: LibvirtHost, ip: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while True:
        got = host.in_ns("curl", "-s", "-m", "5", f"http://{ip}/", timeout=30)
        if MARKER in got.stdout or time.monotonic() > deadline:
            return got.stdout
        time.sleep(2)


@pytest.mark.root
@pytest.mark.slow
def test_a_migrated_server_runs_on_a_libvirt_target(libvirt_host: LibvirtHost, minimal_image: Path,  # noqa: F811
                                                    tmp_path: Path) -> None:
    host, data = libvirt_host, tmp_path / "data"
    server = RunningServer(data, free_port(), extra_args=("--job-snapshot-timeout", "1"),
                           env={"REHOST_LAUNCH_BOOT_TIMEOUT": "400"}).start()
    try:
        key = server.access_key()
        mgn, ec2 = server.client(key), server.client(key, service="ec2")
        agent = AgentClient(server.endpoint, *key, data_dir=data)
        mgn.initialize_service()

        # Targets: a bad URL is one line and exit code 2; the libvirt host becomes the default.
        bad = rehost_cli("target", "add", "web", "https://example.com/", data_dir=data, check=False)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "target URL" in bad.stderr
        rehost_cli("target", "add", "lab", host.url, "--network", NETWORK, "--pool", POOL, "--default", data_dir=data)
        rehost_cli("target", "add", "gone", GONE, data_dir=data)
        listed = json.loads(rehost_cli("target", "list", "--output", "json", data_dir=data).stdout)
        assert [(t["name"], t["availabilityZone"], t["default"]) for t in listed] == [
            ("local", "us-east-1a", False), ("lab", "us-east-1b", True), ("gone", "us-east-1c", False)]

        zones = {z["ZoneName"]: z for z in ec2.describe_availability_zones()["AvailabilityZones"]}
        assert {name: z["State"] for name, z in zones.items()} == {
            "us-east-1a": "available", "us-east-1b": "available", "us-east-1c": "unavailable"}
        assert any("No such file" in m["Message"] for m in zones["us-east-1c"]["Messages"])
        (lab,) = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["us-east-1b"]}])["Subnets"]
        assert lab["CidrBlock"] == "192.168.122.0/24" and lab["DefaultForAz"] and not lab["MapPublicIpOnLaunch"]

        # A server registered now gets a template on the default target's network.
        sid = agent.register("legacy-web-01")["sourceServerID"]
        with SnapshotStore.open(data) as store:
            snap = store.create(sid, {"/dev/sda": VolumeSource(minimal_image, minimal_image.stat().st_size, None)})
        agent.report_synced(sid, snapshot_id=snap.snapshot_id)
        mgn.update_launch_configuration(sourceServerID=sid, targetInstanceTypeRightSizingMethod="NONE")
        lt = mgn.get_launch_configuration(sourceServerID=sid)["ec2LaunchTemplateID"]
        (v1,) = ec2.describe_launch_template_versions(LaunchTemplateId=lt)["LaunchTemplateVersions"]
        assert v1["LaunchTemplateData"]["NetworkInterfaces"][0]["SubnetId"] == lab["SubnetId"]

        # An unknown subnet or zone in a template is EC2's error, and nothing is stored.
        for change, code in (({"NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": "subnet-0123456789abcdef0"}]},
                              "InvalidSubnetID.NotFound"),
                             ({"Placement": {"AvailabilityZone": "us-east-1z"}}, "InvalidParameterValue")):
            with pytest.raises(ClientError) as err:
                ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="1", LaunchTemplateData=change)
            assert err.value.response["Error"]["Code"] == code

        # The unreachable target: its launch job fails with the reason.
        ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="1", LaunchTemplateData={
            "InstanceType": "t3.micro", "Placement": {"AvailabilityZone": "us-east-1c"},
            "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": False}]})
        ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion="2")
        job = wait_job(mgn, mgn.start_test(sourceServerIDs=[sid])["job"]["jobID"], timeout=600)
        assert job["participatingServers"][0]["launchStatus"] == "FAILED"
        log = json.dumps(mgn.describe_job_log_items(jobID=job["jobID"])["items"])
        assert "target gone" in log and "cannot connect to" in log and "No such file or directory" in log, log

        # The libvirt target (the template's subnet): launched, booted, its page served at its lease.
        ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="1",
                                           LaunchTemplateData={"InstanceType": "t3.micro"})
        ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion="3")
        job = wait_job(mgn, mgn.start_test(sourceServerIDs=[sid])["job"]["jobID"], timeout=900)
        (p,) = job["participatingServers"]
        assert p["launchStatus"] == "LAUNCHED", mgn.describe_job_log_items(jobID=job["jobID"])["items"]
        instance_id = p["launchedEc2InstanceID"]
        deadline = time.monotonic() + 120  # the guest asks for its lease while it boots
        while True:
            (res,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
            inst = res["Instances"][0]
            if inst.get("PrivateIpAddress") or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert inst.get("PrivateIpAddress"), (host.virsh("net-dhcp-leases", NETWORK),
                                              ec2.get_console_output(InstanceId=instance_id).get("Output", ""))
        assert inst["Placement"]["AvailabilityZone"] == "us-east-1b" and inst["SubnetId"] == lab["SubnetId"]
        assert inst["State"]["Name"] == "running" and "PublicIpAddress" not in inst  # NAT: no public address
        ip = inst["PrivateIpAddress"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("192.168.122.0/24")
        assert MARKER in _page(host, ip)
        assert instance_id in host.virsh("list", "--name").split()
        console = ec2.get_console_output(InstanceId=instance_id).get("Output", "")
        assert "login:" in console or "Multi-User System" in console

        # Terminate: nothing of it is left on the libvirt host.
        ec2.terminate_instances(InstanceIds=[instance_id])
        (res,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        assert res["Instances"][0]["State"]["Name"] == "terminated"
        assert instance_id not in host.virsh("list", "--all", "--name").split()
        assert [f.name for f in host.pool_dir.iterdir() if f.name.startswith(instance_id)] == []
    finally:
        server.stop()
