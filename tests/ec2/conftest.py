"""A real `rehost server` with one registered source server, for the EC2 subset's tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.agentapi import AgentClient
from helpers import RunningServer, free_port


@dataclass
class Ec2Env:
    server: RunningServer
    ec2: Any
    mgn: Any
    agent: AgentClient
    key: tuple[str, str]

    def new_source_server(self, hostname: str) -> str:
        return str(self.agent.register(hostname)["sourceServerID"])


@pytest.fixture(scope="module")
def env() -> Iterator[Ec2Env]:
    base = Path(tempfile.mkdtemp(prefix="rehost-ec2-"))
    server = RunningServer(base / "data", free_port()).start()
    try:
        key = server.access_key()
        mgn = server.client(key)
        mgn.initialize_service()
        agent = AgentClient(server.endpoint, *key)
        yield Ec2Env(server, server.client(key, service="ec2"), mgn, agent, key)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
