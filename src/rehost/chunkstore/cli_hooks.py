"""Hooks the `rehost snapshot` CLI calls for what needs the control plane (filled in by its owner)."""

from __future__ import annotations

from pathlib import Path

from rehost.errors import RehostError


def request_snapshot(data_dir: Path, source_server_id: str, sync: bool) -> str:
    """Ask the running rehost server to queue a SNAPSHOT (or SYNC_SNAPSHOT) command for the server's
    agent, wait for the agent's result, and return the new snapshot's ID."""
    raise RehostError(
        "`rehost snapshot create` requires a running rehost server (control plane), "
        "which this build cannot reach yet"
    )
