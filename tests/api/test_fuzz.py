"""Model-driven fuzzing of every API surface of one real `rehost server` (SQLite).

Requests are generated from the models themselves: botocore's ``mgn`` (every operation, implemented or
not), the agent API's own model (`rehost.api.agent.params`) and botocore's ``ec2`` (the subset rehost
serves, plus actions it does not). Each starts as a plausible input and is then, most of the time,
mutated: wrong types, missing required members, huge strings and integers, NaN/Infinity, deep nesting,
lone surrogates, control characters, ``[{}]``, unknown members, unicode digits in EC2 list indexes,
garbage bodies. Every request is signed with a valid admin key, so each one reaches validation.

Asserted: no answer is a 5xx; every error is a modelled one (JSON with a known ``x-amzn-ErrorType`` for
MGN and the agent API; valid XML ``<Response><Errors><Error><Code>`` with an EC2 code for EC2); the server
is alive at the end and logged no traceback; and a canary source server, which every request that must
be refused names, reads back exactly as before.

Seeded and reproducible: ``REHOST_FUZZ_SEED`` and ``REHOST_FUZZ_REQUESTS`` override the defaults; a
failure names the seed and the index of each offending request.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import re
import string
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import OperationModel, ServiceModel, Shape
from botocore.serialize import create_serializer

from helpers import RunningServer
from rehost.api.agent.params import agent_model
from rehost.api.core.dispatch import snake
from rehost.api.ec2.handler import OPERATIONS as EC2_SERVED
from rehost.api.mgn.service import MgnService

from .conftest import ServerFactory, make_api

SEED = int(os.environ.get("REHOST_FUZZ_SEED", "20261201"))
TOTAL = int(os.environ.get("REHOST_FUZZ_REQUESTS", "3000"))
TALLY_CODES = bool(os.environ.get("REHOST_FUZZ_TALLY"))  # print answers by status, code and reason
SHARE = {"mgn": 0.5, "agent": 0.25, "ec2": 0.25}
TIME_BUDGET = 120.0  # seconds for the requests themselves; the suite aims at well under half of that

MGN = botocore.session.get_session().get_service_model("mgn")
EC2 = botocore.session.get_session().get_service_model("ec2")
AGENT = agent_model()

#: Codes a signed, well-routed JSON request may be answered with besides the models' error shapes.
JSON_EXTRA_CODES = {"UnknownOperationException"}
EC2_CODES = {"InvalidParameterValue", "MissingParameter", "UnknownParameter", "InvalidAction", "MissingAction",
             "MalformedQueryString", "DryRunOperation", "UnauthorizedOperation", "InvalidParameterCombination",
             "IncorrectState", "IncorrectInstanceState"}
EC2_CODE = re.compile(r"(Invalid|Incorrect)[A-Za-z]+(\.[A-Za-z]+)?")


# -- values from shapes -----------------------------------------------------------------------------------

_PREFIX = re.compile(r"^\^?([a-z]+)-")


def _string(shape: Shape, rng: random.Random) -> str:
    md = shape.metadata
    if shape.enum:
        return str(rng.choice(shape.enum))
    low, high = int(md.get("min", 0)), int(md.get("max", 24))
    pattern = md.get("pattern", "")
    if "arn:" in pattern or shape.name.lower().endswith("arn"):
        return f"arn:aws:mgn:us-east-1:123456789012:source-server/s-{rng.getrandbits(68):017x}"[:high]
    prefix = _PREFIX.match(pattern)
    if prefix:
        return f"{prefix.group(1)}-{rng.getrandbits(68):017x}"
    if "timestampFormat" in shape.serialization or "DatetimeString" in shape.name:
        return "2024-05-06T07:08:09.000Z"
    n = rng.randint(low, max(low, min(high, 24)))
    return "".join(rng.choice(string.ascii_letters + string.digits + "-_./") for _ in range(n))


def generate(shape: Shape, rng: random.Random, depth: int = 0) -> Any:
    """A plausible value of ``shape``: required members always, others at random, small collections."""
    t, md = shape.type_name, shape.metadata
    if t == "structure":
        out = {}
        for name, member in shape.members.items():
            if member.serialization.get("location"):
                continue
            if name in shape.required_members or (depth < 5 and rng.random() < 0.4):
                out[name] = generate(member, rng, depth + 1)
        return out
    if t == "list":
        low = int(md.get("min", 0))
        return [generate(shape.member, rng, depth + 1) for _ in range(rng.randint(low, max(low, 2)))]
    if t == "map":
        return {_string(shape.key, rng) or "k": generate(shape.value, rng, depth + 1) for _ in range(rng.randint(0, 2))}
    if t == "string":
        return _string(shape, rng)
    if t in ("integer", "long"):
        low = int(md.get("min", 0))
        return rng.randint(low, min(int(md.get("max", low + 1000)), low + 1000))
    if t in ("double", "float"):
        return round(rng.uniform(float(md.get("min", 0)), float(md.get("max", 100))), 3)
    if t == "boolean":
        return rng.random() < 0.5
    if t == "timestamp":
        return "2024-05-06T07:08:09Z" if "timestampFormat" in shape.serialization else rng.choice(
            [1714979289, "2024-05-06T07:08:09Z"])
    if t == "blob":
        return base64.b64encode(rng.randbytes(8)).decode()
    return None


# -- mutations ----------------------------------------------------------------------------------------------

RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, '"\\ud800"', '"x\\udfffy"',
              '"\\u0000"', "[" * 60 + "]" * 60, '{"a":' * 40 + "1" + "}" * 40, "[" * 5000]


@dataclass
class Raw:
    """JSON text put in a document as is (what ``json.dumps`` cannot write)."""

    text: str


def _paths(value: Any, shape: Shape, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Shape]]:
    """Every (path, shape) inside a generated value."""
    yield path, shape
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                yield from _paths(item, shape.members[key], (*path, key))
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, shape.member, (*path, i))
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, shape.value, (*path, key))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc[path[0]] = _set(doc[path[0]], path[1:], value)
    return doc


def _wrong_type(shape: Shape, rng: random.Random) -> Any:
    t = shape.type_name
    options: list[Any] = [123, -5, 1.5, True, "text", [], {}, [1, "a"], {"k": "v"}]
    ok = {"structure": (dict,), "map": (dict,), "list": (list,), "string": (str,), "boolean": (bool,),
          "integer": (int,), "long": (int,), "double": (int, float), "float": (int, float),
          "timestamp": (int, float, str), "blob": (str,)}[t]
    wrong = [o for o in options if not isinstance(o, ok) or (t in ("integer", "long", "double", "float")
                                                              and isinstance(o, bool))]
    if t in ("integer", "long"):
        wrong.append(1.5)
    return rng.choice(wrong)


def _refused(shape: Shape) -> bool:
    """Whether ``[{}]`` put where ``shape`` belongs is certainly invalid."""
    return not (shape.type_name == "list" and shape.member.type_name == "structure"
                and not shape.member.required_members)


def mutate(doc: dict[str, Any], shape: Shape, rng: random.Random) -> tuple[Any, str, bool]:
    """(mutated document, what was done, whether the result must be refused)."""
    kind = rng.choice(["wrong_type", "missing_required", "raw", "raw", "huge_string", "huge_int", "control_chars",
                       "list_of_empty", "unknown_member", "null", "deep_python", "garbage"])
    paths = list(_paths(doc, shape))[1:]
    if kind == "missing_required":
        holders = [(p, s) for p, s in [((), shape), *paths]
                   if s.type_name == "structure" and s.required_members]
        if holders:
            p, s = rng.choice(holders)
            target = doc
            for step in p:
                target = target[step]
            if isinstance(target, dict):
                target.pop(rng.choice(s.required_members), None)
                return doc, kind, True
        kind = "wrong_type"
    if kind == "garbage":
        return rng.choice([b"", b"{", b"[]", b"null", b"1", b'"s"', b"\xff\xfe\x00", rng.randbytes(64),
                           json.dumps(doc).encode("utf-16"), json.dumps(doc).encode()[:-1]]), kind, False
    if kind == "unknown_member":
        holders = [(p, s) for p, s in [((), shape), *paths] if s.type_name == "structure"]
        p, _ = rng.choice(holders)
        target = doc
        for step in p:
            target = target[step]
        if isinstance(target, dict):
            target[f"zz{rng.randint(0, 99)}"] = rng.choice([1, "x", {"a": [1]}, None])
        return doc, kind, False
    if not paths:
        return ({"zzUnknown": Raw(rng.choice(RAW_TOKENS))}, "raw", True) if kind == "raw" else (doc, "none", False)
    p, s = rng.choice(paths)
    if kind == "wrong_type":
        return _set(doc, p, _wrong_type(s, rng)), kind, True
    if kind == "raw":
        return _set(doc, p, Raw(rng.choice(RAW_TOKENS))), kind, True
    if kind == "huge_string":
        return _set(doc, p, "x" * rng.choice([257, 4097, 70_000])), kind, False
    if kind == "huge_int":
        return _set(doc, p, rng.choice([2**63, -(2**63) - 1, 2**64 + 1, 10**19, -1, 2**31])), kind, False
    if kind == "control_chars":
        return _set(doc, p, rng.choice(["\x01\x02\x1b[31m", "a\tb\nc\rd", "\x7f\x85\u2028", "\ufffe\uffff"])), kind, False
    if kind == "list_of_empty":
        return _set(doc, p, [{}]), kind, _refused(s)
    if kind == "null":
        return _set(doc, p, None), kind, False
    # deep_python: nesting within the bound, in the wrong place
    deep: Any = 1
    for _ in range(rng.randint(5, 25)):
        deep = [deep] if rng.random() < 0.5 else {"d": deep}
    return _set(doc, p, deep), kind, s.type_name not in ("list", "structure", "map")


def dumps(doc: Any) -> bytes:
    if isinstance(doc, bytes):
        return doc
    raws: list[str] = []

    def default(obj: Any) -> Any:
        if isinstance(obj, Raw):
            raws.append(obj.text)
            return f"@@RAW{len(raws) - 1}@@"
        raise TypeError(obj)

    text = json.dumps(doc, default=default)
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', raw)
    return text.encode("utf-8", "surrogatepass")


# -- requests ------------------------------------------------------------------------------------------------

@dataclass
class Request:
    index: int
    surface: str  # mgn | agent | ec2
    operation: str
    mutation: str
    method: str
    path: str
    body: bytes
    content_type: str
    refused: bool = False  # the request must be refused: it names the canary


    def describe(self) -> str:
        return f"#{self.index} {self.surface} {self.operation} ({self.mutation}) {self.method} {self.path[:80]} {self.body[:120]!r}"


def _target(doc: dict[str, Any], canary: dict[str, str]) -> dict[str, Any]:
    """Point a request at the canary: a request that must be refused must not touch it."""
    for key, value in canary.items():
        if key in doc:
            doc[key] = [value] if isinstance(doc[key], list) else value
    return doc


def json_request(index: int, surface: str, model: ServiceModel, op_name: str, rng: random.Random,
                 canary: dict[str, str], victim: dict[str, str]) -> Request:
    op = model.operation_model(op_name)
    shape = op.input_shape
    doc: Any = generate(shape, rng) if shape is not None else {}
    labels: dict[str, str] = {}
    query: dict[str, str] = {}
    for name, member in (shape.members.items() if shape is not None else []):
        where = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if where == "uri":
            labels[wire] = str(generate(member, rng))
        elif where == "querystring" and rng.random() < 0.5:
            query[wire] = rng.choice([str(generate(member, rng)), "\u00b2", "-1", "9" * 30, "x\x01"])
    mutation, refused = "valid", False
    if rng.random() < 0.6:  # requests that may be valid act on the victim, which exists, half the time
        doc = _target(doc, victim)
    if rng.random() < 0.8 and shape is not None:
        targeted = _target(json.loads(json.dumps(doc)), canary)
        mutated, mutation, refused = mutate(targeted, shape, rng)
        if refused:  # named the canary before the mutation, so that a mutated ID is not restored
            doc = mutated
        else:
            doc, mutation, _ = mutate(doc, shape, random.Random(rng.random()))
    path = op.http["requestUri"].split("?", 1)[0]
    for wire, value in labels.items():
        path = path.replace("{" + wire + "+}", quote(value, safe="")).replace("{" + wire + "}", quote(value, safe=""))
    if query:
        path += "?" + urlencode(query)
    body = dumps(doc) if op.http["method"] != "GET" else b""
    return Request(index, surface, op_name, mutation, op.http["method"], path, body, "application/json", refused)


EC2_SERIALIZER = create_serializer("ec2")


def _ec2_form(op: OperationModel, rng: random.Random) -> dict[str, str]:
    params = generate(op.input_shape, rng) if op.input_shape is not None else {}
    for name, member in (op.input_shape.members.items() if op.input_shape is not None else []):
        if member.type_name == "blob" and name in params:
            params[name] = base64.b64decode(params[name])
        if member.type_name == "timestamp" and name in params:
            params.pop(name)
    try:
        return dict(EC2_SERIALIZER.serialize_to_request(params, op)["body"])
    except Exception:  # a generated value botocore will not serialize: start from the bare action
        return {"Action": op.name, "Version": EC2.api_version}


#: EC2 mutations after which no request is valid (those requests name the canary's launch template).
EC2_REFUSED = {"unicode_index", "zero_index", "huge_index", "unknown_param", "bad_number", "bad_action"}


def _ec2_wire(member: Shape, name: str) -> str:
    """A member's name in an EC2 query, as botocore's EC2 serializer writes it."""
    ser = member.serialization
    if "queryName" in ser:
        return str(ser["queryName"])
    return str(ser["name"])[0].upper() + str(ser["name"])[1:] if "name" in ser else name


def ec2_request(index: int, rng: random.Random, canary_template: str, victim_template: str) -> Request:
    served = sorted(EC2_SERVED)
    name = rng.choice(served) if rng.random() < 0.9 else rng.choice(EC2.operation_names)
    op = EC2.operation_model(name)
    form = _ec2_form(op, rng)
    if "LaunchTemplateId" in form and rng.random() < 0.6:
        form["LaunchTemplateId"] = victim_template
        form.pop("LaunchTemplateName", None)
    mutation, refused = "valid", False
    body: bytes | None = None
    if rng.random() < 0.8:
        mutation = rng.choice(["unicode_index", "zero_index", "huge_index", "unknown_param", "drop_required",
                               "control_chars", "bad_number", "deep_key", "bad_action", "garbage"])
        keys = [k for k in form if k not in ("Action", "Version")]
        lists = [_ec2_wire(m, name) for name, m in op.input_shape.members.items()
                 if m.type_name == "list"] if op.input_shape is not None else []
        list_key = rng.choice(lists or ["InstanceId"])
        refused = mutation in EC2_REFUSED or (mutation == "drop_required" and bool(
            op.input_shape is not None and op.input_shape.required_members))
        if refused and ("LaunchTemplateId" in form or name in ("CreateLaunchTemplateVersion", "ModifyLaunchTemplate")):
            form["LaunchTemplateId"] = canary_template
        if mutation == "unicode_index":
            form[f"{list_key}.{rng.choice(['²', '١', '٣', '𝟙', '1²', '¹'])}"] = "x"
        elif mutation == "zero_index":
            form[f"{list_key}.{rng.choice(['0', '01', '-1', '1.0', ''])}"] = "x"
        elif mutation == "huge_index":
            form[f"{list_key}.{rng.choice([1001, 10**6, 10**40])}"] = "i-1"
        elif mutation == "unknown_param":
            form[rng.choice(["Bogus", "instanceId", "Action2", "X" * 300])] = "1"
        elif mutation == "drop_required" and op.input_shape is not None and op.input_shape.required_members:
            for member in op.input_shape.required_members:
                wire = _ec2_wire(op.input_shape.members[member], member)
                form = {k: v for k, v in form.items() if k.split(".")[0] != wire}
        elif mutation == "control_chars" and keys:
            form[rng.choice(keys)] = rng.choice(["\x00", "a\x01\x02", "\x1b[2J", "\ud800", "\uffff", "<&>\"'"])
        elif mutation == "bad_number":
            form[rng.choice(["MaxResults", "MaxResults", "MinCount"])] = rng.choice(
                ["²", "nan", "inf", "1e999", "9" * 5000, "-0x10", "1_000", " 5", "١٢"])
        elif mutation == "deep_key":
            form[".".join(["Filter"] + ["1"] * rng.randint(2, 400))] = "x"
        elif mutation == "bad_action":
            form["Action"] = rng.choice(["", "Describe\x00Instances", "<Boom/>", "RunInstances", "x" * 2000, "\ud800"])
        else:
            body = rng.choice([b"Action=DescribeInstances&Version=2016-11-15&%ff%fe=1", b"\xff\xfe\xfd",
                               b"&&&===", b"Action", rng.randbytes(100), b"Action=DescribeInstances&" + b"a=1&" * 600])
            mutation = "garbage"
    if body is None:
        body = urlencode({k: str(v).encode("utf-8", "surrogatepass") for k, v in form.items()}).encode()
    return Request(index, "ec2", name, mutation, "POST", "/", body, "application/x-www-form-urlencoded; charset=utf-8",
                   refused)


_ODD_SEGMENTS = ["%00", "%ff%fe", "..%2f..%2fetc", "%ED%A0%80", "Register_AgentForMgn", "registeragentformgn",
                 "DescribeSourceServers%20", "%2e", "x" * 3000, "%C2%B2", "tags", "tags/", "\u00e9"]


def odd_path_request(index: int, rng: random.Random) -> Request:
    """A request to a path no operation has, or with a method it does not take."""
    surface = rng.choice(["mgn", "agent"])
    segment = rng.choice(_ODD_SEGMENTS + [quote(rng.choice(MGN.operation_names))])
    path = ("/agent/" if surface == "agent" else "/") + quote(segment, safe="%/")
    method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "POST"])
    body = dumps(rng.choice([{}, {"sourceServerID": "s-0123456789abcdef0"}, b"garbage"]))
    return Request(index, surface, "(no operation)", "odd_path", method, path, body, "application/json")


def plan(seed: int, total: int, canary: dict[str, str], canary_template: str,
         victim: dict[str, str], victim_template: str) -> list[Request]:
    """``total`` requests from ``seed``: those that must be refused name the canary; of the others, many
    name the victim (a source server and its launch template that exist, and that they may change)."""
    rng = random.Random(seed)
    mgn_ops, agent_ops = sorted(MGN.operation_names), sorted(AGENT.operation_names)
    # Every operation twice; then mostly those rehost implements (the others answer before validation).
    served = [o for o in mgn_ops if getattr(MgnService, snake(o), None) is not None]
    out: list[Request] = []
    mgn_sent = 0
    for i in range(total):
        pick = rng.random()
        if rng.random() < 0.03:
            out.append(odd_path_request(i, rng))
        elif pick < SHARE["mgn"]:
            name = mgn_ops[mgn_sent % len(mgn_ops)] if mgn_sent < 2 * len(mgn_ops) else rng.choice(
                served if rng.random() < 0.85 else mgn_ops)
            mgn_sent += 1
            out.append(json_request(i, "mgn", MGN, name, rng, canary, victim))
        elif pick < SHARE["mgn"] + SHARE["agent"]:
            out.append(json_request(i, "agent", AGENT, rng.choice(agent_ops), rng, canary, victim))
        else:
            out.append(ec2_request(i, rng, canary_template, victim_template))
    return out


# -- sending and judging -------------------------------------------------------------------------------------

class Sender:
    """Signs (SigV4, the admin's key) and sends requests on one kept-alive connection."""

    def __init__(self, server: RunningServer, key: tuple[str, str]) -> None:
        self.server = server
        self.credentials = Credentials(*key)
        self.host = urlsplit(server.endpoint).netloc
        self.conn = http.client.HTTPConnection(self.host, timeout=60)

    def send(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        url = self.server.endpoint + req.path
        aws = AWSRequest(method=req.method, url=url, data=req.body, headers={"Content-Type": req.content_type})
        SigV4Auth(self.credentials, "ec2" if req.surface == "ec2" else "mgn", self.server.region).add_auth(aws)
        for attempt in (1, 2):
            try:
                self.conn.request(req.method, req.path, body=req.body or None, headers=dict(aws.headers.items()))
                resp = self.conn.getresponse()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def _json_codes(model: ServiceModel) -> set[str]:
    return {name for name in model.shape_names if model.shape_for(name).metadata.get("exception")}


CODES = {"mgn": _json_codes(MGN) | JSON_EXTRA_CODES, "agent": _json_codes(AGENT) | JSON_EXTRA_CODES}


def judge(req: Request, status: int, headers: dict[str, str], body: bytes) -> str | None:
    """Why this answer is wrong, or None."""
    if status >= 500:
        return f"HTTP {status}"
    if req.refused and status < 300:
        return f"HTTP {status}: accepted, though it must be refused"
    if req.surface == "ec2":
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            return f"not valid XML ({exc})"
        if status >= 300:
            code = root.findtext("./Errors/Error/Code")
            if root.tag != "Response" or not code:
                return f"not an EC2 error document: {body[:200]!r}"
            if code not in EC2_CODES and not EC2_CODE.fullmatch(code):
                return f"EC2 error code {code!r} is not one of EC2's"
        return None
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if status >= 300:
        code = headers.get("x-amzn-errortype", "")
        if code not in CODES[req.surface]:
            return f"error type {code!r} is not modelled"
        if not isinstance(doc, dict) or not isinstance(doc.get("message"), str):
            return f"error without a message: {body[:200]!r}"
    return None


# -- the canary ----------------------------------------------------------------------------------------------

#: Members of a source server that move without anyone asking (the control plane's own clock).
MOVING = {("lifeCycle", "lastSeenByServiceDateTime")}


def _drop_moving(item: dict[str, Any]) -> dict[str, Any]:
    item = json.loads(json.dumps(item, default=str))
    item.pop("ResponseMetadata", None)  # the answer's date and request ID
    for path in MOVING:
        target = item
        for step in path[:-1]:
            target = target.get(step, {})
        target.pop(path[-1], None)
    return item


def canary_state(api: Any, sid: str, template_id: str) -> dict[str, Any]:
    ec2 = api.server.client(api.key, service="ec2")
    return {
        "server": _drop_moving(api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]),
        "launch": _drop_moving(api.mgn.get_launch_configuration(sourceServerID=sid)),
        "replication": _drop_moving(api.mgn.get_replication_configuration(sourceServerID=sid)),
        "tags": api.mgn.list_tags_for_resource(resourceArn=api.mgn.describe_source_servers(
            filters={"sourceServerIDs": [sid]})["items"][0]["arn"])["tags"],
        "template": ec2.describe_launch_template_versions(LaunchTemplateId=template_id)["LaunchTemplateVersions"],
    }


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    factory = ServerFactory("sqlite", tmp_path_factory.mktemp("fuzz"), None)
    try:
        # Throttling is off: the point is that every request reaches parsing and validation
        # (tests/api/test_throttling.py covers the rate limit). Agents are never deemed silent: the
        # canary's replication must not turn STALLED (AGENT_NOT_SEEN) on a slow machine's clock.
        yield make_api(factory.new("--api-rate-limit", "0", "--agent-silence-seconds", "86400"))
    finally:
        factory.stop_all()


def test_fuzz_every_surface(fuzz_server: Any) -> None:
    api = fuzz_server
    sid = api.agent.register("fuzz-canary", mac="52:54:00:fa:22:01", tags={"role": "canary"})["sourceServerID"]
    api.agent.report_synced(sid)
    api.mgn.update_launch_configuration(sourceServerID=sid, name="canary", copyTags=True)
    template_id = api.mgn.get_launch_configuration(sourceServerID=sid)["ec2LaunchTemplateID"]
    arn = api.mgn.describe_source_servers(filters={"sourceServerIDs": [sid]})["items"][0]["arn"]
    before = canary_state(api, sid, template_id)

    victim = api.ready_server(hostname="fuzz-victim", mac="52:54:00:fa:22:03")
    victim_doc = api.mgn.describe_source_servers(filters={"sourceServerIDs": [victim]})["items"][0]
    victim_template = api.mgn.get_launch_configuration(sourceServerID=victim)["ec2LaunchTemplateID"]
    requests = plan(SEED, TOTAL, {"sourceServerID": sid, "sourceServerIDs": sid, "resourceArn": arn}, template_id,
                    {"sourceServerID": victim, "sourceServerIDs": victim, "resourceArn": victim_doc["arn"]},
                    victim_template)
    sender = Sender(api.server, api.key)
    failures: list[str] = []
    counts: dict[str, int] = {}
    started = time.monotonic()
    try:
        for req in requests:
            status, headers, body = sender.send(req)
            counts[f"{req.surface} {status // 100}xx"] = counts.get(f"{req.surface} {status // 100}xx", 0) + 1
            if TALLY_CODES:
                code = headers.get("x-amzn-errortype") or (re.findall(rb"<Code>([^<]*)", body) or [b""])[0].decode()
                reason = (re.findall(rb'"reason":"([^"]*)', body) or [b""])[0].decode()
                counts[f"{req.surface} {status} {code} {reason}"] = counts.get(f"{req.surface} {status} {code} {reason}", 0) + 1
            why = judge(req, status, headers, body)
            if why:
                failures.append(f"{req.describe()}: {why}")
            assert time.monotonic() - started < TIME_BUDGET, f"fuzzing took over {TIME_BUDGET} s ({req.index} sent)"
    finally:
        sender.close()
    elapsed = time.monotonic() - started
    print(f"fuzz: seed {SEED}, {len(requests)} requests in {elapsed:.1f} s: {dict(sorted(counts.items()))}")

    assert not failures, f"seed {SEED}: {len(failures)} bad answers:\n" + "\n".join(failures[:25])
    # Every surface and every operation was exercised.
    assert {r.surface for r in requests} == {"mgn", "agent", "ec2"}
    assert {r.operation for r in requests if r.surface == "mgn" and r.mutation != "odd_path"} == set(MGN.operation_names)
    assert {r.operation for r in requests if r.surface == "agent" and r.mutation != "odd_path"} == set(
        AGENT.operation_names)
    assert set(EC2_SERVED) <= {r.operation for r in requests if r.surface == "ec2"}

    # Alive, no traceback logged, the canary unchanged.
    status, _, _ = Sender(api.server, api.key).send(Request(-1, "mgn", "healthz", "", "GET", "/healthz", b"", ""))
    assert status == 200
    log = (api.server.data_dir.parent / f"server-{api.server.port}.log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]
    assert canary_state(api, sid, template_id) == before


def test_the_canary_comparison_sees_a_change(fuzz_server: Any) -> None:
    """The canary check is not vacuous: a change a request makes shows in it."""
    api = fuzz_server
    sid = api.agent.register("fuzz-canary-2", mac="52:54:00:fa:22:02")["sourceServerID"]
    template_id = api.mgn.get_launch_configuration(sourceServerID=sid)["ec2LaunchTemplateID"]
    before = canary_state(api, sid, template_id)
    api.agent.call("UpdateAgentBacklogForMgn", {"sourceServerID": sid, "backloggedStorageBytes": 5})
    assert canary_state(api, sid, template_id) == before  # lastSeen moves, and is left out
    api.agent.call("UpdateAgentReplicationInfoForMgn", {"sourceServerID": sid, "replicatedDisks": [
        {"deviceName": "/dev/sda", "totalStorageBytes": 10, "replicatedStorageBytes": 1}]})
    assert canary_state(api, sid, template_id) != before

