"""IAM users, access keys and their policies, stored in the control-plane database.

Secrets are encrypted at rest with a Fernet key kept in ``<data-dir>/secret.key`` (created 0600 on first
use) and are never logged. Temporary credentials (``ASIA...`` keys from get-session-token) carry a session
token, encrypted like the secrets, and an expiration.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import and_, delete, select, update

from rehost import ids
from rehost.db import schema
from rehost.db.store import Store
from rehost.errors import Conflict, InvalidInput, NotFound, StorageError

USER_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
AGENT_USER_PREFIX = "mgn-agent-"  # the user of one source server's agent: mgn-agent-s-...
AGENT_POLICY_NAME = "rehost-agent"
POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
TAG_KEY = re.compile(r"^[\w.:/=+\-@ ]{1,128}$")
TAG_VALUE = re.compile(r"^[\w.:/=+\-@ ]{0,256}$")
_KEY_ALPHABET = string.ascii_uppercase + "234567"


def _key_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))


_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


def _secret() -> str:
    """40 characters of base64's alphabet, like AWS's secrets; never a leading '-' that a command line
    would take for an option (the installer is given the secret as a flag's value)."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))


def load_or_create_fernet(data_dir: Path) -> Fernet:
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


@dataclass(frozen=True)
class KeyRecord:
    """What SigV4 verification and policy evaluation need to know about an access key."""

    access_key_id: str
    secret_access_key: str
    user_name: str
    user_arn: str
    status: str
    session_token: str | None
    expiration: datetime | None


class IamDirectory:
    """Users, keys and policies of one rehost account."""

    def __init__(self, store: Store, data_dir: Path, account_id: str) -> None:
        self.store = store
        self.account_id = account_id
        self.fernet = load_or_create_fernet(data_dir)

    def user_arn(self, name: str) -> str:
        return f"arn:aws:iam::{self.account_id}:user/{name}"

    def _user_out(self, row: Any) -> dict[str, Any]:
        return {
            "UserName": row.name,
            "UserId": row.user_id,
            "Arn": self.user_arn(row.name),
            "Path": "/",
            "CreateDate": ids.iso(
                row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
            ),
        }

    # -- users ----------------------------------------------------------------------------------------

    def create_user(self, name: str) -> dict[str, Any]:
        if not USER_NAME.match(name):
            raise InvalidInput(f"Invalid user name {name!r}: use 1-64 letters, digits and +=,.@_-")
        with self.store.transaction() as conn:
            if conn.execute(select(schema.iam_users.c.name).where(schema.iam_users.c.name == name)).first():
                raise Conflict(
                    f"User with name {name} already exists.", resource_id=name, resource_type="USER"
                )
            user_id = "AIDA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(17))
            conn.execute(
                schema.iam_users.insert().values(name=name, user_id=user_id, created_at=ids.utcnow())
            )
            row = conn.execute(select(schema.iam_users).where(schema.iam_users.c.name == name)).one()
            return {"User": self._user_out(row)}

    def get_user(self, name: str) -> dict[str, Any]:
        with self.store.read() as conn:
            row = conn.execute(select(schema.iam_users).where(schema.iam_users.c.name == name)).first()
            if row is None:
                raise NotFound(
                    f"The user with name {name} cannot be found.", resource_id=name, resource_type="USER"
                )
            return self._user_out(row)

    def list_users(self) -> dict[str, Any]:
        with self.store.read() as conn:
            rows = conn.execute(select(schema.iam_users).order_by(schema.iam_users.c.name)).all()
            return {"Users": [self._user_out(r) for r in rows]}

    def delete_user(self, name: str) -> dict[str, Any]:
        self.get_user(name)
        with self.store.transaction() as conn:
            conn.execute(delete(schema.iam_access_keys).where(schema.iam_access_keys.c.user_name == name))
            conn.execute(delete(schema.iam_user_policies).where(schema.iam_user_policies.c.user_name == name))
            conn.execute(delete(schema.iam_users).where(schema.iam_users.c.name == name))
            conn.execute(delete(schema.tags).where(schema.tags.c.arn == self.user_arn(name)))
        return {}

    # -- user tags (aws:PrincipalTag/<key> in policy conditions) -------------------------------------

    def tag_user(self, name: str, tags: dict[str, str]) -> dict[str, Any]:
        """Add or replace tags on a user, as IAM's TagUser does (at most 50 per user)."""
        from rehost.db import repo

        for key, value in tags.items():
            if not TAG_KEY.fullmatch(key) or key.lower().startswith("aws:") or not TAG_VALUE.fullmatch(value):
                raise InvalidInput(f"Invalid tag {key!r}={value!r}: keys 1-128 and values 0-256 characters "
                                   "of letters, digits, spaces and _.:/=+-@, keys not starting with aws:")
        self.get_user(name)
        with self.store.transaction() as conn:
            arn = self.user_arn(name)
            if len({**repo.get_tags(conn, arn), **tags}) > 50:
                raise InvalidInput(f"Cannot exceed quota for TagsPerUser: 50 (user {name}).")
            repo.put_tags(conn, arn, tags)
        return {}

    def untag_user(self, name: str, keys: list[str]) -> dict[str, Any]:
        from rehost.db import repo

        self.get_user(name)
        with self.store.transaction() as conn:
            repo.remove_tags(conn, self.user_arn(name), keys)
        return {}

    def list_user_tags(self, name: str) -> dict[str, Any]:
        self.get_user(name)
        return {"Tags": [{"Key": k, "Value": v} for k, v in sorted(self.principal(name)[1].items())]}

    def principal(self, name: str) -> tuple[str | None, dict[str, str]]:
        """A user's unique ID (None if it does not exist) and its tags, in one read."""
        from rehost.db import repo

        with self.store.read() as conn:
            user_id = conn.execute(select(schema.iam_users.c.user_id).where(schema.iam_users.c.name == name)).scalar()
            return user_id, repo.get_tags(conn, self.user_arn(name)) if user_id else {}

    # -- agents ---------------------------------------------------------------------------------------

    def issue_agent_credentials(self, server_id: str, server_arn: str) -> dict[str, str]:
        """The access key a source server's agent signs with once installed: of a user of its own
        (``mgn-agent-<server ID>``) whose one policy is AWSApplicationMigrationAgentPolicy_v2 with the
        server's ARN for the session's SourceIdentity, so the agent can make its runtime calls for its own
        server and nothing else, whatever credentials the installer was given. Issuing again (the agent
        installed again) replaces the previous key."""
        from rehost.iam.managed import get_managed_policy

        name = AGENT_USER_PREFIX + server_id
        try:
            self.get_user(name)
        except NotFound:
            self.create_user(name)
        doc = get_managed_policy("AWSApplicationMigrationAgentPolicy_v2")
        for statement in doc["Statement"]:
            statement["Resource"] = server_arn
        self.put_user_policy(name, AGENT_POLICY_NAME, doc)
        t = schema.iam_access_keys
        with self.store.transaction() as conn:
            conn.execute(delete(t).where(t.c.user_name == name))
        key = self.create_access_key(name)["AccessKey"]
        return {"accessKeyId": key["AccessKeyId"], "secretAccessKey": key["SecretAccessKey"]}

    def revoke_agent_credentials(self, server_id: str) -> bool:
        """Delete the agent user of a source server that no longer exists; True if there was one."""
        try:
            self.delete_user(AGENT_USER_PREFIX + server_id)
        except NotFound:
            return False
        return True

    # -- policies -------------------------------------------------------------------------------------

    def attach_user_policy(self, name: str, policy: str) -> dict[str, Any]:
        from rehost.iam.managed import get_managed_policy, managed_policy_name

        self.get_user(name)
        policy_name = managed_policy_name(policy)
        get_managed_policy(policy_name)  # NotFound for an unknown managed policy
        self._put_policy(name, policy_name, "managed", None)
        return {}

    def detach_user_policy(self, name: str, policy: str) -> dict[str, Any]:
        from rehost.iam.managed import managed_policy_name

        self._delete_policy(name, managed_policy_name(policy), "managed")
        return {}

    def put_user_policy(self, name: str, policy_name: str, document: str | dict[str, Any]) -> dict[str, Any]:
        from rehost.iam.policy import validate_policy_document

        self.get_user(name)
        if not POLICY_NAME.match(policy_name):
            raise InvalidInput(f"Invalid policy name {policy_name!r}")
        try:
            doc = validate_policy_document(document)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        self._put_policy(name, policy_name, "inline", doc)
        return {}

    def delete_user_policy(self, name: str, policy_name: str) -> dict[str, Any]:
        self._delete_policy(name, policy_name, "inline")
        return {}

    def _put_policy(self, user: str, policy_name: str, kind: str, doc: dict[str, Any] | None) -> None:
        t = schema.iam_user_policies
        with self.store.transaction() as conn:
            conn.execute(
                delete(t).where(and_(t.c.user_name == user, t.c.policy_name == policy_name, t.c.kind == kind))
            )
            conn.execute(t.insert().values(user_name=user, policy_name=policy_name, kind=kind, document=doc))

    def _delete_policy(self, user: str, policy_name: str, kind: str) -> None:
        t = schema.iam_user_policies
        with self.store.transaction() as conn:
            gone = conn.execute(
                delete(t).where(and_(t.c.user_name == user, t.c.policy_name == policy_name, t.c.kind == kind))
            )
            if gone.rowcount == 0:
                raise NotFound(
                    f"Policy {policy_name} is not attached to user {user}.", resource_id=policy_name
                )

    def list_user_policies(self, name: str) -> dict[str, Any]:
        from rehost.iam.managed import managed_policy_arn

        self.get_user(name)
        t = schema.iam_user_policies
        with self.store.read() as conn:
            rows = conn.execute(
                select(t.c.policy_name, t.c.kind).where(t.c.user_name == name).order_by(t.c.policy_name)
            ).all()
        return {
            "AttachedPolicies": [
                {"PolicyName": r[0], "PolicyArn": managed_policy_arn(r[0])} for r in rows if r[1] == "managed"
            ],
            "PolicyNames": [r[0] for r in rows if r[1] == "inline"],
        }

    def policies_of(self, name: str) -> list[dict[str, Any]]:
        """Every policy document that applies to the user (managed and inline)."""
        from rehost.iam.managed import get_managed_policy

        t = schema.iam_user_policies
        with self.store.read() as conn:
            rows = conn.execute(
                select(t.c.policy_name, t.c.kind, t.c.document).where(t.c.user_name == name)
            ).all()
        docs = []
        for policy_name, kind, doc in rows:
            docs.append(get_managed_policy(policy_name) if kind == "managed" else doc)
        return docs

    # -- access keys ----------------------------------------------------------------------------------

    def _encrypt(self, secret: str) -> str:
        return self.fernet.encrypt(secret.encode()).decode()

    def _decrypt(self, token: str) -> str:
        try:
            return self.fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise StorageError(
                "an access key secret cannot be decrypted: is secret.key the data directory's own?"
            ) from exc

    def _insert_key(self, conn: Any, key_id: str, user: str, secret: str, now: datetime, *,
                    token: str | None = None, expiration: datetime | None = None) -> None:
        conn.execute(schema.iam_access_keys.insert().values(
            access_key_id=key_id, user_name=user, secret_enc=self._encrypt(secret), status="Active", created_at=now,
            session_token_enc=self._encrypt(token) if token else None, expiration=expiration))

    def create_access_key(self, name: str) -> dict[str, Any]:
        self.get_user(name)
        key_id, secret = _key_id("AKIA"), _secret()
        now = ids.utcnow()
        with self.store.transaction() as conn:
            count = len(
                conn.execute(
                    select(schema.iam_access_keys.c.access_key_id).where(
                        and_(
                            schema.iam_access_keys.c.user_name == name,
                            schema.iam_access_keys.c.session_token_enc.is_(None),
                        )
                    )
                ).all()
            )
            if count >= 2:
                raise Conflict(
                    f"Cannot exceed quota for AccessKeysPerUser: 2 (user {name}).", resource_id=name
                )
            self._insert_key(conn, key_id, name, secret, now)
        return {
            "AccessKey": {
                "UserName": name,
                "AccessKeyId": key_id,
                "Status": "Active",
                "SecretAccessKey": secret,
                "CreateDate": ids.iso(now),
            }
        }

    def get_session_token(self, name: str, duration_seconds: int = 43200) -> dict[str, Any]:
        if not 900 <= duration_seconds <= 129600:
            raise InvalidInput("--duration-seconds must be between 900 and 129600")
        self.get_user(name)
        key_id, secret, token = _key_id("ASIA"), _secret(), secrets.token_urlsafe(96)
        now = ids.utcnow()
        expiration = now + timedelta(seconds=duration_seconds)
        with self.store.transaction() as conn:
            self._insert_key(conn, key_id, name, secret, now, token=token, expiration=expiration)
        return {
            "Credentials": {
                "AccessKeyId": key_id,
                "SecretAccessKey": secret,
                "SessionToken": token,
                "Expiration": ids.iso(expiration),
            }
        }

    def list_access_keys(self, name: str) -> dict[str, Any]:
        self.get_user(name)
        t = schema.iam_access_keys
        with self.store.read() as conn:
            rows = conn.execute(
                select(t)
                .where(and_(t.c.user_name == name, t.c.session_token_enc.is_(None)))
                .order_by(t.c.created_at)
            ).all()
        return {
            "AccessKeyMetadata": [
                {
                    "UserName": r.user_name,
                    "AccessKeyId": r.access_key_id,
                    "Status": r.status,
                    "CreateDate": ids.iso(
                        r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC)
                    ),
                }
                for r in rows
            ]
        }

    def delete_access_key(self, key_id: str, name: str | None = None) -> dict[str, Any]:
        t = schema.iam_access_keys
        with self.store.transaction() as conn:
            stmt = delete(t).where(t.c.access_key_id == key_id)
            if name:
                stmt = stmt.where(t.c.user_name == name)
            if conn.execute(stmt).rowcount == 0:
                raise NotFound(f"The Access Key with id {key_id} cannot be found.", resource_id=key_id)
        return {}

    def set_access_key_status(self, key_id: str, status: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                update(schema.iam_access_keys)
                .where(schema.iam_access_keys.c.access_key_id == key_id)
                .values(status=status)
            )

    def lookup_key(self, key_id: str) -> KeyRecord | None:
        t = schema.iam_access_keys
        with self.store.read() as conn:
            row = conn.execute(select(t).where(t.c.access_key_id == key_id)).first()
        if row is None:
            return None
        exp = row.expiration
        if exp is not None and exp.tzinfo is None:
            exp = exp.replace(tzinfo=UTC)
        return KeyRecord(
            row.access_key_id,
            self._decrypt(row.secret_enc),
            row.user_name,
            self.user_arn(row.user_name),
            row.status,
            self._decrypt(row.session_token_enc) if row.session_token_enc else None,
            exp,
        )

    def ensure_admin(self) -> None:
        """A new data directory has a user ``admin`` with AWSApplicationMigrationFullAccess."""
        with self.store.read() as conn:
            exists = conn.execute(
                select(schema.iam_users.c.name).where(schema.iam_users.c.name == "admin")
            ).first()
        if not exists:
            self.create_user("admin")
            self.attach_user_policy("admin", "AWSApplicationMigrationFullAccess")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=4, sort_keys=False)
