"""Authentication and authorization of one API request: SigV4 against the key store, then IAM policies.

The resource an operation touches is the ARN of what its input names (a source server, a job, a
template, the ARN being tagged); operations that name nothing are evaluated on ``*``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rehost.api.auth.sigv4 import KeyInfo, VerifiedIdentity, verify_request
from rehost.api.core.errors import AwsError, access_denied
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

    def authorize(self, identity: VerifiedIdentity, action: str, resources: list[str],
                  context: dict[str, Any] | None = None) -> None:
        from rehost.iam.policy import Decision, access_denied_message, evaluate

        policies = self.iam.policies_of(identity.user_name)
        for resource in resources or ["*"]:
            decision = evaluate(policies, action, resource, context or {})
            if decision is not Decision.ALLOW:
                raise access_denied(access_denied_message(identity.principal_arn, action, resource, decision))


def resources_for(account_arn: str, params: dict[str, Any]) -> list[str]:
    """The ARNs an MGN operation's input touches (``account_arn`` is ``arn:aws:mgn:REGION:ACCOUNT:``)."""
    out: list[str] = []
    if params.get("sourceServerID"):
        out.append(f"{account_arn}source-server/{params['sourceServerID']}")
    for sid in params.get("sourceServerIDs") or []:
        out.append(f"{account_arn}source-server/{sid}")
    if params.get("jobID"):
        out.append(f"{account_arn}job/{params['jobID']}")
    if params.get("replicationConfigurationTemplateID"):
        out.append(f"{account_arn}replication-configuration-template/{params['replicationConfigurationTemplateID']}")
    if params.get("launchConfigurationTemplateID"):
        out.append(f"{account_arn}launch-configuration-template/{params['launchConfigurationTemplateID']}")
    if params.get("resourceArn"):
        out.append(params["resourceArn"])
    return out or ["*"]
