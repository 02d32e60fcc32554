"""MGN's public operations against a real server: templates, per-server configuration, source servers,
replication control, jobs, tags, and the operations rehost does not implement."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from helpers import cli_json, rehost_cli

from .conftest import Api, ServerFactory, make_api
from .waiting import wait_job

REPLICATION_TEMPLATE: dict[str, Any] = {
    "stagingAreaSubnetId": "subnet-0123456789abcdef0",
    "associateDefaultSecurityGroup": True,
    "replicationServersSecurityGroupsIDs": [],
    "replicationServerInstanceType": "t3.small",
    "useDedicatedReplicationServer": False,
    "defaultLargeStagingDiskType": "GP3",
    "ebsEncryption": "DEFAULT",
    "bandwidthThrottling": 100,
    "dataPlaneRouting": "PRIVATE_IP",
    "createPublicIP": False,
    "stagingAreaTags": {"purpose": "staging"},
}


def _code(err: ClientError) -> str:
    return str(err.response["Error"]["Code"])


def _unvalidated(api: Api) -> Any:
    """A client that skips botocore's own parameter checks, so the server's validation is what answers."""
    import boto3

    return boto3.client("mgn", endpoint_url=api.server.endpoint, region_name=api.server.region,
                        aws_access_key_id=api.key[0], aws_secret_access_key=api.key[1],
                        config=Config(parameter_validation=False, retries={"max_attempts": 1}))


# -- service ----------------------------------------------------------------------------------------------

def test_initialize_service_creates_default_templates_once(api: Api) -> None:
    before = api.mgn.describe_replication_configuration_templates()["items"]
    api.mgn.initialize_service()  # idempotent
    after = api.mgn.describe_replication_configuration_templates()["items"]
    assert [t["replicationConfigurationTemplateID"] for t in after][:1] == \
        [t["replicationConfigurationTemplateID"] for t in before][:1]
    default = after[0]
    assert re.fullmatch(r"rct-[0-9a-zA-Z]{17}", default["replicationConfigurationTemplateID"])
    assert default["replicationServerInstanceType"] and default["ebsEncryption"] == "DEFAULT"
    lct = api.mgn.describe_launch_configuration_templates()["items"][0]
    assert re.fullmatch(r"lct-[0-9a-zA-Z]{17}", lct["launchConfigurationTemplateID"])
    assert re.fullmatch(r"lt-[0-9a-z]{17}", lct["ec2LaunchTemplateID"])


# -- templates --------------------------------------------------------------------------------------------

def test_replication_configuration_template_crud(api: Api) -> None:
    created = api.mgn.create_replication_configuration_template(**REPLICATION_TEMPLATE, tags={"k": "v"})
    tid = created["replicationConfigurationTemplateID"]
    assert created["arn"].endswith(f":replication-configuration-template/{tid}")
    assert created["bandwidthThrottling"] == 100 and created["tags"] == {"k": "v"}
    got = api.mgn.describe_replication_configuration_templates(replicationConfigurationTemplateIDs=[tid])["items"]
    assert [t["replicationConfigurationTemplateID"] for t in got] == [tid]
    assert got[0]["stagingAreaTags"] == {"purpose": "staging"}
    updated = api.mgn.update_replication_configuration_template(
        replicationConfigurationTemplateID=tid, bandwidthThrottling=0, defaultLargeStagingDiskType="ST1")
    assert updated["bandwidthThrottling"] == 0 and updated["defaultLargeStagingDiskType"] == "ST1"
    assert updated["stagingAreaSubnetId"] == REPLICATION_TEMPLATE["stagingAreaSubnetId"]  # untouched
    api.mgn.delete_replication_configuration_template(replicationConfigurationTemplateID=tid)
    assert api.mgn.describe_replication_configuration_templates(replicationConfigurationTemplateIDs=[tid])["items"] == []
    with pytest.raises(api.mgn.exceptions.ResourceNotFoundException):
        api.mgn.delete_replication_configuration_template(replicationConfigurationTemplateID=tid)
    with pytest.raises(api.mgn.exceptions.ResourceNotFoundException):
        api.mgn.update_replication_configuration_template(replicationConfigurationTemplateID=tid, bandwidthThrottling=1)


def test_replication_template_validation(api: Api) -> None:
    raw = _unvalidated(api)
    bad = dict(REPLICATION_TEMPLATE, bandwidthThrottling=10001)
    with pytest.raises(raw.exceptions.ValidationException) as info:
        raw.create_replication_configuration_template(**bad)
    assert info.value.response["reason"] == "fieldValidationFailed"
    assert info.value.response["fieldList"][0]["name"] == "bandwidthThrottling"
    missing = {k: v for k, v in REPLICATION_TEMPLATE.items() if k != "ebsEncryption"}
    with pytest.raises(raw.exceptions.ValidationException) as info:
        raw.create_replication_configuration_template(**missing)
    assert info.value.response["fieldList"][0]["name"] == "ebsEncryption"
    with pytest.raises(raw.exceptions.ValidationException) as info:
        raw.create_replication_configuration_template(**dict(REPLICATION_TEMPLATE, dataPlaneRouting="CARRIER_PIGEON"))
    assert info.value.response["fieldList"][0]["name"] == "dataPlaneRouting"


def test_launch_configuration_template_crud(api: Api) -> None:
    created = api.mgn.create_launch_configuration_template(
        launchDisposition="STOPPED", bootMode="UEFI", copyTags=True, tags={"env": "prod"},
        smallVolumeMaxSize=100, smallVolumeConf={"volumeType": "gp3", "throughput": 125, "iops": 3000})
    tid = created["launchConfigurationTemplateID"]
    assert created["arn"].endswith(f":launch-configuration-template/{tid}")
    assert created["launchDisposition"] == "STOPPED" and created["bootMode"] == "UEFI"
    assert created["smallVolumeConf"]["volumeType"] == "gp3" and created["tags"] == {"env": "prod"}
    updated = api.mgn.update_launch_configuration_template(launchConfigurationTemplateID=tid, launchDisposition="STARTED")
    assert updated["launchDisposition"] == "STARTED" and updated["bootMode"] == "UEFI"
    listed = api.mgn.describe_launch_configuration_templates(launchConfigurationTemplateIDs=[tid])["items"]
    assert listed[0]["launchDisposition"] == "STARTED"
    api.mgn.delete_launch_configuration_template(launchConfigurationTemplateID=tid)
    with pytest.raises(api.mgn.exceptions.ResourceNotFoundException):
        api.mgn.delete_launch_configuration_template(launchConfigurationTemplateID=tid)


# -- per-server configuration -----------------------------------------------------------------------------

def test_replication_configuration(api: Api) -> None:
    sid = api.agent.register()["sourceServerID"]
    config = api.mgn.get_replication_configuration(sourceServerID=sid)
    assert config["sourceServerID"] == sid
    assert config["replicatedDisks"] == [{"deviceName": "/dev/sda", "isBootDisk": True, "stagingDiskType": "AUTO"}]
    updated = api.mgn.update_replication_configuration(
        sourceServerID=sid, name="db-primary", bandwidthThrottling=50,
        replicatedDisks=[{"deviceName": "/dev/sda", "isBootDisk": True, "stagingDiskType": "GP3"}])
    assert updated["name"] == "db-primary" and updated["bandwidthThrottling"] == 50
    assert updated["replicatedDisks"][0]["stagingDiskType"] == "GP3"
    stored = api.mgn.get_replication_configuration(sourceServerID=sid)
    assert stored["name"] == "db-primary" and stored["replicatedDisks"] == updated["replicatedDisks"]
    # The agent learns the new throttle.
    runtime = api.agent.call("GetAgentRuntimeConfigurationForMgn", {"sourceServerID": sid})
    assert runtime["bandwidthThrottling"] == 50
    with pytest.raises(api.mgn.exceptions.ValidationException):
        api.mgn.update_replication_configuration(
            sourceServerID=sid, replicatedDisks=[{"deviceName": "/dev/nope", "isBootDisk": False}])


def test_launch_configuration(api: Api) -> None:
    sid = api.agent.register("app-7")["sourceServerID"]
    config = api.mgn.get_launch_configuration(sourceServerID=sid)
    assert config["sourceServerID"] == sid and config["name"] == "app-7"
    assert re.fullmatch(r"lt-[0-9a-z]{17}", config["ec2LaunchTemplateID"])
    updated = api.mgn.update_launch_configuration(
        sourceServerID=sid, name="app-7-target", launchDisposition="STOPPED",
        targetInstanceTypeRightSizingMethod="NONE", copyPrivateIp=True, bootMode="LEGACY_BIOS",
        licensing={"osByol": False})
    assert updated["name"] == "app-7-target" and updated["launchDisposition"] == "STOPPED"
    assert updated["targetInstanceTypeRightSizingMethod"] == "NONE" and updated["copyPrivateIp"] is True
    assert updated["ec2LaunchTemplateID"] == config["ec2LaunchTemplateID"]
    again = api.mgn.get_launch_configuration(sourceServerID=sid)
    assert again["bootMode"] == "LEGACY_BIOS" and again["licensing"] == {"osByol": False}
    raw = _unvalidated(api)
    with pytest.raises(raw.exceptions.ValidationException) as info:
        raw.update_launch_configuration(sourceServerID=sid, bootMode="FLOPPY")
    assert info.value.response["fieldList"][0]["name"] == "bootMode"


def test_launch_configuration_defaults_replace_sub_objects(api: Api) -> None:
    sid = api.agent.register()["sourceServerID"]
    assert api.mgn.get_launch_configuration_defaults(sourceServerID=sid)["smallVolumeMaxSize"] == 0
    small = {"volumeType": "gp3", "iops": 3000, "throughput": 125, "deleteOnTermination": "ENABLED"}
    out = api.mgn.update_launch_configuration_defaults(sourceServerID=sid, smallVolumeMaxSize=50,
                                                       smallVolumeConfiguration=small)
    assert out["smallVolumeMaxSize"] == 50 and out["smallVolumeConfiguration"] == small
    # A sub-object sent again replaces the stored one: fields left out are cleared.
    out = api.mgn.update_launch_configuration_defaults(sourceServerID=sid, smallVolumeConfiguration={"volumeType": "gp2"})
    assert out["smallVolumeConfiguration"] == {"volumeType": "gp2"} and out["smallVolumeMaxSize"] == 50
    got = api.mgn.get_launch_configuration_defaults(sourceServerID=sid)
    assert got["smallVolumeConfiguration"] == {"volumeType": "gp2"}


# -- source servers ---------------------------------------------------------------------------------------

def test_update_source_server(api: Api) -> None:
    sid = api.agent.register()["sourceServerID"]
    out = api.mgn.update_source_server(sourceServerID=sid, userProvidedID="cmdb-42", fqdnForActionFramework="a.example")
    assert out["userProvidedID"] == "cmdb-42" and out["fqdnForActionFramework"] == "a.example"
    with pytest.raises(api.mgn.exceptions.ConflictException):
        api.mgn.update_source_server(sourceServerID=sid, userProvidedID="cmdb-43")
    with pytest.raises(api.mgn.exceptions.ResourceNotFoundException):
        api.mgn.update_source_server(sourceServerID="s-00000000000000000", userProvidedID="x")


def test_describe_source_servers_filters(api: Api) -> None:
    ready = api.ready_server()
    fresh = api.agent.register()["sourceServerID"]
    stopped = api.agent.register(no_replication=True)["sourceServerID"]
    mine = {ready, fresh, stopped}

    def ids(**filters: Any) -> set[str]:
        return {s["sourceServerID"] for s in api.mgn.describe_source_servers(filters=filters)["items"]} & mine

    assert ids() == mine
    assert ids(sourceServerIDs=[ready, fresh]) == {ready, fresh}
    assert ids(lifeCycleStates=["READY_FOR_TEST"]) == {ready}
    assert ids(lifeCycleStates=["NOT_READY"]) == {fresh, stopped}
    assert ids(lifeCycleStates=["NOT_READY", "READY_FOR_TEST"]) == mine
    assert ids(replicationTypes=["AGENT_BASED"]) == mine
    assert ids(replicationTypes=["SNAPSHOT_SHIPPING"]) == set()
    assert ids(isArchived=False) == mine
    assert ids(isArchived=True) == set()
    assert ids(applicationIDs=["app-0123456789abcdef0"]) == set()
    assert ids(sourceServerIDs=[ready], lifeCycleStates=["NOT_READY"]) == set()
    server = api.mgn.describe_source_servers(filters={"sourceServerIDs": [stopped]})["items"][0]
    assert server["dataReplicationInfo"]["dataReplicationState"] == "STOPPED"
    raw = _unvalidated(api)
    with pytest.raises(raw.exceptions.ValidationException):
        raw.describe_source_servers(filters={"lifeCycleStates": ["ON_FIRE"]})
    with pytest.raises(raw.exceptions.ValidationException):
        raw.describe_source_servers(maxResults=1001)


# -- replication control ----------------------------------------------------------------------------------

def _drs(server: dict[str, Any]) -> str:
    return str(server["dataReplicationInfo"]["dataReplicationState"])


def _commands(api: Api, sid: str) -> list[str]:
    return [c["type"] for c in api.agent.call("GetAgentCommandForMgn", {"sourceServerID": sid})["commands"]]


def test_pause_resume_stop_start(api: Api) -> None:
    sid = api.ready_server()
    _commands(api, sid)  # drain
    assert _drs(api.mgn.pause_replication(sourceServerID=sid)) == "PAUSED"
    assert _commands(api, sid) == ["PAUSE"]
    with pytest.raises(api.mgn.exceptions.ConflictException):
        api.mgn.pause_replication(sourceServerID=sid)
    assert api.agent.call("GetAgentReplicationInfoForMgn", {"sourceServerID": sid})["replicationState"] == "PAUSED"
    assert _drs(api.mgn.resume_replication(sourceServerID=sid)) == "CONTINUOUS"
    assert _commands(api, sid) == ["RESUME"]
    with pytest.raises(api.mgn.exceptions.ConflictException):
        api.mgn.resume_replication(sourceServerID=sid)
    assert _drs(api.mgn.stop_replication(sourceServerID=sid)) == "STOPPED"
    assert _commands(api, sid) == ["STOP"]
    assert api.agent.call("GetAgentReplicationInfoForMgn", {"sourceServerID": sid})["replicationState"] == "STOPPED"
    with pytest.raises(api.mgn.exceptions.ConflictException):
        api.mgn.stop_replication(sourceServerID=sid)
    assert _drs(api.mgn.start_replication(sourceServerID=sid)) == "INITIATING"
    assert _commands(api, sid) == ["START"]
    with pytest.raises(api.mgn.exceptions.ConflictException):
        api.mgn.start_replication(sourceServerID=sid)


def test_retry_data_replication_only_when_stalled(api: Api) -> None:
    sid = api.ready_server()
    # CONTINUOUS: nothing to retry. The model declares no ConflictException here, so it is a validation error.
    with pytest.raises(api.mgn.exceptions.ValidationException) as info:
        api.mgn.retry_data_replication(sourceServerID=sid)
    assert info.value.response["reason"] == "other"
    with pytest.raises(api.mgn.exceptions.ResourceNotFoundException):
        api.mgn.retry_data_replication(sourceServerID="s-0000000000000000b")


def test_agent_started_after_no_replication(api: Api) -> None:
    sid = api.agent.register(no_replication=True)["sourceServerID"]
    assert api.agent.call("GetAgentReplicationInfoForMgn", {"sourceServerID": sid})["replicationState"] == "STOPPED"
    assert _drs(api.mgn.start_replication(sourceServerID=sid)) == "INITIATING"


# -- jobs -------------------------------------------------------------------------------------------------

def test_jobs_describe_filter_log_and_delete(api: Api) -> None:
    first = api.run_launch("start_test", api.ready_server())
    second_sid = api.ready_server()
    second = api.mgn.start_test(sourceServerIDs=[second_sid])["job"]
    # A running job cannot be deleted.
    with pytest.raises(api.mgn.exceptions.ConflictException):
        api.mgn.delete_job(jobID=second["jobID"])
    api.fail_snapshots(second_sid)
    wait_job(api.mgn, second["jobID"])

    jobs = api.mgn.describe_jobs()["items"]
    order = [j["jobID"] for j in jobs]
    assert order.index(second["jobID"]) < order.index(first["jobID"])  # newest first
    only = api.mgn.describe_jobs(filters={"jobIDs": [first["jobID"]]})["items"]
    assert [j["jobID"] for j in only] == [first["jobID"]]
    now = datetime.now(UTC)
    recent = api.mgn.describe_jobs(filters={"fromDate": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert {first["jobID"], second["jobID"]} <= {j["jobID"] for j in recent["items"]}
    future = api.mgn.describe_jobs(filters={"fromDate": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert future["items"] == []
    past = api.mgn.describe_jobs(filters={"toDate": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert past["items"] == []

    logs = api.mgn.describe_job_log_items(jobID=first["jobID"], maxResults=1)
    assert len(logs["items"]) == 1 and logs["items"][0]["event"] == "JOB_START" and logs["nextToken"]
    rest = api.mgn.describe_job_log_items(jobID=first["jobID"], nextToken=logs["nextToken"])["items"]
    assert [e["event"] for e in rest] == ["SNAPSHOT_START", "SNAPSHOT_FAIL", "USING_PREVIOUS_SNAPSHOT",
                                          "CONVERSION_START", "CONVERSION_FAIL", "JOB_END"]

    api.mgn.delete_job(jobID=first["jobID"])
    assert api.mgn.describe_jobs(filters={"jobIDs": [first["jobID"]]})["items"] == []
    with pytest.raises(api.mgn.exceptions.ResourceNotFoundException):
        api.mgn.describe_job_log_items(jobID=first["jobID"])
    with pytest.raises(api.mgn.exceptions.ResourceNotFoundException):
        api.mgn.delete_job(jobID=first["jobID"])


def test_terminate_target_instances_refused_without_instance(api: Api) -> None:
    sid = api.ready_server()
    with pytest.raises(api.mgn.exceptions.ConflictException):
        api.mgn.terminate_target_instances(sourceServerIDs=[sid])


# -- tags -------------------------------------------------------------------------------------------------

def test_tag_untag_list(api: Api) -> None:
    sid = api.agent.register(tags={"a": "1"})["sourceServerID"]
    arn = api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]["arn"]
    api.mgn.tag_resource(resourceArn=arn, tags={"b": "2", "a": "one"})
    assert api.mgn.list_tags_for_resource(resourceArn=arn)["tags"] == {"a": "one", "b": "2"}
    api.mgn.untag_resource(resourceArn=arn, tagKeys=["a", "missing"])
    assert api.mgn.list_tags_for_resource(resourceArn=arn)["tags"] == {"b": "2"}
    assert api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]["tags"] == {"b": "2"}

    template = api.mgn.describe_replication_configuration_templates()["items"][0]
    api.mgn.tag_resource(resourceArn=template["arn"], tags={"owner": "ops"})
    assert api.mgn.list_tags_for_resource(resourceArn=template["arn"])["tags"]["owner"] == "ops"
    job = api.run_launch("start_test", api.ready_server(), tags={"x": "y"})
    assert api.mgn.list_tags_for_resource(resourceArn=job["arn"])["tags"] == {"x": "y"}

    with pytest.raises(api.mgn.exceptions.ValidationException):
        api.mgn.tag_resource(resourceArn=arn, tags={f"k{i}": "v" for i in range(50)})  # 51 with "b"
    account = arn.split(":")[4]
    for missing in (f"arn:aws:mgn:us-east-1:{account}:source-server/s-00000000000000000",
                    f"arn:aws:mgn:us-east-1:{account}:job/mgnjob-00000000000000000",
                    "arn:aws:mgn:eu-west-1:000000000000:source-server/s-00000000000000000"):
        with pytest.raises(api.mgn.exceptions.ResourceNotFoundException):
            api.mgn.list_tags_for_resource(resourceArn=missing)
        with pytest.raises(api.mgn.exceptions.ResourceNotFoundException):
            api.mgn.tag_resource(resourceArn=missing, tags={"a": "b"})


# -- what rehost does not implement -----------------------------------------------------------------------

IMPLEMENTED = {
    "InitializeService", "CreateReplicationConfigurationTemplate", "DescribeReplicationConfigurationTemplates",
    "UpdateReplicationConfigurationTemplate", "DeleteReplicationConfigurationTemplate",
    "CreateLaunchConfigurationTemplate", "DescribeLaunchConfigurationTemplates", "UpdateLaunchConfigurationTemplate",
    "DeleteLaunchConfigurationTemplate", "DescribeSourceServers", "GetReplicationConfiguration",
    "UpdateReplicationConfiguration", "GetLaunchConfiguration", "UpdateLaunchConfiguration",
    "GetLaunchConfigurationDefaults", "UpdateLaunchConfigurationDefaults", "UpdateSourceServer", "DeleteSourceServer",
    "MarkAsArchived", "ChangeServerLifeCycleState", "StartTest", "StartCutover", "FinalizeCutover",
    "TerminateTargetInstances", "DisconnectFromService", "RetryDataReplication", "StartReplication",
    "StopReplication", "PauseReplication", "ResumeReplication", "DescribeJobs", "DescribeJobLogItems", "DeleteJob",
    "TagResource", "UntagResource", "ListTagsForResource",
    "CreateApplication", "UpdateApplication", "DeleteApplication", "ListApplications", "AssociateSourceServers",
    "DisassociateSourceServers", "ArchiveApplication", "UnarchiveApplication", "CreateWave", "UpdateWave",
    "DeleteWave", "ListWaves", "AssociateApplications", "DisassociateApplications", "ArchiveWave", "UnarchiveWave",
    "StartImport", "ListImports", "ListImportErrors", "StartExport", "ListExports", "ListExportErrors",
}


#: What rehost leaves out on purpose: network migration, connectors, vCenter clients, remote source actions.
OUT_OF_SCOPE = re.compile(r"NetworkMigration|ImportFileEnrichment|Connector|VcenterClient|RemoteSourceAction")


def test_every_other_operation_is_a_clear_not_implemented(api: Api) -> None:
    raw = _unvalidated(api)
    model = botocore.session.get_session().get_service_model("mgn")
    missing = sorted(op for op in set(model.operation_names) - IMPLEMENTED if not OUT_OF_SCOPE.search(op))
    assert len(missing) >= 8  # post-launch actions, managed accounts, replication type
    for name in missing:
        method = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
        with pytest.raises(ClientError) as info:
            getattr(raw, method)()
        response = info.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400, (name, response)
        assert _code(info.value) == "ValidationException", (name, response)
        assert response["reason"] == "unknownOperation", (name, response)
        assert name in response["Error"]["Message"] and "not implemented" in response["Error"]["Message"]


def test_operations_out_of_scope_answer_uninitialized_then_why(servers: ServerFactory) -> None:
    """Inventory tools list connectors and vCenter clients on every account: rehost answers as MGN does on an
    uninitialized account, then says why it has no such thing, whatever the input (never "not implemented")."""
    api = make_api(servers.new(), initialize=False)
    raw = _unvalidated(api)
    model = botocore.session.get_session().get_service_model("mgn")
    names = sorted(op for op in model.operation_names if OUT_OF_SCOPE.search(op))
    assert len(names) >= 35  # 26 network migration, 4 connector, 2 vCenter client, 8 remote source action ops
    for name in names:
        method = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
        with pytest.raises(ClientError) as info:
            getattr(raw, method)()
        assert _code(info.value) == "UninitializedAccountException", (name, info.value.response)
    api.mgn.initialize_service()
    for name in names:
        method = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
        with pytest.raises(ClientError) as info:
            getattr(raw, method)()
        response = info.value.response
        assert _code(info.value) == "ValidationException" and response["reason"] == "other", (name, response)
        assert response["Error"]["Message"].startswith(f"{name} is outside rehost's scope: "), (name, response)
    assert "install the agent on each source server" in \
        _error_message(lambda: raw.list_connectors())
    # IAM first, as for every operation: a user who may not list connectors is refused before anything else.
    data_dir, env = api.server.data_dir, api.server.env
    cli_json("iam", "create-user", "nolist", data_dir=data_dir, env=env)
    rehost_cli("iam", "attach-user-policy", "nolist", "arn:aws:iam::aws:policy/AWSApplicationMigrationReadOnlyAccess",
               data_dir=data_dir, env=env)
    reader = api.server.client(api.server.access_key("nolist"))
    with pytest.raises(ClientError) as info:
        reader.list_connectors()
    assert _code(info.value) == "AccessDeniedException"


def _error_message(call: Any) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return str(info.value.response["Error"]["Message"])
