"""Hooks the `rehost snapshot` CLI calls for what needs the control plane."""

from __future__ import annotations

import os
from pathlib import Path


def request_snapshot(data_dir: Path, source_server_id: str, sync: bool, timeout: float = 600.0) -> str:
    """Queue a SNAPSHOT (or SYNC_SNAPSHOT) command for the server's agent through the control plane's
    database, wait for the agent's result, and return the new snapshot's ID.

    The command goes through the same table the running `rehost server` hands to agents, so this works
    from any shell on the control-plane host while the agent is connected.
    """
    from rehost.api.agent.service import AgentService
    from rehost.api.mgn.service import Account, MgnService
    from rehost.config import load_settings
    from rehost.controlplane import account_id_for
    from rehost.db import repo
    from rehost.db.store import Store
    from rehost.replication.control import AgentSnapshotProvider

    settings = load_settings(data_dir=data_dir, database_url=os.environ.get("REHOST_DATABASE_URL"))
    store = Store(settings.db_url)
    try:
        with store.read() as conn:
            repo.load_server(conn, source_server_id)  # NotFound with a clear message
        mgn = MgnService(store, settings, Account(account_id_for(settings.data_dir), settings.region))
        provider = AgentSnapshotProvider(AgentService(mgn), settings.data_dir)
        return provider.take_snapshot(source_server_id, timeout, sync=sync).snapshot_id
    finally:
        store.close()
