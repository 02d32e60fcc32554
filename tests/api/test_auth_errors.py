"""Authentication (SigV4, temporary keys), authorization (IAM policies), and MGN's error codes and quotas."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from sqlalchemy import update

from helpers import RunningServer, cli_json, rehost_cli
from rehost.db import schema
from rehost.db.store import Store

from .agentapi import AgentApiError, AgentClient, send
from .conftest import Api, ServerFactory, make_api
from .waiting import wait_job


def _code(err: ClientError) -> str:
    return str(err.response["Error"]["Code"])


def _user_key(server: RunningServer, user: str, *policies: str) -> tuple[str, str]:
    cli_json("iam", "create-user", user, data_dir=server.data_dir, env=server.env)
    for policy in policies:
        rehost_cli("iam", "attach-user-policy", user, policy, data_dir=server.data_dir, env=server.env)
    return server.access_key(user)


def _db(server: RunningServer) -> Store:
    return Store(server.env.get("REHOST_DATABASE_URL") or f"sqlite:///{server.data_dir / 'rehost.db'}")


# -- SigV4 ------------------------------------------------------------------------------------------------

def _describe(api: Api, key: tuple[str, str], **kwargs: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    status, headers, body = send(api.server.endpoint, "POST", "/DescribeSourceServers", b"{}", *key, **kwargs)
    return status, headers, json.loads(body or b"{}")


def test_signed_requests_are_verified(api: Api) -> None:
    status, _, body = _describe(api, api.key)
    assert status == 200 and "items" in body
    now = datetime.now(UTC)
    assert _describe(api, api.key, signed_at=now - timedelta(minutes=10))[0] == 200  # within the 15 min skew
    cases = {
        "unknown key": (("AKIAIOSFODNN7EXAMPLE", "x" * 40), {}, "UnrecognizedClientException"),
        "wrong secret": ((api.key[0], "not-the-secret"), {}, "InvalidSignatureException"),
        "stale date": (api.key, {"signed_at": now - timedelta(minutes=20)}, "InvalidSignatureException"),
        "future date": (api.key, {"signed_at": now + timedelta(minutes=20)}, "InvalidSignatureException"),
        "other service": (api.key, {"service": "ec2"}, "InvalidSignatureException"),
        "other region": (api.key, {"region": "eu-west-1"}, "InvalidSignatureException"),
    }
    for what, (key, kwargs, code) in cases.items():
        status, headers, body = _describe(api, key, **kwargs)
        assert (status, headers.get("x-amzn-errortype")) == (403, code), (what, status, headers, body)
        assert body.get("message"), what


def test_unsigned_and_malformed_authorization(api: Api) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(api.server.endpoint + "/DescribeSourceServers", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert 400 <= info.value.code < 500
    req.add_header("Authorization", "AWS4-HMAC-SHA256 garbage")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert 400 <= info.value.code < 500


def test_boto3_with_a_bad_key_gets_a_clear_error(api: Api) -> None:
    bad = api.server.client(("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"))
    with pytest.raises(ClientError) as info:
        bad.describe_source_servers()
    assert _code(info.value) == "UnrecognizedClientException"
    other_region = RunningServer(api.server.data_dir, api.server.port, region="eu-west-1").client(api.key)
    with pytest.raises(ClientError) as info:
        other_region.describe_source_servers()
    assert _code(info.value) == "InvalidSignatureException"


def test_temporary_credentials(api: Api) -> None:
    server = api.server
    creds = cli_json("iam", "get-session-token", "admin", "--duration-seconds", "900",
                     data_dir=server.data_dir, env=server.env)["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SessionToken"]
    expiration = datetime.fromisoformat(creds["Expiration"].replace("Z", "+00:00"))
    assert timedelta(minutes=14) < expiration - datetime.now(UTC) <= timedelta(minutes=15)
    key = (creds["AccessKeyId"], creds["SecretAccessKey"])
    temp = server.client(key, session_token=creds["SessionToken"])
    assert "items" in temp.describe_source_servers()
    # The session token is part of the credentials: without it, or with another, the key is refused.
    with pytest.raises(ClientError) as info:
        server.client(key).describe_source_servers()
    assert _code(info.value) == "UnrecognizedClientException"
    with pytest.raises(ClientError) as info:
        token = creds["SessionToken"]
        # Another first character, whatever the random token starts with.
        forged = ("y" if token[0] == "x" else "x") + token[1:]
        server.client(key, session_token=forged).describe_source_servers()
    assert _code(info.value) in ("UnrecognizedClientException", "InvalidSignatureException")
    # Once expired (moved into the past in the database: nobody waits 15 minutes), it is refused.
    store = _db(server)
    try:
        with store.transaction() as conn:
            conn.execute(update(schema.iam_access_keys).where(schema.iam_access_keys.c.access_key_id == key[0])
                         .values(expiration=datetime.now(UTC) - timedelta(seconds=1)))
    finally:
        store.close()
    with pytest.raises(ClientError) as info:
        temp.describe_source_servers()
    assert _code(info.value) == "ExpiredTokenException"


def test_deleted_key_is_refused(api: Api) -> None:
    key = api.server.access_key()
    client = api.server.client(key)
    client.describe_source_servers()
    rehost_cli("iam", "delete-access-key", "admin", key[0], data_dir=api.server.data_dir, env=api.server.env)
    with pytest.raises(ClientError) as info:
        client.describe_source_servers()
    assert _code(info.value) == "UnrecognizedClientException"


# -- IAM authorization ------------------------------------------------------------------------------------

def test_agent_policy_key_is_refused_operator_actions(api: Api) -> None:
    key = _user_key(api.server, "installer-1", "AWSApplicationMigrationAgentPolicy")
    agent = AgentClient(api.server.endpoint, *key, data_dir=api.server.data_dir)
    sid = agent.register()["sourceServerID"]  # what the policy is for
    agent.report_synced(sid)
    client = api.server.client(key)
    for call, kwargs in ((client.start_cutover, {"sourceServerIDs": [sid]}), (client.start_test, {"sourceServerIDs": [sid]}),
                         (client.describe_source_servers, {})):
        with pytest.raises(ClientError) as info:
            call(**kwargs)
        assert _code(info.value) == "AccessDeniedException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "mgn:" in info.value.response["Error"]["Message"]
    assert api.state(sid) == "READY_FOR_TEST"  # nothing happened


def test_read_only_key(api: Api) -> None:
    key = _user_key(api.server, "auditor", "AWSApplicationMigrationReadOnlyAccess")
    sid = api.agent.register()["sourceServerID"]
    client = api.server.client(key)
    assert sid in [s["sourceServerID"] for s in client.describe_source_servers()["items"]]
    assert client.get_launch_configuration(sourceServerID=sid)["sourceServerID"] == sid
    with pytest.raises(ClientError) as info:
        client.update_launch_configuration(sourceServerID=sid, name="renamed")
    assert _code(info.value) == "AccessDeniedException"
    assert "mgn:UpdateLaunchConfiguration" in info.value.response["Error"]["Message"]
    assert api.mgn.get_launch_configuration(sourceServerID=sid)["name"] != "renamed"
    with pytest.raises(ClientError) as info:
        client.initialize_service()
    assert _code(info.value) == "AccessDeniedException"
    with pytest.raises(AgentApiError) as agent_info:
        AgentClient(api.server.endpoint, *key).register()
    assert (agent_info.value.status, agent_info.value.code) == (403, "AccessDeniedException")


def test_inline_policy_scoped_to_one_server_and_explicit_deny(api: Api, tmp_path: Path) -> None:
    allowed_sid, other_sid = api.ready_server(), api.ready_server()
    arn = api.mgn.describe_source_servers(filters={"sourceServerIDs": [allowed_sid]})["items"][0]["arn"]
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["mgn:Describe*", "mgn:Get*"], "Resource": "*"},
        {"Effect": "Allow", "Action": "mgn:UpdateLaunchConfiguration", "Resource": arn},
        {"Effect": "Allow", "Action": "mgn:UpdateReplicationConfiguration", "Resource": "*"},
        {"Effect": "Deny", "Action": "mgn:UpdateReplicationConfiguration", "Resource": arn},
    ]}
    doc = tmp_path / "policy.json"
    doc.write_text(json.dumps(policy))
    cli_json("iam", "create-user", "scoped", data_dir=api.server.data_dir, env=api.server.env)
    rehost_cli("iam", "put-user-policy", "scoped", "one-server", "--policy-document", f"file://{doc}",
               data_dir=api.server.data_dir, env=api.server.env)
    client = api.server.client(api.server.access_key("scoped"))
    assert client.update_launch_configuration(sourceServerID=allowed_sid, name="ok")["name"] == "ok"
    with pytest.raises(ClientError) as info:
        client.update_launch_configuration(sourceServerID=other_sid, name="no")
    assert _code(info.value) == "AccessDeniedException"
    client.update_replication_configuration(sourceServerID=other_sid, name="fine")
    with pytest.raises(ClientError) as info:
        client.update_replication_configuration(sourceServerID=allowed_sid, name="denied")
    assert _code(info.value) == "AccessDeniedException" and "explicit deny" in info.value.response["Error"]["Message"]


# -- errors -----------------------------------------------------------------------------------------------

def test_uninitialized_account(servers: ServerFactory) -> None:
    api = make_api(servers.new(), initialize=False)
    with pytest.raises(api.mgn.exceptions.UninitializedAccountException) as info:
        api.mgn.describe_source_servers()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(api.mgn.exceptions.UninitializedAccountException):
        api.mgn.start_test(sourceServerIDs=["s-0123456789abcdef0"])
    with pytest.raises(AgentApiError) as agent_info:
        api.agent.register()
    assert agent_info.value.code == "UninitializedAccountException"
    api.mgn.initialize_service()
    assert api.mgn.describe_source_servers()["items"] == []
    assert api.agent.register()["isNew"] is True


def test_validation_errors_name_the_field(api: Api) -> None:
    import boto3

    raw = boto3.client("mgn", endpoint_url=api.server.endpoint, region_name="us-east-1",
                       aws_access_key_id=api.key[0], aws_secret_access_key=api.key[1],
                       config=Config(parameter_validation=False, retries={"max_attempts": 1}))
    with pytest.raises(raw.exceptions.ValidationException) as info:
        raw.start_test(sourceServerIDs=["not-a-server-id"])
    response = info.value.response
    assert response["reason"] == "fieldValidationFailed"
    assert response["fieldList"][0]["name"] == "sourceServerIDs[0]" and response["fieldList"][0]["message"]
    with pytest.raises(raw.exceptions.ValidationException) as info:
        raw.start_test(sourceServerIDs=[])
    assert info.value.response["fieldList"][0]["name"] == "sourceServerIDs"
    with pytest.raises(raw.exceptions.ValidationException) as info:
        raw.change_server_life_cycle_state(sourceServerID="s-0123456789abcdef0", lifeCycle={"state": "TESTING"})
    assert info.value.response["fieldList"][0]["name"] == "lifeCycle.state"
    with pytest.raises(raw.exceptions.ValidationException) as info:
        raw.describe_jobs(maxResults=0)
    assert info.value.response["fieldList"][0]["name"] == "maxResults"
    with pytest.raises(raw.exceptions.ValidationException):
        raw.describe_source_servers(nextToken="definitely-not-a-token")
    # A body that is not JSON at all.
    status, headers, body = send(api.server.endpoint, "POST", "/DescribeSourceServers", b"{not json", *api.key)
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationException")
    assert json.loads(body)["reason"] == "cannotParse"
    # No such operation.
    status, _, _ = send(api.server.endpoint, "POST", "/NoSuchOperation", b"{}", *api.key)
    assert 400 <= status < 500


def test_malformed_agent_calls_are_client_errors_not_faults(api: Api) -> None:
    sid = api.agent.register()["sourceServerID"]
    bad_calls = [
        ("RegisterAgentForMgn", {"hints": "web-1"}),
        ("RegisterAgentForMgn", {"hints": {}}),
        ("RegisterAgentForMgn", {}),
        ("RegisterAgentForMgn", {"hints": {"hostname": "h"}, "devices": "sda"}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "dataReplicationState": "ON_FIRE"}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "dataReplicationState": "PAUSED"}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "replicatedDisks": "all"}),
        ("UpdateAgentBacklogForMgn", {"sourceServerID": sid, "unknownMember": 1}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "replicatedDisks": [{"totalStorageBytes": "x"}]}),
        ("RegisterAgentForMgn", {"hints": {"hostname": "h"}, "devices": [{"deviceName": "/dev/sda", "bytes": "8G"}]}),
        ("UpdateAgentBacklogForMgn", {"sourceServerID": sid, "backloggedStorageBytes": "lots"}),
        ("SendAgentMetricsForMgn", {"sourceServerID": sid, "metrics": [{"cpuPercent": "x"}]}),
        ("GetAgentCommandForMgn", {"sourceServerID": 42}),
        ("GetAgentCommandForMgn", {"sourceServerID": "s-00000000000000000"}),
        ("NoSuchActionForMgn", {}),
    ]
    for action, body in bad_calls:
        with pytest.raises(AgentApiError) as info:
            api.agent.call(action, body)
        assert 400 <= info.value.status < 500, (action, body, info.value)
        assert info.value.code and info.value.message, (action, body)
    status, headers, _ = send(api.server.endpoint, "POST", "/agent/RegisterAgentForMgn", b"[1, 2", *api.key)
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationException")


# -- quotas -----------------------------------------------------------------------------------------------

def test_active_source_server_quota_is_adjustable(servers: ServerFactory) -> None:
    api = make_api(servers.new("--max-active-source-servers", "2"))
    first = api.agent.register(mac="52:54:00:aa:00:01")["sourceServerID"]
    api.agent.register(mac="52:54:00:aa:00:02")
    with pytest.raises(AgentApiError) as info:
        api.agent.register(mac="52:54:00:aa:00:03")
    assert (info.value.status, info.value.code) == (402, "ServiceQuotaExceededException")
    assert "2" in info.value.message
    # The machines already registered can still come back; a disconnected one frees its place.
    assert api.agent.register(mac="52:54:00:aa:00:01")["sourceServerID"] == first
    api.mgn.disconnect_from_service(sourceServerID=first)
    assert api.agent.register(mac="52:54:00:aa:00:03")["isNew"] is True


def test_one_job_per_server(api: Api) -> None:
    sid = api.ready_server()
    job = api.mgn.start_test(sourceServerIDs=[sid])["job"]
    try:
        with pytest.raises(api.mgn.exceptions.ServiceQuotaExceededException) as info:
            api.mgn.start_test(sourceServerIDs=[sid])
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
        assert info.value.response["quotaValue"] == 1 and info.value.response["serviceCode"] == "mgn"
        with pytest.raises(api.mgn.exceptions.ConflictException):
            api.mgn.disconnect_from_service(sourceServerID=sid)
    finally:
        api.fail_snapshots(sid)
        wait_job(api.mgn, job["jobID"])


def test_twenty_concurrent_jobs(api: Api) -> None:
    sids = [api.ready_server() for _ in range(21)]
    jobs = [api.mgn.start_test(sourceServerIDs=[sid])["job"]["jobID"] for sid in sids[:20]]
    try:
        with pytest.raises(api.mgn.exceptions.ServiceQuotaExceededException) as info:
            api.mgn.start_test(sourceServerIDs=[sids[20]])
        assert info.value.response["quotaValue"] == 20
        assert api.state(sids[20]) == "READY_FOR_TEST"
    finally:
        for sid in sids[:20]:
            api.fail_snapshots(sid, timeout=120)
        for job_id in jobs:
            wait_job(api.mgn, job_id)
    # Room again.
    api.run_launch("start_test", sids[20])


def test_two_hundred_servers_per_job(api: Api) -> None:
    import boto3

    raw = boto3.client("mgn", endpoint_url=api.server.endpoint, region_name="us-east-1",
                       aws_access_key_id=api.key[0], aws_secret_access_key=api.key[1],
                       config=Config(parameter_validation=False, retries={"max_attempts": 1}))
    ids = [f"s-{i:017d}" for i in range(201)]
    with pytest.raises(raw.exceptions.ValidationException) as info:
        raw.start_test(sourceServerIDs=ids)
    assert info.value.response["fieldList"][0]["name"] == "sourceServerIDs"
    assert "200" in info.value.response["fieldList"][0]["message"]
