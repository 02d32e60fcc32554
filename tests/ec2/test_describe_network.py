"""DescribeVpcs, DescribeSubnets and DescribeInstanceTypes through boto3's ``ec2`` client: what launch
automation (Cloud Migration Factory's launch-template validation) reads, answered from what rehost has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from helpers import cli_json, rehost_cli
from rehost import instancetypes

from .conftest import Ec2Env


def _code(call, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return str(info.value.response["Error"]["Code"])


def test_the_local_target_is_one_default_vpc_and_subnet(env: Ec2Env) -> None:
    (vpc,) = env.ec2.describe_vpcs()["Vpcs"]
    (subnet,) = env.ec2.describe_subnets()["Subnets"]
    assert vpc["IsDefault"] is True and vpc["State"] == "available" and vpc["CidrBlock"] == "10.0.2.0/24"
    assert subnet["VpcId"] == vpc["VpcId"] and subnet["CidrBlock"] == "10.0.2.0/24"
    assert subnet["AvailabilityZone"] == "us-east-1a" and subnet["DefaultForAz"] is True
    assert subnet["State"] == "available" and subnet["AvailableIpAddressCount"] == 251
    assert subnet["SubnetArn"] == f"arn:aws:ec2:us-east-1:{subnet['OwnerId']}:subnet/{subnet['SubnetId']}"

    # The IDs are the ones the rest of rehost names: a server's launch template and security group.
    sid = env.new_source_server("net-check")
    lt = env.mgn.get_launch_configuration(sourceServerID=sid)["ec2LaunchTemplateID"]
    (version,) = env.ec2.describe_launch_template_versions(LaunchTemplateId=lt)["LaunchTemplateVersions"]
    nic = version["LaunchTemplateData"]["NetworkInterfaces"][0]
    assert nic["SubnetId"] == subnet["SubnetId"]
    (group,) = env.ec2.describe_security_groups(GroupIds=nic["Groups"])["SecurityGroups"]
    assert group["VpcId"] == vpc["VpcId"]
    # Stable: a restart-free second read is the same; IDs are constants of rehost.
    assert env.ec2.describe_subnets(SubnetIds=[subnet["SubnetId"]])["Subnets"] == [subnet]
    assert env.ec2.describe_vpcs(VpcIds=[vpc["VpcId"]])["Vpcs"] == [vpc]


def test_subnet_and_vpc_filters_and_errors(env: Ec2Env) -> None:
    (subnet,) = env.ec2.describe_subnets()["Subnets"]
    vpc_id = subnet["VpcId"]
    by = env.ec2.describe_subnets
    assert by(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"] == [subnet]
    assert by(Filters=[{"Name": "availability-zone", "Values": ["us-east-1*"]},
                       {"Name": "default-for-az", "Values": ["true"]}])["Subnets"] == [subnet]
    assert by(Filters=[{"Name": "availability-zone", "Values": ["eu-west-1a"]}])["Subnets"] == []
    assert by(Filters=[{"Name": "tag:Name", "Values": ["rehost*"]}])["Subnets"] == [subnet]
    assert env.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["false"]}])["Vpcs"] == []
    assert _code(by, Filters=[{"Name": "no-such-filter", "Values": ["x"]}]) == "InvalidParameterValue"
    assert _code(by, SubnetIds=["subnet-0123456789abcdef0"]) == "InvalidSubnetID.NotFound"
    assert _code(env.ec2.describe_vpcs, VpcIds=["vpc-0123456789abcdef0"]) == "InvalidVpcID.NotFound"
    assert _code(env.ec2.describe_vpcs, Filters=[{"Name": "subnet-id", "Values": ["x"]}]) == "InvalidParameterValue"
    assert _code(by, MaxResults=5, NextToken="not-a-token") == "InvalidParameterValue"


def test_instance_types_come_from_the_catalog(env: Ec2Env) -> None:
    (c5,) = env.ec2.describe_instance_types(InstanceTypes=["c5.large"])["InstanceTypes"]
    assert c5["VCpuInfo"]["DefaultVCpus"] == 2 and c5["MemoryInfo"]["SizeInMiB"] == 4096
    assert c5["ProcessorInfo"]["SupportedArchitectures"] == ["x86_64"]
    assert c5["BurstablePerformanceSupported"] is False and c5["SupportedBootModes"] == ["legacy-bios"]
    (t3,) = env.ec2.describe_instance_types(InstanceTypes=["t3.micro"])["InstanceTypes"]
    assert t3["BurstablePerformanceSupported"] is True and t3["FreeTierEligible"] is True

    paginator = env.ec2.get_paginator("describe_instance_types")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 5}))
    assert len(pages) > 1 and all(len(p["InstanceTypes"]) <= 5 for p in pages)
    names = [t["InstanceType"] for p in pages for t in p["InstanceTypes"]]
    assert names == list(instancetypes.CATALOG)
    for t in (t for p in pages for t in p["InstanceTypes"]):
        entry = instancetypes.CATALOG[t["InstanceType"]]
        assert (t["VCpuInfo"]["DefaultVCpus"], t["MemoryInfo"]["SizeInMiB"]) == (entry.vcpus, entry.memory_mib)

    four = env.ec2.describe_instance_types(Filters=[{"Name": "vcpu-info.default-vcpus", "Values": ["4"]},
                                                    {"Name": "instance-type", "Values": ["m5.*", "r5.*"]}])
    assert sorted(t["InstanceType"] for t in four["InstanceTypes"]) == ["m5.xlarge", "r5.xlarge"]
    # Not in rehost's catalog, though AWS has it; not an instance type at all (the model's enum).
    assert _code(env.ec2.describe_instance_types, InstanceTypes=["c6i.large"]) == "InvalidInstanceType"
    assert _code(env.ec2.describe_instance_types, InstanceTypes=["x9.huge"]) == "InvalidParameterValue"
    assert _code(env.ec2.describe_instance_types,
                 Filters=[{"Name": "network-info.ena-support", "Values": ["required"]}]) == "InvalidParameterValue"


def test_read_only_key(env: Ec2Env, tmp_path: Path) -> None:
    """AWS's ReadOnly policy allows DescribeSubnets but not DescribeInstanceTypes: rehost's IAM agrees."""
    data_dir, server_env = env.server.data_dir, env.server.env
    cli_json("iam", "create-user", "netreader", data_dir=data_dir, env=server_env)
    rehost_cli("iam", "attach-user-policy", "netreader", "arn:aws:iam::aws:policy/AWSApplicationMigrationReadOnlyAccess",
               data_dir=data_dir, env=server_env)
    reader = env.server.client(env.server.access_key("netreader"), service="ec2")
    assert len(reader.describe_subnets()["Subnets"]) == 1
    assert _code(reader.describe_instance_types) == "UnauthorizedOperation"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:DescribeInstanceTypes", "Resource": "*"}]}))
    rehost_cli("iam", "put-user-policy", "netreader", "types", "--policy-document", f"file://{policy}",
               data_dir=data_dir, env=server_env)
    assert reader.describe_instance_types(InstanceTypes=["m5.large"])["InstanceTypes"][0]["InstanceType"] == "m5.large"
