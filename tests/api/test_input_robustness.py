"""Each input that once made rehost answer 500, or store what it could not read back, is now a modelled
client error: MGN's ValidationException (JSON APIs) or EC2's codes in valid XML. Issue 10 lists them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from console.httpclient import ConsoleClient
from ec2.rawclient import signed_form_post
from helpers import cli_json, rehost_cli
from rehost.api.agent.params import agent_model
from rehost.api.core.errors import AwsError
from rehost.api.core.model import (
    MAX_BODY_BYTES,
    RestJsonService,
    sanitize,
    serialize,
    service_model,
    validate,
)
from rehost.db import repo
from rehost.db.store import Store

from .agentapi import AgentApiError, send
from .conftest import Api


def _mgn(api: Api, path: str, body: bytes) -> tuple[int, str, dict[str, Any]]:
    status, headers, payload = send(api.server.endpoint, "POST", path, body, *api.key)
    return status, headers.get("x-amzn-errortype", ""), json.loads(payload or b"{}")


def _cannot_parse(api: Api, path: str, body: bytes) -> None:
    status, code, doc = _mgn(api, path, body)
    assert (status, code, doc.get("reason")) == (400, "ValidationException", "cannotParse"), (body[:80], doc)


# -- JSON parsing, on both JSON APIs --------------------------------------------------------------------

HOSTILE_BODIES = [
    b'{"maxResults": NaN}',
    b'{"maxResults": Infinity}',
    b'{"maxResults": -Infinity}',
    b'{"maxResults": 1e999}',
    b'{"maxResults": ' + b"9" * 5000 + b"}",
    b'{"filters": {"sourceServerIDs": ["\\ud800"]}}',
    b'{"filters": {"sourceServerIDs": ["\\udfff x"]}}',
    b'{"filters": {"sourceServerIDs": ["a\\u0000b"]}}',
    b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"x": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}",
    b"\xff\xfe{}",
    b"[{}]",
    b'"just a string"',
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_json_is_cannot_parse_on_mgn_and_agent_api(api: Api, body: bytes) -> None:
    _cannot_parse(api, "/DescribeSourceServers", body)
    _cannot_parse(api, "/agent/GetAgentCommandForMgn", body)


def test_a_body_over_the_cap_is_refused(api: Api) -> None:
    big = b'{"filters": {"sourceServerIDs": ["' + b"s" * MAX_BODY_BYTES + b'"]}}'
    _cannot_parse(api, "/DescribeSourceServers", big)
    _cannot_parse(api, "/agent/SendAgentLogsForMgn", big)


def test_an_oversized_body_is_refused_before_authentication(api: Api) -> None:
    """No surface holds more than the cap of an unauthenticated body in memory: it stops reading there."""
    import urllib.error
    import urllib.request

    big = b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}"
    for path, ctype in (("/DescribeSourceServers", "application/json"), ("/agent/GetAgentCommandForMgn", "application/json"),
                        ("/", "application/x-www-form-urlencoded")):
        request = urllib.request.Request(api.server.endpoint + path, data=big, method="POST",
                                         headers={"Content-Type": ctype})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=60)
        assert info.value.code == 400, path
        text = info.value.read().decode()
        assert "cannotParse" in text or "MalformedQueryString" in text, (path, text)


def test_the_deepest_legitimate_input_is_well_inside_the_depth_bound() -> None:
    from rehost.api.core.model import MAX_DEPTH

    def depth(shape: Any, seen: tuple[str, ...] = ()) -> int:
        if shape.name in seen:
            return 0
        children = {"structure": lambda: list(shape.members.values()), "list": lambda: [shape.member],
                    "map": lambda: [shape.value]}.get(shape.type_name)
        if children is None:
            return 0
        return 1 + max([depth(c, (*seen, shape.name)) for c in children()] + [0])

    for model in (service_model("mgn"), agent_model()):
        deepest = max(depth(model.operation_model(o).input_shape) for o in model.operation_names
                      if model.operation_model(o).input_shape is not None)
        assert deepest * 2 <= MAX_DEPTH, (model.service_name, deepest)


# -- validation at any depth ----------------------------------------------------------------------------

def test_wrong_types_at_any_depth_are_validation_errors(api: Api) -> None:
    sid = api.agent.register()["sourceServerID"]
    cases = [
        ("/DescribeSourceServers", {"filters": [{}]}, "filters"),
        ("/DescribeSourceServers", {"filters": {"sourceServerIDs": [{}]}}, "filters.sourceServerIDs[0]"),
        ("/DescribeSourceServers", {"filters": {"sourceServerIDs": [None]}}, "filters.sourceServerIDs[0]"),
        ("/DescribeSourceServers", {"maxResults": 2**63}, "maxResults"),
        ("/DescribeSourceServers", {"maxResults": -(2**64)}, "maxResults"),
        ("/DescribeSourceServers", {"maxResults": True}, "maxResults"),
        ("/DescribeSourceServers", {"maxResults": 1.5}, "maxResults"),
        ("/UpdateLaunchConfiguration", {"sourceServerID": sid, "postLaunchActions": {"ssmDocuments": [{}]}},
         "postLaunchActions.ssmDocuments[0].actionName"),
        ("/UpdateReplicationConfiguration", {"sourceServerID": sid, "stagingAreaTags": {"k": 1}},
         "stagingAreaTags[k]"),
        ("/UpdateReplicationConfiguration", {"sourceServerID": sid, "bandwidthThrottling": -1}, "bandwidthThrottling"),
    ]
    for path, body, field in cases:
        status, code, doc = _mgn(api, path, json.dumps(body).encode())
        assert (status, code) == (400, "ValidationException"), (body, doc)
        assert doc["fieldList"][0]["name"] == field, (body, doc)


def test_unknown_mgn_members_are_dropped_not_passed_on(api: Api) -> None:
    sid = api.agent.register()["sourceServerID"]
    status, _, doc = _mgn(api, "/DescribeSourceServers", json.dumps(
        {"filters": {"sourceServerIDs": [sid], "bogus": 1}, "bogus": {"x": [1]}, "maxResults": None}).encode())
    assert status == 200 and [i["sourceServerID"] for i in doc["items"]] == [sid]
    status, _, doc = _mgn(api, "/UpdateLaunchConfiguration", json.dumps(
        {"sourceServerID": sid, "name": "renamed", "notAMember": "x", "accountID": "123456789012"}).encode())
    assert status == 200 and doc["name"] == "renamed" and "notAMember" not in doc


def test_query_string_integers_are_ascii_digits(api: Api) -> None:
    for value in ("%C2%B2", "1_0", "%201", "9" * 40):
        status, headers, _ = send(api.server.endpoint, "GET", f"/ListExports?maxResults={value}", b"", *api.key)
        assert 400 <= status < 500, value


def test_validate_unit_cases() -> None:
    mgn = service_model("mgn")
    tags = mgn.shape_for("TagsMap")
    with pytest.raises(AwsError):
        validate(tags, {1: "x"}, "tags")  # a non-string map key (only Python callers can make one)
    with pytest.raises(AwsError):
        validate(mgn.shape_for("PositiveInteger"), float("nan"), "n")
    agent = RestJsonService(agent_model(), reject_unknown=True)
    op = agent.model.operation_model("GetAgentCommandForMgn")
    with pytest.raises(AwsError) as info:
        agent.check_input(op, agent.parse_input(op, {}, "", {}, b'{"sourceServerID": "s-00000000000000000", "extra": 1}'))
    assert info.value.fields["fieldList"][0]["name"] == "extra"


# -- the agent API declares its shapes -------------------------------------------------------------------

def _servers(api: Api) -> set[str]:
    return {i["sourceServerID"] for i in api.mgn.describe_source_servers()["items"]}


def _register_body(**source_properties: Any) -> dict[str, Any]:
    props = {"cpus": [{"cores": 2, "modelName": "QEMU"}], "disks": [{"deviceName": "/dev/sda", "bytes": 1 << 30}],
             "lastUpdatedDateTime": "2024-01-01T00:00:00.000000Z", **source_properties}
    return {"hints": {"hostname": "robust-1", "macAddresses": ["52:54:00:99:00:01"]}, "sourceProperties": props,
            "devices": [{"deviceName": "/dev/sda", "bytes": 1 << 30, "isBoot": True}]}


def test_agent_api_refuses_what_it_could_not_read_back(api: Api) -> None:
    sid = api.agent.register()["sourceServerID"]
    before = _servers(api)
    bad: list[tuple[str, dict[str, Any]]] = [
        ("RegisterAgentForMgn", _register_body(lastUpdatedDateTime="yesterday")),
        ("RegisterAgentForMgn", _register_body(lastUpdatedDateTime="2024-02-31T00:00:00Z")),
        ("RegisterAgentForMgn", _register_body(disks=[{"deviceName": "/dev/sda"}])),
        ("RegisterAgentForMgn", _register_body(disks=[{"deviceName": "/dev/sda", "bytes": -1}])),
        ("RegisterAgentForMgn", _register_body(cpus=[{"cores": None, "modelName": "x"}])),
        ("RegisterAgentForMgn", _register_body(cpus=[{"cores": 0}])),
        ("RegisterAgentForMgn", _register_body(cpus=[{}])),
        ("RegisterAgentForMgn", {**_register_body(), "devices": [{"deviceName": "/dev/sda"}]}),
        ("RegisterAgentForMgn", {**_register_body(), "devices": [{}]}),
        ("RegisterAgentForMgn", {**_register_body(), "unknownMember": 1}),
        ("UpdateAgentSourcePropertiesForMgn", {"sourceServerID": sid, "sourceProperties": {"cpus": [{"cores": None}]}}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "lastSnapshot": {"snapshotID": "snap-1",
                                                                                       "dateTime": "2024-01-01T00:00:00"}}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "lastSnapshot": {"snapshotID": "snap-1",
                                                                                       "dateTime": "not a date"}}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "lastSnapshot": {"dateTime": "2024-01-01T00:00:00Z"}}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "replicatedDisks": [{}]}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "lagSeconds": -1}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "commandResults": [{"commandID": "x"}]}),
        ("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "error": {"rawError": "no error code"}}),
        ("SendAgentMetricsForMgn", {"sourceServerID": sid, "metrics": [{"cpuPercent": 1, "memoryPercent": 1,
                                                                        "timestamp": 1e300}]}),
        ("SendAgentMetricsForMgn", {"sourceServerID": sid, "metrics": [{"cpuPercent": 101, "memoryPercent": 1}]}),
        ("GetAgentCommandForMgn", {"sourceServerID": "s-0000"}),
    ]
    for action, body in bad:
        with pytest.raises(AgentApiError) as info:
            api.agent.call(action, body)
        assert (info.value.status, info.value.code) == (400, "ValidationException"), (action, body, info.value)
    assert _servers(api) == before
    item = api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]
    assert item["sourceProperties"]["cpus"][0]["cores"] == 2
    assert "lastSnapshotDateTime" not in item["dataReplicationInfo"]


def test_agent_operations_are_found_by_their_exact_name(api: Api, tmp_path: Path) -> None:
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "mgn:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "mgn:RegisterAgentForMgn", "Resource": "*"}]}
    doc = tmp_path / "policy.json"
    doc.write_text(json.dumps(policy))
    cli_json("iam", "create-user", "no-register", data_dir=api.server.data_dir, env=api.server.env)
    rehost_cli("iam", "put-user-policy", "no-register", "deny-register", "--policy-document", f"file://{doc}",
               data_dir=api.server.data_dir, env=api.server.env)
    key = api.server.access_key("no-register")
    body = json.dumps(_register_body()).encode()
    status, headers, _ = send(api.server.endpoint, "POST", "/agent/RegisterAgentForMgn", body, *key)
    assert (status, headers["x-amzn-errortype"]) == (403, "AccessDeniedException")
    for variant in ("Register_AgentForMgn", "registerAgentForMgn", "REGISTERAGENTFORMGN", "register_agent_for_mgn",
                    "RegisterAgentForMgn%20", "Register%41gentForMgn", "GetAgentInstallationAssetsForMgn"):
        status, headers, _ = send(api.server.endpoint, "POST", f"/agent/{variant}", body, *key)
        assert (status, headers["x-amzn-errortype"]) == (404, "UnknownOperationException"), variant


def test_agent_model_matches_the_agent_service() -> None:
    from rehost.api.agent.service import AgentService
    from rehost.api.app import snake

    served = {name for name in dir(AgentService) if name.endswith("_for_mgn")}
    assert {snake(o) for o in agent_model().operation_names} == served


def test_agent_model_accepts_what_the_real_agent_sends() -> None:
    """The bodies rehost's agent builds (discovery on this machine) pass the model's validation."""
    from rehost.agent import discovery

    model = agent_model()
    disk = discovery.Disk("/dev/vda", "/dev/vda", 8 << 30, True, (252, 0))
    bodies = {
        "RegisterAgentForMgn": {"hints": discovery.identification_hints("upid-1"),
                                "sourceProperties": discovery.source_properties([disk]),
                                "devices": [disk.as_device()], "tags": {"a": "b"}, "noReplication": True},
        "UpdateAgentSourcePropertiesForMgn": {"sourceServerID": "s-0123456789abcdef0",
                                              "sourceProperties": discovery.source_properties([disk])},
        "SendAgentMetricsForMgn": {"sourceServerID": "s-0123456789abcdef0",
                                   "metrics": [discovery.Utilization().sample()]},
        "UpdateAgentReplicationInfoForMgn": {
            "sourceServerID": "s-0123456789abcdef0", "dataReplicationState": "CONTINUOUS", "lagSeconds": 0.2,
            "replicatedDisks": [{"deviceName": "/dev/vda", "totalStorageBytes": 1, "replicatedStorageBytes": 1,
                                 "rescannedStorageBytes": 0, "backloggedStorageBytes": 0}],
            "initialSyncComplete": True, "lastSnapshot": {"snapshotID": "snap-0123456789abcdef0",
                                                          "dateTime": "2024-01-01T00:00:00.123Z"},
            "error": {"error": "UNSTABLE_NETWORK", "rawError": "x" * 65536},
            "commandResults": [{"commandID": "cmd-0123456789abcdef0", "status": "SUCCEEDED", "snapshotID": ""},
                               {"commandID": "cmd-0123456789abcdef1", "status": "FAILED", "message": "why"}]},
        "UpdateAgentBacklogForMgn": {"sourceServerID": "s-0123456789abcdef0", "backloggedStorageBytes": 0,
                                     "lagSeconds": 3.5},
    }
    for name, body in bodies.items():
        validate(model.operation_model(name).input_shape, json.loads(json.dumps(body)), "", reject_unknown=True)


# -- stored values the serializer cannot read back ------------------------------------------------------

def test_serializer_leaves_out_malformed_stored_values() -> None:
    shape = service_model("mgn").operation_model("DescribeSourceServers").output_shape
    doc = {"items": [
        {"sourceServerID": "s-0123456789abcdef0", "isArchived": "no",
         "sourceProperties": {"cpus": [{"cores": None, "modelName": "x"}, "garbage", {"cores": "2"}],
                              "disks": [{"deviceName": "/dev/sda"}], "ramBytes": float("nan"), "os": "linux"},
         "dataReplicationInfo": {"replicatedDisks": "all", "lastSnapshotDateTime": "2024-01-01T00:00:00Z"},
         "tags": {"ok": "1", "bad": {"x": 1}}},
        "not an object"]}
    out = serialize(shape, doc)
    assert out == {"items": [{
        "sourceServerID": "s-0123456789abcdef0",
        "sourceProperties": {"cpus": [{"modelName": "x"}, {}], "disks": [{"deviceName": "/dev/sda"}]},
        "dataReplicationInfo": {"lastSnapshotDateTime": "2024-01-01T00:00:00Z"},
        "tags": {"ok": "1"}}]}


def test_sanitize_keeps_the_service_terms_and_drops_what_does_not_fit() -> None:
    shape = service_model("mgn").operation_model("DescribeSourceServers").output_shape
    good = {"items": [{"sourceServerID": "s-0123456789abcdef0", "isArchived": False, "tags": {"a": "b"},
                       "sourceProperties": {"cpus": [{"cores": 2, "modelName": "x"}], "ramBytes": 1 << 30,
                                            "lastUpdatedDateTime": "2024-01-01T00:00:00Z"}}]}
    assert sanitize(shape, good) == good
    bad = json.loads(json.dumps(good))
    bad["items"][0]["sourceProperties"]["cpus"][0]["cores"] = None
    bad["items"][0]["sourceProperties"]["ramBytes"] = "lots"
    assert sanitize(shape, bad)["items"][0]["sourceProperties"] == {
        "cpus": [{"modelName": "x"}], "lastUpdatedDateTime": "2024-01-01T00:00:00Z"}


def test_a_malformed_stored_server_does_not_break_describe(api: Api) -> None:
    sid = api.agent.register()["sourceServerID"]
    store = Store(api.server.env.get("REHOST_DATABASE_URL") or f"sqlite:///{api.server.data_dir / 'rehost.db'}")
    with store.transaction() as conn:
        doc = repo.load_server(conn, sid, for_update=True)
        doc["sourceProperties"]["cpus"] = [{"cores": None}]
        doc["sourceProperties"]["disks"] = [{"deviceName": "/dev/sda", "bytes": "lots"}]
        doc["dataReplicationInfo"]["replicatedDisks"] = "broken"
        doc["dataReplicationInfo"]["etaDateTime"] = 12
        repo.save_server(conn, doc)
    item = api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]
    assert item["sourceServerID"] == sid
    assert item["sourceProperties"]["disks"] == [{"deviceName": "/dev/sda"}]
    assert "replicatedDisks" not in item["dataReplicationInfo"]
    console = ConsoleClient(api.server.endpoint)
    assert console.sign_in(*api.key).status == 303
    for page in ("/console/servers", f"/console/servers/{sid}", f"/console/servers/{sid}?tab=replication",
                 f"/console/servers/{sid}?tab=launch", f"/console/servers/{sid}?tab=info"):
        assert console.get(page).status < 500, page


# -- EC2 query protocol ---------------------------------------------------------------------------------

def _ec2(api: Api, form: dict[str, str]) -> tuple[int, str, str]:
    status, text = signed_form_post(api.server.endpoint, api.key, form, region=api.server.region)
    root = ET.fromstring(text)  # every answer is well-formed XML
    code = root.findtext("./Errors/Error/Code") or ""
    return status, code, root.findtext("./Errors/Error/Message") or ""


def test_ec2_answers_are_valid_xml_with_ec2_codes(api: Api) -> None:
    base = {"Action": "DescribeInstances", "Version": "2016-11-15"}
    cases = [
        ({**base, "InstanceId.\u00b2": "i-1"}, "InvalidParameterValue"),
        ({**base, "InstanceId.0": "i-1"}, "InvalidParameterValue"),
        ({**base, "InstanceId.99999999999": "i-1"}, "InvalidParameterValue"),
        ({**base, "InstanceId.١": "i-1"}, "InvalidParameterValue"),
        ({**base, "MaxResults": "\u00b2"}, "InvalidParameterValue"),
        ({**base, "MaxResults": "5\x01\x1b[31m"}, "InvalidParameterValue"),
        ({**base, "MaxResults": "9" * 5000}, "InvalidParameterValue"),
        ({**base, "NoSuchParameter": "x"}, "UnknownParameter"),
        ({**base, "InstanceId.1.0": "i-1"}, "UnknownParameter"),  # a sub-key of a string item
        ({**base, "Filter.1.Name": "a", "Filter.1.Bogus": "b"}, "UnknownParameter"),
        ({**base, **{f"InstanceId.{i}": "i-1" for i in range(1, 5002)}}, "MalformedQueryString"),
        ({**base, "Filter.1.Name": "x\x00"}, "InvalidParameterValue"),  # never storable nor answerable
        ({**base, "Filter.1.Name": "\ufffe"}, "InvalidParameterValue"),
        ({**base, "Filter.1.Name": "tab\tand\nnewline"}, ""),
        ({"Action": "Describe\x00\x07Instances", "Version": "2016-11-15"}, "InvalidAction"),
        ({"Action": "DescribeInstances"}, "MissingParameter"),
        ({"Version": "2016-11-15"}, "MissingAction"),
        ({"Action": "CreateLaunchTemplateVersion", "Version": "2016-11-15"}, "MissingParameter"),
    ]
    for form, code in cases:
        status, got, message = _ec2(api, form)
        assert got == code, (form, got, message)
        assert status < 500
