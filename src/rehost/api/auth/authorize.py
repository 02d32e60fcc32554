"""Authentication and authorization of one API request: SigV4 against the key store, then IAM policies.

The resources an operation touches are the ARNs of everything its input names (source servers, a job,
templates, the ARN being tagged); operations that name nothing are evaluated on ``*``. A request is allowed
only if every one of them is allowed.

Policies are evaluated with the request's context (`request_context`: ``aws:SourceIp``,
``aws:SecureTransport``, ``aws:CurrentTime``, ``aws:EpochTime``, ``aws:RequestedRegion``, ``aws:UserAgent``,
``aws:username``) plus what the IAM directory knows of the principal (`Authorizer.authorize`:
``aws:userid``, ``aws:PrincipalArn``, ``aws:PrincipalAccount``, ``aws:PrincipalType``,
``aws:PrincipalTag/<key>`` for each tag of the user). The MGN dispatcher adds the tags a request sets
(``aws:RequestTag/<key>``, ``aws:TagKeys``) and each named resource's own (``aws:ResourceTag/<key>``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.requests import HTTPConnection

from rehost import ids
from rehost.api.auth.sigv4 import KeyInfo, VerifiedIdentity, verify_request
from rehost.api.core.errors import AwsError, access_denied
from rehost.iam.policy import parse_address
from rehost.iam.users import IamDirectory


class Authorizer:
    def __init__(self, iam: IamDirectory, region: str) -> None:
        self.iam = iam
        self.region = region

    def _lookup(self, key_id: str) -> KeyInfo | None:
        record = self.iam.lookup_key(key_id)
        if record is None or record.status != "Active":
            return None
        return KeyInfo(
            access_key_id=record.access_key_id, secret_access_key=record.secret_access_key,
            user_name=record.user_name, principal_arn=record.user_arn, account_id=self.iam.account_id,
            session_token=record.session_token, expiration=record.expiration,
        )

    def authenticate(self, *, method: str, raw_path: str, query_string: str, headers: Iterable[tuple[bytes, bytes]],
                     body: bytes, service: str, now: datetime) -> VerifiedIdentity:
        from rehost.api.auth.sigv4 import AuthError

        try:
            return verify_request(method=method, raw_path=raw_path, query_string=query_string, headers=list(headers),
                                  body=body, secret_lookup=self._lookup, service=service, region=self.region, now=now)
        except AuthError as exc:
            raise AwsError(exc.code, exc.message, exc.http_status) from exc

    def principal_context(self, identity: VerifiedIdentity) -> dict[str, str]:
        """The condition keys that describe who signed: user name and ID, ARN, account, tags."""
        user_id, tags = self.iam.principal(identity.user_name)
        out = {"aws:username": identity.user_name, "aws:PrincipalArn": identity.principal_arn,
               "aws:PrincipalAccount": identity.account_id, "aws:PrincipalType": "User"}
        if user_id:
            out["aws:userid"] = user_id
        out.update({f"aws:PrincipalTag/{key}": value for key, value in tags.items()})
        return out

    def authorize(self, identity: VerifiedIdentity, action: str, resources: list[str],
                  context: Mapping[str, str | Sequence[str]] | None = None,
                  per_resource: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Allow `action` on every one of `resources` or raise AccessDeniedException naming the first
        denied one. `context` is the request's (`request_context`); the principal's keys are added here;
        `per_resource` adds keys of one resource (its ``aws:ResourceTag/<key>``) when that one is evaluated."""
        from rehost.iam.policy import Decision, access_denied_message, evaluate

        policies = self.iam.policies_of(identity.user_name)
        full = {**(context or {}), **self.principal_context(identity)}
        for resource in resources or ["*"]:
            extra = (per_resource or {}).get(resource)
            decision = evaluate(policies, action, resource, {**full, **extra} if extra else full)
            if decision is not Decision.ALLOW:
                raise access_denied(access_denied_message(identity.principal_arn, action, resource, decision))


def request_context(request: HTTPConnection, identity: VerifiedIdentity | None = None, *,
                    region: str | None = None, now: datetime | None = None) -> dict[str, str]:
    """The global condition keys a request carries, for `Authorizer.authorize`.

    ``aws:SourceIp`` is the peer address of the connection (rehost serves without a proxy in front, so
    no forwarding header is believed); ``aws:SecureTransport`` whether it came over TLS;
    ``aws:RequestedRegion`` the region the request was signed for (`region` when there is no signature,
    as for the console).
    """
    when = now or ids.utcnow()
    out = {"aws:SecureTransport": "true" if request.url.scheme in ("https", "wss") else "false",
           "aws:CurrentTime": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "aws:EpochTime": str(int(when.timestamp()))}
    client = request.scope.get("client")
    if client and client[0]:
        address = parse_address(str(client[0]))  # an IPv4-mapped IPv6 peer as the IPv4 address it is
        out["aws:SourceIp"] = str(address) if address else str(client[0])
    agent = request.headers.get("user-agent")
    if agent is not None:
        out["aws:UserAgent"] = agent
    requested = identity.region if identity is not None and identity.region else region
    if requested:
        out["aws:RequestedRegion"] = requested
    if identity is not None:
        out["aws:username"] = identity.user_name
    return out


def resources_for(account_arn: str, params: dict[str, Any]) -> list[str]:
    """The ARNs an MGN operation's input touches (``account_arn`` is ``arn:aws:mgn:REGION:ACCOUNT:``)."""
    out: list[str] = []
    if params.get("sourceServerID"):
        out.append(f"{account_arn}source-server/{params['sourceServerID']}")
    for sid in params.get("sourceServerIDs") or []:
        out.append(f"{account_arn}source-server/{sid}")
    if params.get("jobID"):
        out.append(f"{account_arn}job/{params['jobID']}")
    for member, arn_type in (("replicationConfigurationTemplateID", "replication-configuration-template"),
                             ("launchConfigurationTemplateID", "launch-configuration-template"),
                             ("applicationID", "application"), ("waveID", "wave")):
        named = [params[member]] if params.get(member) else []
        for resource_id in named + list(params.get(member + "s") or []):
            out.append(f"{account_arn}{arn_type}/{resource_id}")
    for member, arn_type in (("importID", "import"), ("exportID", "export")):
        if params.get(member):
            out.append(f"{account_arn}{arn_type}/{params[member]}")
    if params.get("resourceArn"):
        out.append(params["resourceArn"])
    return out or ["*"]
