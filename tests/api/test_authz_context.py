"""IAM through the one front door: every resource a request names, and the request's context in conditions.

A real `rehost server`, real boto3, users and inline policies made with the `rehost iam` CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select

from helpers import cli_json, rehost_cli
from rehost.db import schema
from rehost.db.store import Store

from .agentapi import send
from .conftest import Api, ServerFactory, make_api

DESCRIBE = {"Effect": "Allow", "Action": ["mgn:Describe*", "mgn:Get*"], "Resource": "*"}


def _code(err: ClientError) -> str:
    return str(err.response["Error"]["Code"])


def _user(api: Api, tmp_path: Path, name: str, *statements: dict[str, Any], tags: dict[str, str] | None = None) -> Any:
    """A boto3 MGN client for a new user whose one inline policy holds `statements`."""
    return api.server.client(_user_key(api, tmp_path, name, *statements, tags=tags))


def _user_key(api: Api, tmp_path: Path, name: str, *statements: dict[str, Any],
              tags: dict[str, str] | None = None) -> tuple[str, str]:
    env, data_dir = api.server.env, api.server.data_dir
    cli_json("iam", "create-user", name, data_dir=data_dir, env=env)
    doc = tmp_path / f"{name}.json"
    doc.write_text(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))
    rehost_cli("iam", "put-user-policy", name, "inline", "--policy-document", f"file://{doc}", data_dir=data_dir, env=env)
    if tags:
        rehost_cli("iam", "tag-user", name, *(f"{k}={v}" for k, v in tags.items()), data_dir=data_dir, env=env)
    return api.server.access_key(name)


def _allowed(client: Any) -> bool:
    try:
        client.describe_source_servers()
        return True
    except ClientError as exc:
        assert _code(exc) == "AccessDeniedException", exc.response
        return False


def _describe_if(condition: dict[str, Any], effect: str = "Allow") -> dict[str, Any]:
    return {"Effect": effect, "Action": "mgn:DescribeSourceServers", "Resource": "*", "Condition": condition}


def test_a_request_naming_several_servers_needs_every_one(api: Api, tmp_path: Path) -> None:
    a, b = api.ready_server(), api.ready_server()
    arn_a = api.mgn.describe_source_servers(filters={"sourceServerIDs": [a]})["items"][0]["arn"]
    client = _user(api, tmp_path, "only-a", DESCRIBE,
                   {"Effect": "Allow", "Action": ["mgn:StartTest", "mgn:TerminateTargetInstances"], "Resource": arn_a})
    jobs_before = api.mgn.describe_jobs()["items"]
    for operation in ("start_test", "terminate_target_instances"):
        with pytest.raises(ClientError) as info:
            getattr(client, operation)(sourceServerIDs=[a, b])
        assert _code(info.value) == "AccessDeniedException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert f"source-server/{b}" in info.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as info:  # the order does not matter
            getattr(client, operation)(sourceServerIDs=[b, a])
        assert _code(info.value) == "AccessDeniedException"
    # Nothing happened to a (nor to b): no job, both still ready for testing.
    assert api.mgn.describe_jobs()["items"] == jobs_before
    assert api.state(a) == "READY_FOR_TEST" and api.state(b) == "READY_FOR_TEST"
    # a alone is allowed.
    job = client.start_test(sourceServerIDs=[a])["job"]
    assert [p["sourceServerID"] for p in job["participatingServers"]] == [a]
    api.finish_job(a, job["jobID"])


def test_templates_named_by_a_describe_are_each_authorized(api: Api, tmp_path: Path) -> None:
    template = api.mgn.describe_replication_configuration_templates()["items"][0]
    client = _user(api, tmp_path, "one-template", {
        "Effect": "Allow", "Action": "mgn:DescribeReplicationConfigurationTemplates", "Resource": template["arn"]})
    tid = template["replicationConfigurationTemplateID"]
    items = client.describe_replication_configuration_templates(replicationConfigurationTemplateIDs=[tid])["items"]
    assert [t["replicationConfigurationTemplateID"] for t in items] == [tid]
    with pytest.raises(ClientError) as info:
        client.describe_replication_configuration_templates(
            replicationConfigurationTemplateIDs=[tid, "rct-0123456789abcdef0"])
    assert _code(info.value) == "AccessDeniedException"


def test_source_ip_conditions(api: Api, tmp_path: Path) -> None:
    # Tests reach the server over loopback: aws:SourceIp is 127.0.0.1.
    assert _allowed(_user(api, tmp_path, "ip-loopback", _describe_if({"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}})))
    assert not _allowed(_user(api, tmp_path, "ip-office", _describe_if({"IpAddress": {"aws:SourceIp": ["10.0.0.0/8",
                                                                                                       "192.0.2.7"]}})))
    assert _allowed(_user(api, tmp_path, "ip-not-office", _describe_if({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}})))
    fenced = _user(api, tmp_path, "ip-fenced", {"Effect": "Allow", "Action": "mgn:*", "Resource": "*"},
                   _describe_if({"NotIpAddress": {"aws:SourceIp": "192.0.2.0/24"}}, "Deny"))
    assert not _allowed(fenced)


def test_time_transport_region_and_user_conditions(api: Api, tmp_path: Path) -> None:
    cases = {
        "after-2000": ({"DateGreaterThan": {"aws:CurrentTime": "2000-01-01T00:00:00Z"}}, True),
        "before-2000": ({"DateLessThan": {"aws:CurrentTime": "2000-01-01T00:00:00Z"}}, False),
        "epoch-later": ({"NumericGreaterThan": {"aws:EpochTime": 946684800}}, True),
        "tls-only": ({"Bool": {"aws:SecureTransport": "true"}}, False),  # this server answers plain HTTP
        "plain-ok": ({"Bool": {"aws:SecureTransport": "false"}}, True),
        "our-region": ({"StringEquals": {"aws:RequestedRegion": api.server.region}}, True),
        "other-region": ({"StringEquals": {"aws:RequestedRegion": "eu-west-3"}}, False),
        "me": ({"StringEquals": {"aws:username": "me"}}, True),
        "not-me": ({"StringEquals": {"aws:username": "someone-else"}}, False),
        "aida": ({"StringLike": {"aws:userid": "AIDA*"}}, True),
        "my-arn": ({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/my-arn"}}, True),
        "unknown-key": ({"StringEquals": {"aws:NoSuchKey": "x"}}, False),
        "unknown-if-exists": ({"StringEqualsIfExists": {"aws:NoSuchKey": "x"}}, True),
        "null-key": ({"Null": {"aws:NoSuchKey": "true"}}, True),
    }
    for name, (condition, expected) in cases.items():
        assert _allowed(_user(api, tmp_path, name, _describe_if(condition))) is expected, name
    # A Deny over plain HTTP, as the usual "TLS only" policy writes it.
    secure_only = _user(api, tmp_path, "deny-plain", {"Effect": "Allow", "Action": "mgn:*", "Resource": "*"},
                        _describe_if({"Bool": {"aws:SecureTransport": "false"}}, "Deny"))
    with pytest.raises(ClientError) as info:
        secure_only.describe_source_servers()
    assert "explicit deny" in info.value.response["Error"]["Message"]
    assert secure_only.describe_jobs()["items"] is not None  # the Deny names DescribeSourceServers only


def test_forwarding_headers_are_not_believed(api: Api, tmp_path: Path) -> None:
    loopback = _user_key(api, tmp_path, "fwd-loopback", _describe_if({"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}))
    elsewhere = _user_key(api, tmp_path, "fwd-elsewhere", _describe_if({"IpAddress": {"aws:SourceIp": "203.0.113.9"}}))
    spoof = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9", "Forwarded": "for=203.0.113.9",
             "X-Forwarded-Proto": "https"}
    for key, status in ((loopback, 200), (elsewhere, 403)):
        got, _, _ = send(api.server.endpoint, "POST", "/DescribeSourceServers", b"{}", *key, headers=spoof)
        assert got == status


def test_ec2_requests_carry_the_context_too(api: Api, tmp_path: Path) -> None:
    for name, network, allowed in (("ec2-here", "127.0.0.0/8", True), ("ec2-there", "203.0.113.0/24", False)):
        ec2 = api.server.client(_user_key(api, tmp_path, name, {
            "Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*",
            "Condition": {"IpAddress": {"aws:SourceIp": network}}}), service="ec2")
        try:
            ec2.describe_launch_templates()
            assert allowed, name
        except ClientError as exc:
            assert not allowed and _code(exc) == "UnauthorizedOperation", (name, exc.response)


def test_secure_transport_over_tls(servers: ServerFactory, tmp_path: Path) -> None:
    server = servers.new()
    server.stop()
    server.tls = True  # the same data directory and database, now served with --tls
    server.start()
    api = make_api(server)
    assert _allowed(_user(api, tmp_path, "tls-only", _describe_if({"Bool": {"aws:SecureTransport": "true"}})))
    assert not _allowed(_user(api, tmp_path, "plain-only", _describe_if({"Bool": {"aws:SecureTransport": "false"}})))


def test_principal_tags(api: Api, tmp_path: Path) -> None:
    statement = _describe_if({"StringEquals": {"aws:PrincipalTag/team": "blue"}})
    assert _allowed(_user(api, tmp_path, "blue-one", statement, tags={"team": "blue"}))
    assert not _allowed(_user(api, tmp_path, "red-one", statement, tags={"team": "red"}))
    assert not _allowed(_user(api, tmp_path, "untagged", statement))
    listed = cli_json("iam", "list-user-tags", "blue-one", data_dir=api.server.data_dir, env=api.server.env)
    assert listed == {"Tags": [{"Key": "team", "Value": "blue"}]}
    for bad in ("aws:team=blue", "team", "te\nam=x"):
        out = rehost_cli("iam", "tag-user", "blue-one", bad, data_dir=api.server.data_dir, env=api.server.env,
                         check=False)
        assert out.returncode != 0 and "Traceback" not in out.stderr and out.stderr.strip(), bad
    # A tag as a policy variable: each user may touch only the servers tagged with its own team.
    sid = api.ready_server()
    arn = api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]["arn"]
    client = _user(api, tmp_path, "var-team", {"Effect": "Allow", "Action": "mgn:TagResource", "Resource": "*",
                                               "Condition": {"StringEquals": {"aws:username": "${aws:PrincipalTag/owner}"}}},
                   tags={"owner": "var-team"})
    client.tag_resource(resourceArn=arn, tags={"team": "blue"})
    assert api.mgn.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "blue"}
    # Untagging takes the condition's key away: the same request is refused.
    rehost_cli("iam", "untag-user", "var-team", "owner", data_dir=api.server.data_dir, env=api.server.env)
    with pytest.raises(ClientError) as info:
        client.tag_resource(resourceArn=arn, tags={"team": "red"})
    assert _code(info.value) == "AccessDeniedException"
    assert api.mgn.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "blue"}


def test_resource_and_request_tags(api: Api, tmp_path: Path) -> None:
    tagged, untagged = api.ready_server(), api.ready_server()
    arns = {sid: api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]["arn"]
            for sid in (tagged, untagged)}
    api.mgn.tag_resource(resourceArn=arns[tagged], tags={"env": "test"})
    client = _user(api, tmp_path, "abac", DESCRIBE, {
        "Effect": "Allow", "Action": "mgn:UpdateLaunchConfiguration", "Resource": "*",
        "Condition": {"StringEquals": {"aws:ResourceTag/env": "test"}}}, {
        "Effect": "Allow", "Action": "mgn:TagResource", "Resource": "*",
        "Condition": {"StringEquals": {"aws:RequestTag/owner": "${aws:username}"},
                      "ForAllValues:StringEquals": {"aws:TagKeys": ["owner", "env"]}}})
    assert client.update_launch_configuration(sourceServerID=tagged, name="ok")["name"] == "ok"
    with pytest.raises(ClientError) as info:
        client.update_launch_configuration(sourceServerID=untagged, name="no")
    assert _code(info.value) == "AccessDeniedException"
    assert api.mgn.get_launch_configuration(sourceServerID=untagged)["name"] != "no"
    client.tag_resource(resourceArn=arns[untagged], tags={"owner": "abac", "env": "test"})
    for refused in ({"owner": "someone-else"}, {"owner": "abac", "cost": "1"}, {"env": "prod"}):
        with pytest.raises(ClientError) as info:
            client.tag_resource(resourceArn=arns[untagged], tags=refused)
        assert _code(info.value) == "AccessDeniedException", refused
    assert api.mgn.list_tags_for_resource(resourceArn=arns[untagged])["tags"] == {"owner": "abac", "env": "test"}
    # Now tagged env=test, the other server may be updated too.
    assert client.update_launch_configuration(sourceServerID=untagged, name="now")["name"] == "now"


def test_unknown_members_are_ignored_not_stored(api: Api) -> None:
    sid = api.ready_server()
    body = json.dumps({"sourceServerID": sid, "name": "renamed", "noSuchMember": {"deep": [1, 2]},
                       "bandwidthThrottling": 5, "notModelled": None}).encode()
    status, _, payload = send(api.server.endpoint, "POST", "/UpdateReplicationConfiguration", body, *api.key)
    assert status == 200, payload
    config = api.mgn.get_replication_configuration(sourceServerID=sid)
    assert config["name"] == "renamed" and config["bandwidthThrottling"] == 5
    status, _, payload = send(api.server.endpoint, "POST", "/UpdateLaunchConfiguration", json.dumps(
        {"sourceServerID": sid, "name": "lc", "licensing": {"osByol": True, "extra": "x"}, "bogus": 1}).encode(),
        *api.key)
    assert status == 200, payload
    assert api.mgn.get_launch_configuration(sourceServerID=sid)["licensing"] == {"osByol": True}
    store = Store(api.server.env.get("REHOST_DATABASE_URL") or f"sqlite:///{api.server.data_dir / 'rehost.db'}")
    try:
        with store.read() as conn:
            stored = json.dumps([row.doc for row in conn.execute(select(schema.source_servers))])
    finally:
        store.close()
    for member in ("noSuchMember", "notModelled", "bogus", '"extra"'):
        assert member not in stored, member
