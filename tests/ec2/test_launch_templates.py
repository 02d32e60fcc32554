"""Per-server EC2 launch templates through boto3's ``ec2`` client and the AWS CLI, against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from .conftest import Ec2Env


def _error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _template_id(env: Ec2Env, server_id: str) -> str:
    return str(env.mgn.get_launch_configuration(sourceServerID=server_id)["ec2LaunchTemplateID"])


def test_each_server_gets_its_own_template_with_a_default_version(env: Ec2Env) -> None:
    a, b = env.new_source_server("alpha"), env.new_source_server("beta")
    lt_a, lt_b = _template_id(env, a), _template_id(env, b)
    assert lt_a != lt_b and lt_a.startswith("lt-") and len(lt_a) == 20

    templates = env.ec2.describe_launch_templates(LaunchTemplateIds=[lt_a, lt_b])["LaunchTemplates"]
    assert [t["LaunchTemplateId"] for t in templates] == [lt_a, lt_b]
    assert all(t["DefaultVersionNumber"] == 1 and t["LatestVersionNumber"] == 1 for t in templates)

    (v1,) = env.ec2.describe_launch_template_versions(LaunchTemplateId=lt_a)["LaunchTemplateVersions"]
    data = v1["LaunchTemplateData"]
    assert v1["DefaultVersion"] is True and v1["VersionNumber"] == 1
    assert data["InstanceType"] == "t3.small"
    assert data["NetworkInterfaces"][0]["AssociatePublicIpAddress"] is False
    assert {"Key": "Name", "Value": "alpha"} in data["TagSpecifications"][0]["Tags"]
    # BASIC right-sizing's recommendation (2 cores, 2 GiB) is shown on the server, never a T type.
    (server,) = env.mgn.describe_source_servers(filters={"sourceServerIDs": [a]})["items"]
    assert server["sourceProperties"]["recommendedInstanceType"] == "c5.large"

    (group,) = env.ec2.describe_security_groups(GroupIds=data["NetworkInterfaces"][0]["Groups"])["SecurityGroups"]
    assert sorted(p["FromPort"] for p in group["IpPermissions"]) == [22, 80]


def test_step5_new_default_version_with_t3_micro_and_public_ip(env: Ec2Env) -> None:
    """Hands-on Step 5: a new version (t3.micro, public IP) made the default is what the template now says."""
    lt = _template_id(env, env.new_source_server("web-step5"))
    created = env.ec2.create_launch_template_version(
        LaunchTemplateId=lt, SourceVersion="$Default", VersionDescription="step 5",
        LaunchTemplateData={"InstanceType": "t3.micro",
                            "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": True}]},
    )["LaunchTemplateVersion"]
    assert created["VersionNumber"] == 2 and created["DefaultVersion"] is False
    # Members not sent are kept from the source version.
    assert created["LaunchTemplateData"]["BlockDeviceMappings"][0]["Ebs"]["VolumeType"] == "gp3"

    modified = env.ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion="2")["LaunchTemplate"]
    assert modified["DefaultVersionNumber"] == 2 and modified["LatestVersionNumber"] == 2

    (default,) = env.ec2.describe_launch_template_versions(LaunchTemplateId=lt, Versions=["$Default"])[
        "LaunchTemplateVersions"]
    assert default["VersionNumber"] == 2 and default["DefaultVersion"] is True
    assert default["LaunchTemplateData"]["InstanceType"] == "t3.micro"
    assert default["LaunchTemplateData"]["NetworkInterfaces"][0]["AssociatePublicIpAddress"] is True
    versions = env.ec2.describe_launch_template_versions(LaunchTemplateId=lt)["LaunchTemplateVersions"]
    assert [v["VersionNumber"] for v in versions] == [2, 1]


def test_version_without_source_holds_only_what_was_sent(env: Ec2Env) -> None:
    lt = _template_id(env, env.new_source_server("nosource"))
    v = env.ec2.create_launch_template_version(LaunchTemplateId=lt, LaunchTemplateData={"InstanceType": "m5.large"})
    assert v["LaunchTemplateVersion"]["LaunchTemplateData"] == {"InstanceType": "m5.large"}


def test_filters_and_pagination(env: Ec2Env) -> None:
    server = env.new_source_server("filtered")
    lt = _template_id(env, server)
    found = env.ec2.describe_launch_templates(
        Filters=[{"Name": "tag:AWSApplicationMigrationServiceSourceServerID", "Values": [server]}])["LaunchTemplates"]
    assert [t["LaunchTemplateId"] for t in found] == [lt]
    by_name = env.ec2.describe_launch_templates(LaunchTemplateNames=[f"rehost-{server}"])["LaunchTemplates"]
    assert [t["LaunchTemplateId"] for t in by_name] == [lt]

    pages = env.ec2.get_paginator("describe_launch_templates").paginate(PaginationConfig={"PageSize": 1})
    seen = [t["LaunchTemplateId"] for page in pages for t in page["LaunchTemplates"]]
    everything = [t["LaunchTemplateId"] for t in env.ec2.describe_launch_templates()["LaunchTemplates"]]
    assert seen == everything and lt in seen and len(seen) >= 2


@pytest.mark.parametrize(("call", "code"), [
    (lambda c: c.describe_launch_templates(LaunchTemplateIds=["lt-nothex"]), "InvalidLaunchTemplateId.Malformed"),
    (lambda c: c.describe_launch_templates(LaunchTemplateIds=["lt-0123456789abcdef0"]), "InvalidLaunchTemplateId.NotFound"),
    (lambda c: c.modify_launch_template(LaunchTemplateId="lt-0123456789abcdef0", DefaultVersion="1"),
     "InvalidLaunchTemplateId.NotFound"),
    (lambda c: c.describe_launch_templates(Filters=[{"Name": "no-such-filter", "Values": ["x"]}]), "InvalidParameterValue"),
    (lambda c: c.describe_instances(InstanceIds=["i-0123456789abcdef0"]), "InvalidInstanceID.NotFound"),
    (lambda c: c.terminate_instances(InstanceIds=["i-0123456789abcdef0"]), "InvalidInstanceID.NotFound"),
    (lambda c: c.get_console_output(InstanceId="vm-1"), "InvalidInstanceID.Malformed"),
    (lambda c: c.describe_instances(InstanceIds=["i-XYZ"]), "InvalidInstanceID.Malformed"),
    (lambda c: c.run_instances(MinCount=1, MaxCount=1, ImageId="ami-12345678"), "InvalidAction"),
    (lambda c: c.describe_instances(DryRun=True), "DryRunOperation"),
])
def test_bad_inputs_get_ec2_error_codes(env: Ec2Env, call, code: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as exc:
        call(env.ec2)
    assert _error_code(exc) == code


def test_bad_values_in_a_template_version(env: Ec2Env) -> None:
    lt = _template_id(env, env.new_source_server("badvalues"))
    for data in ({"InstanceType": "x9.huge"}, {"UserData": "not base64!"},
                 {"BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeType": "floppy"}}]}):
        with pytest.raises(ClientError) as exc:
            env.ec2.create_launch_template_version(LaunchTemplateId=lt, LaunchTemplateData=data)
        assert _error_code(exc) == "InvalidParameterValue", data
    with pytest.raises(ClientError) as exc:
        env.ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion="7")
    assert _error_code(exc) == "InvalidLaunchTemplateId.VersionNotFound"
    with pytest.raises(ClientError) as exc:
        env.ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion="latest")
    assert _error_code(exc) == "InvalidParameterValue"
    # Nothing was created by the failed calls.
    assert env.ec2.describe_launch_templates(LaunchTemplateIds=[lt])["LaunchTemplates"][0]["LatestVersionNumber"] == 1


def test_missing_parameters_sent_raw(env: Ec2Env) -> None:
    """botocore checks required members itself, so these are sent as signed raw form requests."""
    from .rawclient import signed_form_post

    status, body = signed_form_post(env.server.endpoint, env.key, {"Action": "TerminateInstances", "Version": "2016-11-15"})
    assert status == 400 and "<Code>MissingParameter</Code>" in body and "InstanceId" in body
    status, body = signed_form_post(env.server.endpoint, env.key, {"Action": "GetConsoleOutput"})
    assert status == 400 and "<Code>MissingParameter</Code>" in body and "Version" in body
    status, body = signed_form_post(env.server.endpoint, env.key, {"Version": "2016-11-15"})
    assert status == 400 and "<Code>MissingAction</Code>" in body
    status, body = signed_form_post(env.server.endpoint, env.key,
                                    {"Action": "DescribeInstances", "Version": "2016-11-15", "MaxResults": "many"})
    assert status == 400 and "<Code>InvalidParameterValue</Code>" in body
    assert "<RequestID>" in body


def test_bad_signature_is_auth_failure(env: Ec2Env) -> None:
    wrong = env.server.client((env.key[0], "x" * 40), service="ec2")
    with pytest.raises(ClientError) as exc:
        wrong.describe_launch_templates()
    assert _error_code(exc) == "AuthFailure"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401


def test_iam_denial_is_unauthorized_operation(env: Ec2Env) -> None:
    from helpers import rehost_cli

    lt = _template_id(env, env.new_source_server("iamcheck"))
    rehost_cli("iam", "create-user", "viewer", data_dir=env.server.data_dir)
    rehost_cli("iam", "attach-user-policy", "viewer", "AWSApplicationMigrationReadOnlyAccess", data_dir=env.server.data_dir)
    viewer = env.server.client(env.server.access_key("viewer"), service="ec2")
    # ReadOnly allows DescribeLaunchTemplateVersions but not creating one.
    assert viewer.describe_launch_template_versions(LaunchTemplateId=lt)["LaunchTemplateVersions"]
    with pytest.raises(ClientError) as exc:
        viewer.create_launch_template_version(LaunchTemplateId=lt, LaunchTemplateData={"InstanceType": "t3.micro"})
    assert _error_code(exc) == "UnauthorizedOperation"
    assert f"launch-template/{lt}" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        viewer.describe_launch_templates()  # not in the ReadOnly policy
    assert _error_code(exc) == "UnauthorizedOperation"


def test_aws_cli_works_against_the_endpoint(env: Ec2Env, tmp_path: Path) -> None:
    lt = _template_id(env, env.new_source_server("cli"))
    aws = Path(sys.executable).with_name("aws")
    cli_env = {**os.environ, "AWS_ACCESS_KEY_ID": env.key[0], "AWS_SECRET_ACCESS_KEY": env.key[1],
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    out = subprocess.run([str(aws), "ec2", "describe-launch-template-versions", "--endpoint-url", env.server.endpoint,
                          "--launch-template-id", lt, "--versions", "$Default", "--output", "json"],
                         capture_output=True, text=True, env=cli_env, timeout=120)
    assert out.returncode == 0, out.stderr
    (version,) = json.loads(out.stdout)["LaunchTemplateVersions"]
    assert version["LaunchTemplateId"] == lt and version["LaunchTemplateData"]["InstanceType"] == "t3.small"
