"""Shared by the security tests: a real, initialised `rehost server` with the admin's MGN client and an
agent client that stores the snapshots it reports in the server's chunk store."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from api.agentapi import AgentClient
from helpers import RunningServer, free_port


@contextmanager
def served(*extra_args: str, env: dict[str, str] | None = None) -> Iterator[tuple[RunningServer, Any, AgentClient]]:
    base = Path(tempfile.mkdtemp(prefix="rehost-security-"))
    server = RunningServer(base / "data", free_port(), extra_args=extra_args, env=env or {}).start()
    try:
        key = server.access_key()
        mgn = server.client(key)
        mgn.initialize_service()
        yield server, mgn, AgentClient(server.endpoint, *key, data_dir=server.data_dir)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
