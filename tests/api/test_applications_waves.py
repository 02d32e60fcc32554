"""Applications and waves through boto3 (and the AWS CLI): MGN's rules, aggregated status, filters, IAM.

Also Cloud Migration Factory's finalize (DisconnectFromService, then ChangeServerLifeCycleState CUTOVER).
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from helpers import cli_json, rehost_cli

from .conftest import Api, ServerFactory, make_api
from .test_cli import _aws

APP_ID = re.compile(r"^app-[0-9a-zA-Z]{17}$")
WAVE_ID = re.compile(r"^wave-[0-9a-zA-Z]{17}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _error(call: Any, code: str, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert info.value.response["Error"]["Code"] == code, info.value.response
    return dict(info.value.response)


def _app(api: Api, app_id: str) -> dict[str, Any]:
    items = api.mgn.list_applications(filters={"applicationIDs": [app_id]})["items"]
    assert len(items) == 1
    return dict(items[0])


def _wave(api: Api, wave_id: str) -> dict[str, Any]:
    items = api.mgn.list_waves(filters={"waveIDs": [wave_id]})["items"]
    assert len(items) == 1
    return dict(items[0])


def _servers_of(api: Api, app_id: str) -> list[str]:
    items = api.mgn.describe_source_servers(filters={"applicationIDs": [app_id]})["items"]
    return sorted(s["sourceServerID"] for s in items)


def test_application_create_update_delete_and_tags(api: Api) -> None:
    name = _name("billing")
    app = api.mgn.create_application(name=name, description="the billing stack", tags={"team": "blue"})
    app_id = app["applicationID"]
    assert APP_ID.match(app_id)
    assert app["arn"].endswith(f":application/{app_id}") and app["arn"].startswith("arn:aws:mgn:us-east-1:")
    assert (app["name"], app["description"], app["isArchived"], app["tags"]) == (name, "the billing stack", False,
                                                                                 {"team": "blue"})
    assert "waveID" not in app
    assert ISO.match(app["creationDateTime"]) and ISO.match(app["lastModifiedDateTime"])
    status = app["applicationAggregatedStatus"]
    assert (status["healthStatus"], status["progressStatus"], status["totalSourceServers"]) == ("HEALTHY", "NOT_STARTED", 0)
    assert ISO.match(status["lastUpdateDateTime"])

    # Names are unique per account, case-insensitively.
    err = _error(api.mgn.create_application, "ConflictException", name=name.upper())
    assert err["resourceId"] == app_id and err["resourceType"] == "APPLICATION"
    other = api.mgn.create_application(name=_name("other"))
    _error(api.mgn.update_application, "ConflictException", applicationID=other["applicationID"], name=name)

    updated = api.mgn.update_application(applicationID=app_id, name=name + "-v2", description="")
    assert (updated["name"], updated["description"]) == (name + "-v2", "")
    assert updated["lastModifiedDateTime"] >= app["lastModifiedDateTime"]
    assert _app(api, app_id)["name"] == name + "-v2"

    # Tags on its ARN, as on any MGN resource.
    api.mgn.tag_resource(resourceArn=app["arn"], tags={"cost": "42"})
    assert api.mgn.list_tags_for_resource(resourceArn=app["arn"])["tags"] == {"team": "blue", "cost": "42"}
    api.mgn.untag_resource(resourceArn=app["arn"], tagKeys=["team"])
    assert _app(api, app_id)["tags"] == {"cost": "42"}

    api.mgn.delete_application(applicationID=app_id)
    assert api.mgn.list_applications(filters={"applicationIDs": [app_id]})["items"] == []
    err = _error(api.mgn.delete_application, "ResourceNotFoundException", applicationID=app_id)
    assert err["resourceId"] == app_id and err["resourceType"] == "APPLICATION"
    _error(api.mgn.update_application, "ResourceNotFoundException", applicationID=app_id, name="x")
    _error(api.mgn.list_tags_for_resource, "ResourceNotFoundException", resourceArn=app["arn"])


def test_source_servers_belong_to_one_application(api: Api) -> None:
    s1, s2 = api.ready_server(), api.ready_server()
    app = api.mgn.create_application(name=_name("web"))["applicationID"]
    other = api.mgn.create_application(name=_name("db"))["applicationID"]
    assert _servers_of(api, app) == []
    api.mgn.associate_source_servers(applicationID=app, sourceServerIDs=[s1, s2])
    assert _servers_of(api, app) == sorted([s1, s2])
    server = api.mgn.describe_source_servers(filters={"sourceServerIDs": [s1]})["items"][0]
    assert server["applicationID"] == app
    # applicationIDs combines with the other filters.
    both = api.mgn.describe_source_servers(filters={"applicationIDs": [app], "sourceServerIDs": [s2]})["items"]
    assert [s["sourceServerID"] for s in both] == [s2]
    assert _app(api, app)["applicationAggregatedStatus"]["totalSourceServers"] == 2
    api.mgn.associate_source_servers(applicationID=app, sourceServerIDs=[s1])  # already there: nothing changes

    err = _error(api.mgn.associate_source_servers, "ConflictException", applicationID=other, sourceServerIDs=[s1])
    assert err["resourceId"] == s1 and err["resourceType"] == "SOURCE_SERVER"
    _error(api.mgn.disassociate_source_servers, "ConflictException", applicationID=other, sourceServerIDs=[s1])
    err = _error(api.mgn.delete_application, "ConflictException", applicationID=app)
    assert err["resourceId"] == app
    _error(api.mgn.associate_source_servers, "ResourceNotFoundException", applicationID=app,
           sourceServerIDs=["s-0000000000000000a"])
    _error(api.mgn.associate_source_servers, "ResourceNotFoundException", applicationID="app-0000000000000000a",
           sourceServerIDs=[s1])

    api.mgn.disassociate_source_servers(applicationID=app, sourceServerIDs=[s1])
    assert _servers_of(api, app) == [s2]
    assert "applicationID" not in api.mgn.describe_source_servers(filters={"sourceServerIDs": [s1]})["items"][0]
    api.mgn.associate_source_servers(applicationID=other, sourceServerIDs=[s1])
    assert _servers_of(api, other) == [s1]
    api.mgn.disassociate_source_servers(applicationID=app, sourceServerIDs=[s2])
    api.mgn.delete_application(applicationID=app)
    assert api.mgn.describe_source_servers(filters={"applicationIDs": [app]})["items"] == []


def test_waves_group_applications(api: Api) -> None:
    wave = api.mgn.create_wave(name=_name("wave"), description="first", tags={"phase": "1"})
    wave_id = wave["waveID"]
    assert WAVE_ID.match(wave_id) and wave["arn"].endswith(f":wave/{wave_id}") and wave["tags"] == {"phase": "1"}
    status = wave["waveAggregatedStatus"]
    assert (status["healthStatus"], status["progressStatus"], status["totalApplications"]) == ("HEALTHY", "NOT_STARTED", 0)
    _error(api.mgn.create_wave, "ConflictException", name=wave["name"].upper())

    a1 = api.mgn.create_application(name=_name("a1"))["applicationID"]
    a2 = api.mgn.create_application(name=_name("a2"))["applicationID"]
    a3 = api.mgn.create_application(name=_name("a3"))["applicationID"]
    api.mgn.associate_applications(waveID=wave_id, applicationIDs=[a1, a2])
    in_wave = api.mgn.list_applications(filters={"waveIDs": [wave_id]})["items"]
    assert sorted(a["applicationID"] for a in in_wave) == sorted([a1, a2])
    assert all(a["waveID"] == wave_id for a in in_wave)
    assert _wave(api, wave_id)["waveAggregatedStatus"]["totalApplications"] == 2

    other = api.mgn.create_wave(name=_name("wave"))["waveID"]
    err = _error(api.mgn.associate_applications, "ConflictException", waveID=other, applicationIDs=[a1])
    assert err["resourceId"] == a1 and err["resourceType"] == "APPLICATION"
    _error(api.mgn.disassociate_applications, "ConflictException", waveID=other, applicationIDs=[a3])
    err = _error(api.mgn.delete_wave, "ConflictException", waveID=wave_id)
    assert err["resourceId"] == wave_id and err["resourceType"] == "WAVE"
    _error(api.mgn.associate_applications, "ResourceNotFoundException", waveID=wave_id,
           applicationIDs=["app-0000000000000000a"])

    api.mgn.disassociate_applications(waveID=wave_id, applicationIDs=[a1])
    assert [a["applicationID"] for a in api.mgn.list_applications(filters={"waveIDs": [wave_id]})["items"]] == [a2]
    assert "waveID" not in _app(api, a1)
    assert api.mgn.update_wave(waveID=wave_id, description="renamed")["description"] == "renamed"
    api.mgn.disassociate_applications(waveID=wave_id, applicationIDs=[a2])
    api.mgn.delete_wave(waveID=wave_id)
    _error(api.mgn.delete_wave, "ResourceNotFoundException", waveID=wave_id)
    _error(api.mgn.list_tags_for_resource, "ResourceNotFoundException", resourceArn=wave["arn"])


def test_archived_applications_and_waves_refuse_changes(api: Api) -> None:
    sid = api.ready_server()
    app = api.mgn.create_application(name=_name("legacy"))["applicationID"]
    wave = api.mgn.create_wave(name=_name("legacy-wave"))["waveID"]
    api.mgn.associate_source_servers(applicationID=app, sourceServerIDs=[sid])
    api.mgn.associate_applications(waveID=wave, applicationIDs=[app])

    # Members first: a wave with an unarchived application, an application with an unarchived server.
    err = _error(api.mgn.archive_wave, "ConflictException", waveID=wave)
    assert err["resourceId"] == wave and app in err["Error"]["Message"]
    err = _error(api.mgn.archive_application, "ConflictException", applicationID=app)
    assert sid in err["Error"]["Message"]
    api.mgn.disconnect_from_service(sourceServerID=sid)
    api.mgn.mark_as_archived(sourceServerID=sid)
    archived = api.mgn.archive_application(applicationID=app)
    assert archived["isArchived"] is True and archived["waveID"] == wave
    assert api.mgn.archive_wave(waveID=wave)["isArchived"] is True

    for call, kwargs in ((api.mgn.update_application, {"applicationID": app, "name": "x"}),
                         (api.mgn.associate_source_servers, {"applicationID": app, "sourceServerIDs": [sid]}),
                         (api.mgn.disassociate_source_servers, {"applicationID": app, "sourceServerIDs": [sid]}),
                         (api.mgn.update_wave, {"waveID": wave, "name": "x"}),
                         (api.mgn.disassociate_applications, {"waveID": wave, "applicationIDs": [app]})):
        _error(call, "ConflictException", **kwargs)
    free_wave = api.mgn.create_wave(name=_name("w"))["waveID"]
    _error(api.mgn.associate_applications, "ConflictException", waveID=free_wave, applicationIDs=[app])
    free_app = api.mgn.create_application(name=_name("a"))["applicationID"]
    _error(api.mgn.associate_source_servers, "ConflictException", applicationID=free_app, sourceServerIDs=[sid])

    archived_ids = [a["applicationID"] for a in api.mgn.list_applications(filters={"isArchived": True})["items"]]
    active_ids = [a["applicationID"] for a in api.mgn.list_applications(filters={"isArchived": False})["items"]]
    assert app in archived_ids and app not in active_ids and free_app in active_ids
    assert [w["waveID"] for w in api.mgn.list_waves(filters={"isArchived": True})["items"]] == [wave]

    assert api.mgn.unarchive_wave(waveID=wave)["isArchived"] is False
    assert api.mgn.unarchive_wave(waveID=wave)["isArchived"] is False  # unarchiving twice is no error
    assert api.mgn.unarchive_application(applicationID=app)["isArchived"] is False
    assert api.mgn.update_application(applicationID=app, description="back")["description"] == "back"
    _error(api.mgn.archive_application, "ResourceNotFoundException", applicationID="app-0000000000000000a")
    _error(api.mgn.unarchive_wave, "ResourceNotFoundException", waveID="wave-0000000000000000a")


def test_aggregated_status_follows_the_servers(api: Api) -> None:
    s1, s2 = api.ready_server(), api.ready_server()
    app = api.mgn.create_application(name=_name("status"))["applicationID"]
    wave = api.mgn.create_wave(name=_name("status"))["waveID"]
    api.mgn.associate_source_servers(applicationID=app, sourceServerIDs=[s1, s2])
    api.mgn.associate_applications(waveID=wave, applicationIDs=[app])
    first = _app(api, app)["applicationAggregatedStatus"]
    assert (first["healthStatus"], first["progressStatus"], first["totalSourceServers"]) == ("HEALTHY", "NOT_STARTED", 2)
    wave_status = _wave(api, wave)["waveAggregatedStatus"]
    assert (wave_status["progressStatus"], wave_status["totalApplications"]) == ("NOT_STARTED", 1)
    assert ISO.match(wave_status["replicationStartedDateTime"])  # the servers' first replicated bytes
    assert _app(api, app)["applicationAggregatedStatus"]["lastUpdateDateTime"] == first["lastUpdateDateTime"]

    # Backlog is lag; a stall is an error; either is the worst of the servers.
    api.agent.call("UpdateAgentReplicationInfoForMgn", {"sourceServerID": s2, "dataReplicationState": "BACKLOG"})
    lagging = _app(api, app)["applicationAggregatedStatus"]
    assert lagging["healthStatus"] == "LAGGING" and lagging["lastUpdateDateTime"] > first["lastUpdateDateTime"]
    assert _wave(api, wave)["waveAggregatedStatus"]["healthStatus"] == "LAGGING"
    api.agent.call("UpdateAgentReplicationInfoForMgn", {
        "sourceServerID": s1, "dataReplicationState": "STALLED",
        "error": {"error": "UNSTABLE_NETWORK", "rawError": "connection reset"}})
    assert _app(api, app)["applicationAggregatedStatus"]["healthStatus"] == "ERROR"
    assert _wave(api, wave)["waveAggregatedStatus"]["healthStatus"] == "ERROR"
    for sid in (s1, s2):
        api.agent.report_synced(sid)
    assert _app(api, app)["applicationAggregatedStatus"]["healthStatus"] == "HEALTHY"

    # Progress follows the lifecycle: a test launched is progress; every server cut over is completion.
    api.run_launch("start_test", s1)
    assert _app(api, app)["applicationAggregatedStatus"]["progressStatus"] == "IN_PROGRESS"
    assert _wave(api, wave)["waveAggregatedStatus"]["progressStatus"] == "IN_PROGRESS"
    for sid in (s1, s2):
        if sid == s2:
            api.run_launch("start_test", sid)
        api.mgn.change_server_life_cycle_state(sourceServerID=sid, lifeCycle={"state": "READY_FOR_CUTOVER"})
        api.run_launch("start_cutover", sid)
        api.mgn.change_server_life_cycle_state(sourceServerID=sid, lifeCycle={"state": "CUTOVER"})
    done = _app(api, app)["applicationAggregatedStatus"]
    assert (done["progressStatus"], done["healthStatus"]) == ("COMPLETED", "HEALTHY")
    assert _wave(api, wave)["waveAggregatedStatus"]["progressStatus"] == "COMPLETED"


def test_listing_pages_and_validation(api: Api) -> None:
    prefix = _name("page")
    made = [api.mgn.create_application(name=f"{prefix}-{i}")["applicationID"] for i in range(3)]
    seen: list[str] = []
    token = None
    while True:
        page = api.mgn.list_applications(maxResults=2, **({"nextToken": token} if token else {}))
        assert len(page["items"]) <= 2
        seen += [a["applicationID"] for a in page["items"]]
        token = page.get("nextToken")
        if not token:
            break
    assert [a for a in seen if a in made] == made  # creation order, each once
    assert len(seen) == len(set(seen))
    paginator = api.mgn.get_paginator("list_applications")
    assert made[0] in [a["applicationID"] for p in paginator.paginate(PaginationConfig={"PageSize": 1})
                       for a in p["items"]]

    raw = boto3.client("mgn", endpoint_url=api.server.endpoint, region_name="us-east-1", verify=api.server.ca_bundle,
                       aws_access_key_id=api.key[0], aws_secret_access_key=api.key[1],
                       config=Config(parameter_validation=False, retries={"max_attempts": 1}))
    for call, kwargs, field in (
            (raw.create_application, {"name": "x" * 257}, "name"),
            (raw.create_wave, {"name": ""}, "name"),
            (raw.create_application, {"name": "ok", "description": "d" * 601}, "description"),
            (raw.update_application, {"applicationID": "app-short", "name": "x"}, "applicationID"),
            (raw.associate_source_servers, {"applicationID": made[0], "sourceServerIDs": []}, "sourceServerIDs"),
            (raw.associate_applications, {"waveID": "wave-0000000000000000a", "applicationIDs": ["s-0"]},
             "applicationIDs[0]"),
            (raw.list_waves, {"maxResults": 0}, "maxResults"),
            (raw.list_applications, {"filters": {"waveIDs": ["wave-x"]}}, "filters.waveIDs[0]")):
        err = _error(call, "ValidationException", **kwargs)
        assert err["fieldList"][0]["name"] == field, err
    _error(api.mgn.list_applications, "ValidationException", nextToken="not-a-token")


def test_iam_on_application_and_wave_arns(api: Api, tmp_path: Path) -> None:
    mine = api.mgn.create_application(name=_name("mine"))
    theirs = api.mgn.create_application(name=_name("theirs"))
    wave = api.mgn.create_wave(name=_name("wave"))
    sid = api.ready_server()
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["mgn:List*", "mgn:Describe*"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["mgn:UpdateApplication", "mgn:AssociateSourceServers",
                                       "mgn:DisassociateSourceServers", "mgn:AssociateApplications"],
         "Resource": [mine["arn"], f"arn:aws:mgn:*:*:source-server/{sid}", wave["arn"]]},
    ]}
    doc = tmp_path / "policy.json"
    doc.write_text(json.dumps(policy))
    env, data_dir = api.server.env, api.server.data_dir
    user = _name("appowner")
    cli_json("iam", "create-user", user, data_dir=data_dir, env=env)
    rehost_cli("iam", "put-user-policy", user, "one-app", "--policy-document", f"file://{doc}", data_dir=data_dir, env=env)
    client = api.server.client(api.server.access_key(user))

    assert client.update_application(applicationID=mine["applicationID"], description="ok")["description"] == "ok"
    client.associate_source_servers(applicationID=mine["applicationID"], sourceServerIDs=[sid])
    client.disassociate_source_servers(applicationID=mine["applicationID"], sourceServerIDs=[sid])
    for call, kwargs in ((client.update_application, {"applicationID": theirs["applicationID"], "description": "no"}),
                         (client.associate_source_servers, {"applicationID": theirs["applicationID"],
                                                            "sourceServerIDs": [sid]}),
                         (client.delete_application, {"applicationID": mine["applicationID"]}),
                         (client.create_wave, {"name": _name("w")})):
        err = _error(call, "AccessDeniedException", **kwargs)
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
    # Every application named must be allowed: one outside the policy refuses the whole call.
    err = _error(client.associate_applications, "AccessDeniedException", waveID=wave["waveID"],
                 applicationIDs=[mine["applicationID"], theirs["applicationID"]])
    assert theirs["arn"] in err["Error"]["Message"]
    assert _wave(api, wave["waveID"])["waveAggregatedStatus"]["totalApplications"] == 0
    client.associate_applications(waveID=wave["waveID"], applicationIDs=[mine["applicationID"]])
    assert {a["applicationID"] for a in client.list_applications()["items"]} >= {mine["applicationID"],
                                                                                  theirs["applicationID"]}


def test_uninitialized_account_lists(servers: ServerFactory) -> None:
    api = make_api(servers.new(), initialize=False)
    for call in (api.mgn.list_applications, api.mgn.list_waves):
        _error(call, "UninitializedAccountException")
    _error(api.mgn.create_application, "UninitializedAccountException", name="x")
    api.mgn.initialize_service()
    assert api.mgn.list_applications()["items"] == [] and api.mgn.list_waves()["items"] == []


def test_aws_cli_applications_and_waves(api: Api, tmp_path: Path) -> None:
    name = _name("cli-app")
    proc = _aws(api, tmp_path, "create-application", "--name", name, "--tags", "via=aws-cli")
    assert proc.returncode == 0, proc.stderr
    app = json.loads(proc.stdout)
    assert APP_ID.match(app["applicationID"]) and app["tags"] == {"via": "aws-cli"}
    wave = json.loads(_aws(api, tmp_path, "create-wave", "--name", _name("cli-wave")).stdout)
    proc = _aws(api, tmp_path, "associate-applications", "--wave-id", wave["waveID"],
                "--application-ids", app["applicationID"])
    assert proc.returncode == 0, proc.stderr
    proc = _aws(api, tmp_path, "list-applications", "--filters", json.dumps({"waveIDs": [wave["waveID"]]}))
    assert proc.returncode == 0, proc.stderr
    assert [a["applicationID"] for a in json.loads(proc.stdout)["items"]] == [app["applicationID"]]
    proc = _aws(api, tmp_path, "delete-wave", "--wave-id", wave["waveID"])
    assert proc.returncode != 0 and "ConflictException" in proc.stderr


# -- lifecycle: Cloud Migration Factory's finalize ---------------------------------------------------------

def _change(api: Api, sid: str, state: str) -> dict[str, Any]:
    return dict(api.mgn.change_server_life_cycle_state(sourceServerID=sid, lifeCycle={"state": state}))


def test_cloud_migration_factory_finalize(api: Api) -> None:
    sid = api.ready_server()
    api.run_launch("start_test", sid)
    _change(api, sid, "READY_FOR_CUTOVER")
    api.run_launch("start_cutover", sid)
    assert api.state(sid) == "CUTTING_OVER"
    # CMF disconnects the server, then marks it cut over: MGN accepts that sequence.
    assert api.mgn.disconnect_from_service(sourceServerID=sid)["lifeCycle"]["state"] == "DISCONNECTED"
    done = _change(api, sid, "CUTOVER")
    assert done["lifeCycle"]["state"] == "CUTOVER" and "finalized" in done["lifeCycle"]["lastCutover"]
    assert done["dataReplicationInfo"]["dataReplicationState"] == "DISCONNECTED"
    assert api.mgn.mark_as_archived(sourceServerID=sid)["isArchived"] is True


def test_disconnected_without_cutover_cannot_be_marked_cut_over(api: Api) -> None:
    sid = api.ready_server()
    api.run_launch("start_test", sid)
    api.mgn.disconnect_from_service(sourceServerID=sid)
    for state in ("CUTOVER", "READY_FOR_TEST", "READY_FOR_CUTOVER"):
        err = _error(api.mgn.change_server_life_cycle_state, "ConflictException", sourceServerID=sid,
                     lifeCycle={"state": state})
        assert err["resourceId"] == sid
    assert api.state(sid) == "DISCONNECTED"
