"""``rehost iam ...``: local administration of users, keys and policies, printing JSON like the AWS CLI."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rehost.errors import InvalidInput


def _directory(args: argparse.Namespace) -> Any:
    from rehost.config import load_settings
    from rehost.controlplane import account_id_for
    from rehost.db.store import Store
    from rehost.iam.users import IamDirectory

    settings = load_settings(data_dir=args.data_dir, database_url=getattr(args, "database_url", None))
    store = Store(settings.db_url)
    iam = IamDirectory(store, settings.data_dir, account_id_for(settings.data_dir))
    iam.ensure_admin()
    return iam


def _cmd(fn: Callable[[Any, argparse.Namespace], dict[str, Any]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        out = fn(_directory(args), args)
        if out:
            print(json.dumps(out, indent=4))
        return 0

    return run


def _policy_document(path: str) -> str:
    if path.startswith("file://"):
        path = path[len("file://"):]
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read policy document {path}: {exc.strerror}") from exc


def _tags(pairs: list[str]) -> dict[str, str]:
    """``Key=Value`` arguments (the AWS CLI's shorthand) as a dict."""
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"tag {pair!r}: write Key=Value")
        tags[key] = value
    return tags


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("iam", help="manage users, access keys and policies")
    iam = p.add_subparsers(dest="iam_command", metavar="COMMAND")
    iam.required = True

    def add(name: str, fn: Callable[[Any, argparse.Namespace], dict[str, Any]], *positional: str, help: str) -> argparse.ArgumentParser:
        c = iam.add_parser(name, help=help)
        for arg in positional:
            c.add_argument(arg)
        c.add_argument("--data-dir", help="the server's data directory (default: $REHOST_DATA_DIR)")
        c.add_argument("--database-url", default=None, help="PostgreSQL URL, if the server uses one")
        c.set_defaults(func=_cmd(fn))
        return c

    add("create-user", lambda d, a: d.create_user(a.user_name), "user_name", help="create a user")
    add("delete-user", lambda d, a: d.delete_user(a.user_name), "user_name", help="delete a user and its keys")
    add("list-users", lambda d, a: d.list_users(), help="list users")
    add("attach-user-policy", lambda d, a: d.attach_user_policy(a.user_name, a.policy), "user_name", "policy",
        help="attach a managed policy (name or ARN)")
    add("detach-user-policy", lambda d, a: d.detach_user_policy(a.user_name, a.policy), "user_name", "policy",
        help="detach a managed policy")
    c = add("put-user-policy", lambda d, a: d.put_user_policy(a.user_name, a.policy_name, _policy_document(a.policy_document)),
            "user_name", "policy_name", help="add an inline policy from a JSON file")
    c.add_argument("--policy-document", required=True, help="JSON policy document file (or file://PATH)")
    add("delete-user-policy", lambda d, a: d.delete_user_policy(a.user_name, a.policy_name), "user_name", "policy_name",
        help="remove an inline policy")
    add("list-user-policies", lambda d, a: d.list_user_policies(a.user_name), "user_name",
        help="list a user's managed and inline policies")
    add("create-access-key", lambda d, a: d.create_access_key(a.user_name), "user_name", help="create an access key")
    add("list-access-keys", lambda d, a: d.list_access_keys(a.user_name), "user_name", help="list a user's access keys")
    add("delete-access-key", lambda d, a: d.delete_access_key(a.access_key_id, a.user_name), "user_name", "access_key_id",
        help="delete an access key")
    c = add("tag-user", lambda d, a: d.tag_user(a.user_name, _tags(a.tags)), "user_name",
            help="tag a user (its tags are aws:PrincipalTag/<key> in policy conditions)")
    c.add_argument("tags", nargs="+", metavar="Key=Value")
    c = add("untag-user", lambda d, a: d.untag_user(a.user_name, a.keys), "user_name", help="remove tags from a user")
    c.add_argument("keys", nargs="+", metavar="KEY")
    add("list-user-tags", lambda d, a: d.list_user_tags(a.user_name), "user_name", help="list a user's tags")
    c = add("get-session-token", lambda d, a: d.get_session_token(a.user_name, a.duration_seconds), "user_name",
            help="temporary credentials (ASIA... key with a session token)")
    c.add_argument("--duration-seconds", type=int, default=43200)
