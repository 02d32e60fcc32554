"""SigV4 verification against signatures made by real botocore, the AWS CLI v1, and tampered copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from rehost.api.auth.sigv4 import (
    AuthError,
    KeyInfo,
    VerifiedIdentity,
    canonical_uri,
    parse_authorization,
    verify_request,
)

ACCOUNT = "123456789012"
LONG_TERM = KeyInfo(
    access_key_id="AKIAREHOSTTEST000001",
    secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    user_name="MGNuser",
    principal_arn=f"arn:aws:iam::{ACCOUNT}:user/MGNuser",
    account_id=ACCOUNT,
)
TEMPORARY = KeyInfo(
    access_key_id="ASIAREHOSTTEST000002",
    secret_access_key="tmpSecret/abc+def",
    user_name="MGNuser",
    principal_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSApplicationMigrationAgentRole/s-1234567890abcdef0",
    account_id=ACCOUNT,
    session_token="FwoGZXIvYXdzEXAMPLETOKEN/with+special=chars",
    expiration=datetime.now(UTC) + timedelta(hours=1),
)
KEYS = {k.access_key_id: k for k in (LONG_TERM, TEMPORARY)}
SERVER_ARN = f"arn:aws:mgn:us-east-1:{ACCOUNT}:source-server/s-1234567890abcdef0"


def lookup(key_id: str) -> KeyInfo | None:
    return KEYS.get(key_id)


# -- test helper: what a botocore client puts on the wire ------------------------------------------------


@dataclass
class Wire:
    """A request as the server receives it."""

    method: str
    raw_path: str
    query_string: str
    headers: dict[str, str]
    body: bytes
    signed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def verify(
        self,
        *,
        now: datetime | None = None,
        service: str = "mgn",
        region: str = "us-east-1",
        **changes: object,
    ) -> VerifiedIdentity:
        fields = {
            "method": self.method,
            "raw_path": self.raw_path,
            "query_string": self.query_string,
            "headers": self.headers,
            "body": self.body,
        }
        fields.update(changes)
        return verify_request(
            secret_lookup=lookup,
            service=service,
            region=region,
            now=now or self.signed_at,
            **fields,  # type: ignore[arg-type]
        )


def sign(
    method: str,
    url: str,
    body: bytes = b"",
    *,
    key: KeyInfo = LONG_TERM,
    secret: str | None = None,
    service: str = "mgn",
    region: str = "us-east-1",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    presign: bool = False,
) -> Wire:
    """Sign with botocore's own SigV4Auth and return what an HTTP client would send."""
    creds = Credentials(key.access_key_id, secret or key.secret_access_key, key.session_token)
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {}, params=params or {})
    signer = (SigV4QueryAuth if presign else SigV4Auth)(creds, service, region)
    signer.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    wire_headers = dict(prepared.headers.items())
    # The HTTP client adds Host (without the default port), as botocore assumed while signing.
    wire_headers["Host"] = parts.netloc.removesuffix(":443") if parts.scheme == "https" else parts.netloc
    raw_body = prepared.body or b""
    if isinstance(raw_body, str):
        raw_body = raw_body.encode()
    stamp = datetime.strptime(request.context["timestamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return Wire(method, parts.path, parts.query, wire_headers, raw_body, stamp)


def code_of(exc: pytest.ExceptionInfo[AuthError]) -> tuple[str, int]:
    return exc.value.code, exc.value.http_status


ENDPOINT = "https://mgn.us-east-1.amazonaws.com"
TAGS_URL = f"{ENDPOINT}/tags/{quote(SERVER_ARN, safe='')}"


# -- botocore signatures verify ----------------------------------------------------------------------------


def test_rest_json_post_verifies_and_names_the_signer() -> None:
    body = json.dumps({"filters": {"isArchived": False}, "maxResults": 10}).encode()
    wire = sign(
        "POST", f"{ENDPOINT}/DescribeSourceServers", body, headers={"Content-Type": "application/json"}
    )
    identity = wire.verify()
    assert identity.access_key_id == LONG_TERM.access_key_id
    assert identity.principal_arn == LONG_TERM.principal_arn
    assert identity.account_id == ACCOUNT
    assert not identity.is_temporary


def test_tags_path_with_encoded_arn_is_double_encoded_like_botocore() -> None:
    wire = sign("GET", TAGS_URL)
    assert "%3A" in wire.raw_path
    assert canonical_uri(wire.raw_path) == "/tags/" + quote(quote(SERVER_ARN, safe=""), safe="")
    assert wire.verify().user_name == "MGNuser"


def test_query_with_repeated_unsorted_keys_and_special_characters() -> None:
    # UntagResource style: tagKeys repeated, out of order, with characters that need encoding.
    params = [("tagKeys", "zeta key"), ("tagKeys", "alpha/ü"), ("b", "1+1=2"), ("a", "~x_y.z-")]
    url = f"{TAGS_URL}?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='-_.~')}" for k, v in params)
    wire = sign("DELETE", url)
    wire.verify()


def test_query_from_params_dict_encoded_with_plus_on_the_wire() -> None:
    # AWSRequest(params=...) signs the spec-encoded form but sends urlencode()'s '+' for spaces.
    wire = sign("GET", f"{ENDPOINT}/DescribeVcenterClients", params={"nextToken": "a b/c", "maxResults": "5"})
    assert "+" in wire.query_string
    wire.verify()


def test_empty_body_with_and_without_content_sha256_header() -> None:
    sign("POST", f"{ENDPOINT}/InitializeService").verify()
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    wire = sign("POST", f"{ENDPOINT}/InitializeService", headers={"X-Amz-Content-SHA256": empty})
    wire.verify()


def test_ec2_form_encoded_post() -> None:
    body = b"Action=DescribeLaunchTemplates&Version=2016-11-15&LaunchTemplateId.1=lt-0123456789abcdef0"
    wire = sign(
        "POST",
        "https://ec2.us-east-1.amazonaws.com/",
        body,
        service="ec2",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert wire.verify(service="ec2").service == "ec2"


def test_presigned_query_string_auth() -> None:
    wire = sign("GET", TAGS_URL, presign=True)
    assert "Authorization" not in wire.headers
    assert "X-Amz-Signature=" in wire.query_string
    wire.verify()
    wire.verify(now=wire.signed_at + timedelta(minutes=30))  # X-Amz-Expires (3600 s), not the 15 min skew
    with pytest.raises(AuthError) as exc:
        wire.verify(now=wire.signed_at + timedelta(seconds=3601))
    assert code_of(exc) == ("InvalidSignatureException", 403)


def test_temporary_credentials_with_token_verify() -> None:
    wire = sign("POST", f"{ENDPOINT}/agent/GetAgentCommandForMgn", b'{"sourceServerID":"s-1"}', key=TEMPORARY)
    identity = wire.verify()
    assert identity.is_temporary and identity.session_token == TEMPORARY.session_token


def test_repeated_header_is_joined_as_botocore_signs_it() -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}", headers={"X-Custom": "a,b"})
    pairs = [(k, v) for k, v in wire.headers.items() if k != "X-Custom"] + [
        ("x-custom", "a"),
        ("X-Custom", "  b "),
    ]
    wire.verify(headers=pairs)


def test_parse_authorization_reads_the_scope() -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}")
    cred = parse_authorization({"authorization": wire.headers["Authorization"]})
    assert (cred.access_key_id, cred.region, cred.service) == (LONG_TERM.access_key_id, "us-east-1", "mgn")
    assert "host" in cred.signed_headers and "x-amz-date" in cred.signed_headers


# -- tampering and wrong credentials -------------------------------------------------------------------------


@pytest.fixture
def signed() -> Wire:
    return sign(
        "POST", f"{TAGS_URL}?x=1", b'{"tags":{"k":"v"}}', headers={"Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"tags":{"k":"w"}}'},
        {"raw_path": "/tags/" + quote(SERVER_ARN.replace("s-1", "s-2"), safe="")},
        {"query_string": "x=2"},
        {"method": "PUT"},
    ],
    ids=["body", "path", "query", "method"],
)
def test_tampered_request_is_invalid_signature(signed: Wire, change: dict[str, object]) -> None:
    with pytest.raises(AuthError) as exc:
        signed.verify(**change)
    assert code_of(exc) == ("InvalidSignatureException", 403)
    assert "does not match the signature you provided" in exc.value.message


def test_tampered_signed_header_is_invalid_signature(signed: Wire) -> None:
    headers = dict(signed.headers, **{"Content-Type": "text/plain"})
    with pytest.raises(AuthError) as exc:
        signed.verify(headers=headers)
    assert code_of(exc) == ("InvalidSignatureException", 403)


def test_content_sha256_header_must_match_body() -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}", headers={"X-Amz-Content-SHA256": "0" * 64})
    with pytest.raises(AuthError) as exc:
        wire.verify()
    assert exc.value.code == "InvalidSignatureException"
    assert "x-amz-content-sha256" in exc.value.message


def test_wrong_secret_is_invalid_signature() -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}", secret="not-the-secret")
    with pytest.raises(AuthError) as exc:
        wire.verify()
    assert code_of(exc) == ("InvalidSignatureException", 403)


def test_unknown_key_is_unrecognized_client() -> None:
    stranger = KeyInfo(access_key_id="AKIAUNKNOWN000000000", secret_access_key="x")
    with pytest.raises(AuthError) as exc:
        sign("POST", f"{ENDPOINT}/ListWaves", b"{}", key=stranger).verify()
    assert code_of(exc) == ("UnrecognizedClientException", 403)
    assert exc.value.message == "The security token included in the request is invalid."


def test_stale_and_future_dates_are_refused() -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}")
    wire.verify(now=wire.signed_at + timedelta(minutes=14))
    with pytest.raises(AuthError) as exc:
        wire.verify(now=wire.signed_at + timedelta(minutes=16))
    assert code_of(exc) == ("InvalidSignatureException", 403)
    assert exc.value.message.startswith("Signature expired: ")
    assert "is now earlier than" in exc.value.message
    with pytest.raises(AuthError) as exc:
        wire.verify(now=wire.signed_at - timedelta(minutes=16))
    assert exc.value.message.startswith("Signature not yet current: ")


def test_wrong_service_or_region_scope() -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}", service="ec2")
    with pytest.raises(AuthError) as exc:
        wire.verify()
    assert exc.value.code == "InvalidSignatureException"
    assert "Credential should be scoped to correct service: 'mgn'." in exc.value.message
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}", region="eu-west-1")
    with pytest.raises(AuthError) as exc:
        wire.verify()
    assert exc.value.code == "InvalidSignatureException"
    assert "Credential should be scoped to a valid region" in exc.value.message


def test_temporary_key_needs_its_token() -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}", key=TEMPORARY)
    without = {k: v for k, v in wire.headers.items() if k.lower() != "x-amz-security-token"}
    with pytest.raises(AuthError) as exc:
        wire.verify(headers=without)
    assert code_of(exc) == ("UnrecognizedClientException", 403)
    wrong = dict(without, **{"X-Amz-Security-Token": "forged"})
    with pytest.raises(AuthError) as exc:
        wire.verify(headers=wrong)
    assert code_of(exc) == ("UnrecognizedClientException", 403)


def test_long_term_key_with_a_token_is_refused() -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}")
    with pytest.raises(AuthError) as exc:
        wire.verify(headers=dict(wire.headers, **{"X-Amz-Security-Token": "anything"}))
    assert exc.value.code == "UnrecognizedClientException"


def test_expired_temporary_key() -> None:
    expired = KeyInfo(
        **{
            **TEMPORARY.__dict__,
            "access_key_id": "ASIAEXPIRED000000003",
            "expiration": datetime.now(UTC) - timedelta(seconds=1),
        }
    )
    KEYS[expired.access_key_id] = expired
    try:
        wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}", key=expired)
        with pytest.raises(AuthError) as exc:
            wire.verify()
        assert code_of(exc) == ("ExpiredTokenException", 403)
        assert exc.value.message == "The security token included in the request is expired"
    finally:
        del KEYS[expired.access_key_id]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "AWS AKIAREHOSTTEST000001:signature",
        "AWS4-HMAC-SHA256 Credential=AKIAREHOSTTEST000001/20240101/us-east-1/mgn/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIAREHOSTTEST000001/us-east-1, SignedHeaders=host, Signature=ab",
    ],
    ids=["missing", "sigv2", "no-signature", "short-scope"],
)
def test_missing_or_malformed_authorization_is_incomplete(authorization: str | None) -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}")
    headers = {k: v for k, v in wire.headers.items() if k != "Authorization"}
    if authorization is not None:
        headers["Authorization"] = authorization
    with pytest.raises(AuthError) as exc:
        wire.verify(headers=headers)
    assert code_of(exc) == ("IncompleteSignatureException", 400)


def test_missing_or_malformed_date_is_incomplete() -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}")
    for date in (None, "2024-01-01T00:00:00Z"):
        headers = {k: v for k, v in wire.headers.items() if k != "X-Amz-Date"}
        if date:
            headers["X-Amz-Date"] = date
        with pytest.raises(AuthError) as exc:
            wire.verify(headers=headers)
        assert code_of(exc) == ("IncompleteSignatureException", 400)


# -- over a real socket: boto3 and the AWS CLI v1 ------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Verifies each request with verify_request and answers as MGN/EC2 would."""

    seen: list[VerifiedIdentity] = []

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        service = "ec2" if body.startswith(b"Action=") else "mgn"
        try:
            identity = verify_request(
                method=self.command,
                raw_path=path,
                query_string=query,
                headers=list(self.headers.items()),
                body=body,
                secret_lookup=lookup,
                service=service,
                region="us-east-1",
                now=datetime.now(UTC),
            )
        except AuthError as exc:
            self._reply(exc.http_status, {"message": exc.message}, {"x-amzn-ErrorType": exc.code})
            return
        type(self).seen.append(identity)
        if service == "ec2":
            xml = (
                b'<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
                b"<requestId>r-1</requestId><reservationSet/></DescribeInstancesResponse>"
            )
            self._raw(200, xml, "text/xml")
        else:
            self._reply(200, {"tags": {}, "items": []}, {})

    def _reply(self, status: int, doc: dict[str, object], extra: dict[str, str]) -> None:
        self._raw(status, json.dumps(doc).encode(), "application/json", extra)

    def _raw(self, status: int, data: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _client(service: str, endpoint: str, key: KeyInfo, secret: str | None = None):  # type: ignore[no-untyped-def]
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=secret or key.secret_access_key,
        aws_session_token=key.session_token,
        config=Config(retries={"max_attempts": 1}),
    )


def test_boto3_clients_over_http(endpoint: str) -> None:
    mgn = _client("mgn", endpoint, LONG_TERM)
    mgn.list_tags_for_resource(resourceArn=SERVER_ARN)
    mgn.tag_resource(resourceArn=SERVER_ARN, tags={"Name": "web server", "a/b": "c:d"})
    mgn.untag_resource(resourceArn=SERVER_ARN, tagKeys=["zeta", "Name", "a/b", "spaced key"])
    mgn.describe_source_servers(filters={"sourceServerIDs": ["s-1234567890abcdef0"]})
    mgn.describe_vcenter_clients(maxResults=5, nextToken="tok en/+=")
    _client("mgn", endpoint, TEMPORARY).describe_source_servers()
    _client("ec2", endpoint, LONG_TERM).describe_instances(InstanceIds=["i-0123456789abcdef0"])
    assert len(_Handler.seen) == 7
    assert _Handler.seen[-1].service == "ec2" and _Handler.seen[-2].is_temporary


def test_boto3_wrong_secret_gets_invalid_signature(endpoint: str) -> None:
    mgn = _client("mgn", endpoint, LONG_TERM, secret="wrong")
    with pytest.raises(ClientError) as exc:
        mgn.list_tags_for_resource(resourceArn=SERVER_ARN)
    assert exc.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_aws_cli_v1(endpoint: str, tmp_path: Path) -> None:
    aws = Path(sys.executable).with_name("aws")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_ACCESS_KEY_ID": LONG_TERM.access_key_id,
        "AWS_SECRET_ACCESS_KEY": LONG_TERM.secret_access_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    base = [sys.executable, str(aws), "--endpoint-url", endpoint, "mgn"]
    ok = subprocess.run(
        [*base, "list-tags-for-resource", "--resource-arn", SERVER_ARN],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    ok = subprocess.run(
        [*base, "untag-resource", "--resource-arn", SERVER_ARN, "--tag-keys", "b", "a x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert [i.principal_arn for i in _Handler.seen] == [LONG_TERM.principal_arn] * 2
    bad = subprocess.run(
        [*base, "list-tags-for-resource", "--resource-arn", SERVER_ARN],
        env=dict(env, AWS_SECRET_ACCESS_KEY="wrong"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert "InvalidSignatureException" in bad.stderr


def test_asgi_style_byte_header_pairs() -> None:
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}", key=TEMPORARY)
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in wire.headers.items()]
    assert wire.verify(headers=raw).is_temporary


def test_http_date_header_instead_of_x_amz_date() -> None:
    # botocore signs with the Date header when the request already carries one.
    wire = sign("POST", f"{ENDPOINT}/ListWaves", b"{}", headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"})
    assert "X-Amz-Date" not in wire.headers
    wire.verify()
    with pytest.raises(AuthError) as exc:
        wire.verify(now=wire.signed_at + timedelta(hours=1))
    assert exc.value.message.startswith("Signature expired: ")


def test_the_agents_own_signer_verifies() -> None:
    # The agent (stdlib only) signs with rehost.agent.sigv4; the agent API has no query strings.
    from rehost.agent.sigv4 import Credentials as AgentCredentials
    from rehost.agent.sigv4 import sign_request as agent_sign

    url = "https://127.0.0.1:8443/agent/RegisterAgentForMgn"
    body = b'{"hints": {"hostname": "web1"}}'
    creds = AgentCredentials(TEMPORARY.access_key_id, TEMPORARY.secret_access_key, TEMPORARY.session_token)
    headers = agent_sign("POST", url, body, creds, "us-east-1")
    wire = Wire("POST", "/agent/RegisterAgentForMgn", "", headers, body)
    assert wire.verify(now=datetime.now(UTC)).access_key_id == TEMPORARY.access_key_id
    with pytest.raises(AuthError) as exc:
        wire.verify(now=datetime.now(UTC), body=body + b" ")
    assert exc.value.code == "InvalidSignatureException"
