"""`rehost iam ...` prints AWS-CLI-shaped JSON, and the AWS CLI itself works against rehost unchanged."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import cli_json, rehost_cli

from .conftest import Api

AWS = Path(sys.executable).parent / "aws"


def test_iam_commands_print_aws_shapes(api: Api) -> None:
    data_dir, env = api.server.data_dir, api.server.env
    # A new data directory has `admin` with full access.
    users = cli_json("iam", "list-users", data_dir=data_dir, env=env)["Users"]
    assert "admin" in [u["UserName"] for u in users]
    admin_policies = cli_json("iam", "list-user-policies", "admin", data_dir=data_dir, env=env)
    assert [p["PolicyName"] for p in admin_policies["AttachedPolicies"]] == ["AWSApplicationMigrationFullAccess"]

    user = cli_json("iam", "create-user", "carol", data_dir=data_dir, env=env)["User"]
    assert user["UserName"] == "carol" and user["Path"] == "/"
    assert re.fullmatch(r"arn:aws:iam::\d{12}:user/carol", user["Arn"])
    assert user["UserId"].startswith("AIDA") and user["CreateDate"].endswith("Z")
    attach = rehost_cli("iam", "attach-user-policy", "carol", "arn:aws:iam::aws:policy/AWSApplicationMigrationReadOnlyAccess",
                        data_dir=data_dir, env=env)
    assert attach.stdout.strip() == ""  # as the AWS CLI: nothing on success

    key = cli_json("iam", "create-access-key", "carol", data_dir=data_dir, env=env)["AccessKey"]
    assert set(key) == {"UserName", "AccessKeyId", "Status", "SecretAccessKey", "CreateDate"}
    assert re.fullmatch(r"AKIA[A-Z2-7]{16}", key["AccessKeyId"]) and key["Status"] == "Active"
    listed = cli_json("iam", "list-access-keys", "carol", data_dir=data_dir, env=env)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == [key["AccessKeyId"]] and "SecretAccessKey" not in listed[0]
    session = cli_json("iam", "get-session-token", "carol", data_dir=data_dir, env=env)["Credentials"]
    assert set(session) == {"AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}
    assert session["AccessKeyId"].startswith("ASIA")

    # The key works with the ReadOnly policy attached.
    reader = api.server.client((key["AccessKeyId"], key["SecretAccessKey"]))
    assert "items" in reader.describe_source_servers()

    rehost_cli("iam", "delete-access-key", "carol", key["AccessKeyId"], data_dir=data_dir, env=env)
    assert cli_json("iam", "list-access-keys", "carol", data_dir=data_dir, env=env)["AccessKeyMetadata"] == []
    rehost_cli("iam", "delete-user", "carol", data_dir=data_dir, env=env)
    assert "carol" not in [u["UserName"] for u in cli_json("iam", "list-users", data_dir=data_dir, env=env)["Users"]]


def test_iam_mistakes_are_one_line_errors(api: Api) -> None:
    data_dir, env = api.server.data_dir, api.server.env
    for args in (("iam", "create-user", "admin"), ("iam", "delete-user", "nobody"),
                 ("iam", "attach-user-policy", "admin", "NoSuchPolicy"), ("iam", "create-user", "bad name!")):
        proc = rehost_cli(*args, data_dir=data_dir, env=env, check=False)
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr and proc.stderr.strip(), (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)


def _aws(api: Api, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config"
    config.write_text("[default]\nregion = us-east-1\n")
    credentials = tmp_path / "credentials"
    credentials.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REHOST_"))}
    env.update(AWS_ACCESS_KEY_ID=api.key[0], AWS_SECRET_ACCESS_KEY=api.key[1], AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=str(credentials))
    return subprocess.run([str(AWS), "mgn", *args, "--endpoint-url", api.server.endpoint, "--output", "json"],
                          capture_output=True, text=True, env=env, timeout=120)


def test_aws_cli_unchanged(api: Api, tmp_path: Path) -> None:
    sid = api.ready_server(tags={"via": "aws-cli"})
    proc = _aws(api, tmp_path, "describe-source-servers", "--filters", json.dumps({"sourceServerIDs": [sid]}))
    assert proc.returncode == 0, proc.stderr
    items: list[dict[str, Any]] = json.loads(proc.stdout)["items"]
    assert [s["sourceServerID"] for s in items] == [sid]
    assert items[0]["lifeCycle"]["state"] == "READY_FOR_TEST" and items[0]["tags"] == {"via": "aws-cli"}

    proc = _aws(api, tmp_path, "update-launch-configuration", "--source-server-id", sid, "--name", "from-cli",
                "--launch-disposition", "STOPPED")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["name"] == "from-cli"
    assert api.mgn.get_launch_configuration(sourceServerID=sid)["launchDisposition"] == "STOPPED"

    proc = _aws(api, tmp_path, "get-launch-configuration", "--source-server-id", "s-00000000000000000")
    assert proc.returncode != 0 and "ResourceNotFoundException" in proc.stderr
