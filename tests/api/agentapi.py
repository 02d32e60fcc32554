"""A small SigV4-signing client for the agent API (``POST /agent/<Action>``, docs/contracts.md).

Tests use it to play the replication agent: register source servers and report replication progress, so
the public MGN API can be driven through the whole lifecycle without a real agent.
"""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_MAC = itertools.count(1)


def store_snapshot(data_dir: Path | None, server_id: str, when: str) -> str:
    """Take a snapshot of a 1 MiB disk of zeros (/dev/sda) for ``server_id`` in ``data_dir``'s chunk store,
    dated ``when``; returns its ID."""
    from rehost import ids
    from rehost.chunkstore.snapshots import SnapshotStore, VolumeSource

    assert data_dir is not None, "give the AgentClient the server's data_dir to report a stored snapshot"
    disk = data_dir.parent / f"zeros-{server_id}.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    with SnapshotStore.open(data_dir) as store:
        snap = store.create(server_id, {"/dev/sda": VolumeSource(disk, 1 << 20, None)}, ids.parse_iso(when))
    disk.unlink()
    return str(snap.snapshot_id)


def send(endpoint: str, method: str, path: str, body: bytes, access_key: str, secret_key: str, *,
         region: str = "us-east-1", service: str = "mgn", session_token: str | None = None,
         signed_at: datetime | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One SigV4-signed HTTP request (as botocore signs), sent as is; returns status, headers (lower-case), body.

    `signed_at` signs with another clock than now, to present stale or future dates.
    """
    url = endpoint + path
    request = AWSRequest(method=method, url=url, data=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
    auth = SigV4Auth(Credentials(access_key, secret_key, session_token), service, region)
    if signed_at is None:
        auth.add_auth(request)
    else:
        real_clock = botocore.auth.get_current_datetime  # type: ignore[attr-defined]
        botocore.auth.get_current_datetime = lambda: signed_at.replace(tzinfo=None)  # type: ignore[attr-defined]
        try:
            auth.add_auth(request)
        finally:
            botocore.auth.get_current_datetime = real_clock  # type: ignore[attr-defined]
    prepared = urllib.request.Request(url, data=body or None, method=method, headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=60) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _message(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("message", ""))
    except (ValueError, AttributeError):
        return payload.decode(errors="replace")


class AgentApiError(Exception):
    """The agent API answered an error: its HTTP status, ``x-amzn-ErrorType`` and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class AgentClient:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    session_token: str | None = None
    # the server's data directory: report_synced stores the snapshot it reports in its chunk store, since
    # the control plane records only snapshots the store holds
    data_dir: Path | None = None

    def call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """Sign and send one agent call; return its JSON answer or raise AgentApiError."""
        status, headers, payload = send(self.endpoint, "POST", f"/agent/{action}", json.dumps(body).encode(),
                                        self.access_key, self.secret_key, region=self.region,
                                        session_token=self.session_token)
        if status >= 300:
            raise AgentApiError(status, headers.get("x-amzn-errortype", ""), _message(payload))
        return dict(json.loads(payload or b"{}"))

    # -- the calls a real agent makes, with plausible bodies --------------------------------------------

    def register(self, hostname: str | None = None, *, mac: str | None = None, tags: dict[str, str] | None = None,
                 no_replication: bool = False, user_provided_id: str | None = None) -> dict[str, Any]:
        n = next(_MAC)
        mac = mac or f"52:54:00:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"
        hostname = hostname or f"host-{n}"
        hints: dict[str, Any] = {"hostname": hostname, "fqdn": f"{hostname}.example.test", "macAddresses": [mac]}
        if user_provided_id:
            hints["userProvidedID"] = user_provided_id
        body: dict[str, Any] = {
            "hints": hints,
            "sourceProperties": {
                "ramBytes": 2 * 1024**3,
                "os": {"fullString": "Debian GNU/Linux 12 (bookworm)"},
                "cpus": [{"cores": 2, "modelName": "QEMU Virtual CPU"}],
                "networkInterfaces": [{"macAddress": mac, "ips": ["10.0.0.5"], "isPrimary": True}],
            },
            "devices": [{"deviceName": "/dev/sda", "bytes": 8 * 1024**3, "isBoot": True}],
            "noReplication": no_replication,
        }
        if tags:
            body["tags"] = tags
        return self.call("RegisterAgentForMgn", body)

    def report_synced(self, server_id: str, *, snapshot_id: str | None = None,
                      when: str = "2024-01-01T00:00:00.000000Z") -> dict[str, Any]:
        """Report the initial sync complete with a snapshot: the server becomes READY_FOR_TEST. Unless
        ``snapshot_id`` names one, the snapshot is taken for real, at ``when``, in the server's chunk store
        (of a 1 MiB disk of zeros, which no conversion accepts)."""
        if snapshot_id is None:
            snapshot_id = store_snapshot(self.data_dir, server_id, when)
        disk = {"deviceName": "/dev/sda", "totalStorageBytes": 8 * 1024**3, "replicatedStorageBytes": 8 * 1024**3,
                "rescannedStorageBytes": 0, "backloggedStorageBytes": 0}
        return self.call("UpdateAgentReplicationInfoForMgn", {
            "sourceServerID": server_id, "dataReplicationState": "CONTINUOUS", "replicatedDisks": [disk],
            "initialSyncComplete": True, "lagSeconds": 1.0,
            "lastSnapshot": {"snapshotID": snapshot_id, "dateTime": when},
        })
