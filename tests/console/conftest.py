"""A real `rehost server` for the console's tests, with users of several rights and a registered server."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.agentapi import AgentClient
from helpers import RunningServer, cli_json, free_port, rehost_cli

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"


@dataclass
class ConsoleEnv:
    server: RunningServer
    admin_key: tuple[str, str]
    readonly_key: tuple[str, str]
    agent: AgentClient

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def user_with_policy(self, name: str, policy: str) -> tuple[str, str]:
        rehost_cli("iam", "create-user", name, data_dir=self.server.data_dir)
        rehost_cli("iam", "attach-user-policy", name, policy, data_dir=self.server.data_dir)
        return self.server.access_key(name)

    def inline_user(self, name: str, document: dict[str, object]) -> tuple[str, str]:
        rehost_cli("iam", "create-user", name, data_dir=self.server.data_dir)
        doc = self.server.data_dir.parent / f"{name}-policy.json"
        doc.write_text(json.dumps(document))
        rehost_cli("iam", "put-user-policy", name, "inline", "--policy-document", str(doc), data_dir=self.server.data_dir)
        out = cli_json("iam", "create-access-key", name, data_dir=self.server.data_dir)
        return out["AccessKey"]["AccessKeyId"], out["AccessKey"]["SecretAccessKey"]


@pytest.fixture(scope="module")
def console_env() -> Iterator[ConsoleEnv]:
    base = Path(tempfile.mkdtemp(prefix="rehost-console-"))
    server = RunningServer(base / "data", free_port()).start()
    try:
        admin = server.access_key()
        env = ConsoleEnv(server, admin, ("", ""), AgentClient(server.endpoint, *admin, data_dir=server.data_dir))
        env.readonly_key = env.user_with_policy("viewer", "AWSApplicationMigrationReadOnlyAccess")
        yield env
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
